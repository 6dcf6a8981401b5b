// The page of `ifw serve`: files dropped here become jobs (POST /v1/jobs), each followed through
// its event stream, and their transcripts are previewed and downloaded from the server. The list
// is the server's (GET /v1/jobs), so it survives a reload. The API is in docs/JOBS.md. No
// dependencies, no build step.

const FORMATS = [
  { id: "txt", label: "TXT" },
  { id: "srt", label: "SRT" },
  { id: "vtt", label: "VTT" },
  { id: "tsv", label: "TSV" },
  { id: "json", label: "JSON" },
  { id: "verbose_json", label: "Verbose JSON" },
];
const DEFAULT_FORMATS = ["txt", "srt", "vtt"];

// Whisper's languages (ISO 639-1 codes, as `language` takes them).
// prettier-ignore
const LANGUAGES = [
  ["af", "Afrikaans"], ["sq", "Albanian"], ["am", "Amharic"], ["ar", "Arabic"], ["hy", "Armenian"],
  ["as", "Assamese"], ["az", "Azerbaijani"], ["ba", "Bashkir"], ["eu", "Basque"],
  ["be", "Belarusian"], ["bn", "Bengali"], ["bs", "Bosnian"], ["br", "Breton"],
  ["bg", "Bulgarian"], ["my", "Burmese"], ["yue", "Cantonese"], ["ca", "Catalan"],
  ["zh", "Chinese"], ["hr", "Croatian"], ["cs", "Czech"], ["da", "Danish"], ["nl", "Dutch"],
  ["en", "English"], ["et", "Estonian"], ["fo", "Faroese"], ["fi", "Finnish"], ["fr", "French"],
  ["gl", "Galician"], ["ka", "Georgian"], ["de", "German"], ["el", "Greek"], ["gu", "Gujarati"],
  ["ht", "Haitian Creole"], ["ha", "Hausa"], ["haw", "Hawaiian"], ["he", "Hebrew"],
  ["hi", "Hindi"], ["hu", "Hungarian"], ["is", "Icelandic"], ["id", "Indonesian"],
  ["it", "Italian"], ["ja", "Japanese"], ["jw", "Javanese"], ["kn", "Kannada"], ["kk", "Kazakh"],
  ["km", "Khmer"], ["ko", "Korean"], ["lo", "Lao"], ["la", "Latin"], ["lv", "Latvian"],
  ["ln", "Lingala"], ["lt", "Lithuanian"], ["lb", "Luxembourgish"], ["mk", "Macedonian"],
  ["mg", "Malagasy"], ["ms", "Malay"], ["ml", "Malayalam"], ["mt", "Maltese"], ["mi", "Maori"],
  ["mr", "Marathi"], ["mn", "Mongolian"], ["ne", "Nepali"], ["no", "Norwegian"],
  ["nn", "Norwegian Nynorsk"], ["oc", "Occitan"], ["ps", "Pashto"], ["fa", "Persian"],
  ["pl", "Polish"], ["pt", "Portuguese"], ["pa", "Punjabi"], ["ro", "Romanian"], ["ru", "Russian"],
  ["sa", "Sanskrit"], ["sr", "Serbian"], ["sn", "Shona"], ["sd", "Sindhi"], ["si", "Sinhala"],
  ["sk", "Slovak"], ["sl", "Slovenian"], ["so", "Somali"], ["es", "Spanish"], ["su", "Sundanese"],
  ["sw", "Swahili"], ["sv", "Swedish"], ["tl", "Tagalog"], ["tg", "Tajik"], ["ta", "Tamil"],
  ["tt", "Tatar"], ["te", "Telugu"], ["th", "Thai"], ["bo", "Tibetan"], ["tr", "Turkish"],
  ["tk", "Turkmen"], ["uk", "Ukrainian"], ["ur", "Urdu"], ["uz", "Uzbek"], ["vi", "Vietnamese"],
  ["cy", "Welsh"], ["yi", "Yiddish"], ["yo", "Yoruba"],
];

const FINISHED = new Set(["done", "failed", "cancelled"]);
const STATE_LABELS = {
  pending: "waiting",
  uploading: "uploading",
  queued: "queued",
  running: "running",
  done: "done",
  failed: "failed",
  cancelled: "cancelled",
};
// A browser opens about six connections to one server: uploads and event streams must leave
// some for everything else. Unfinished jobs beyond MAX_STREAMS are polled instead.
const MAX_UPLOADS = 1; // one after another: the server lists jobs in the order they arrive
const MAX_STREAMS = 3;
const POLL_MS = 2000;
// The server sends a keep-alive every 15 s: a stream silent this long is dead.
const STALL_MS = 45000;
const NO_FILE_TITLE =
  "This page no longer holds the file (it was reloaded): drop it again to retry";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- settings kept in this browser --------------------------------------------------------------

function load(name, fallback) {
  try {
    const v = localStorage.getItem("ifw." + name);
    return v === null ? fallback : JSON.parse(v);
  } catch {
    return fallback;
  }
}
function save(name, value) {
  try {
    localStorage.setItem("ifw." + name, JSON.stringify(value));
  } catch {
    // storage full or disabled: the setting lasts for this visit only
  }
}

// ---- the API key and requests -------------------------------------------------------------------

let apiKey = load("apiKey", "");
let keyRequest = null; // {promise, resolve} while the key form is shown

// Shows the key form; resolves once a key has been entered.
function needKey(rejected) {
  if (!keyRequest) {
    let resolve;
    const promise = new Promise((r) => (resolve = r));
    keyRequest = { promise, resolve };
    $("key-message").textContent = rejected
      ? "The server did not accept this key. Enter the key it was started with (IFW_API_KEY)."
      : "This server needs an API key (the IFW_API_KEY it was started with).";
    $("key-form").hidden = false;
    $("key-input").focus();
  }
  return keyRequest.promise;
}

function authHeaders(headers = {}) {
  return apiKey ? { ...headers, Authorization: "Bearer " + apiKey } : headers;
}

// fetch() with the key; a 401 asks for the key and tries again with it.
async function api(path, options = {}) {
  for (;;) {
    const sent = apiKey;
    const res = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (res.status !== 401) return res;
    if (apiKey === sent) await needKey(sent !== "");
  }
}

// The message of an error answer (OpenAI's shape), or a plain description.
async function errorText(res) {
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch {
    // not JSON
  }
  return `The server answered ${res.status} ${res.statusText}`.trim();
}

// "attachment; filename="talk.srt"" -> "talk.srt".
function fileNameOf(res, fallback) {
  const header = res.headers.get("Content-Disposition") || "";
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch {
      // fall through to the plain name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header) || /filename\s*=\s*([^;]+)/i.exec(header);
  return plain ? plain[1].trim() : fallback;
}

// Downloads travel through fetch() (for the key): the Blob is handed to a temporary link.
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ---- formatting ---------------------------------------------------------------------------------

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${String(m).padStart(2, "0")}:${ss}`;
}

function speedText(factor) {
  if (typeof factor !== "number" || !isFinite(factor) || factor <= 0) return "";
  return (factor < 10 ? factor.toFixed(1) : String(Math.round(factor))) + "×";
}

function baseName(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

// ---- options ------------------------------------------------------------------------------------

const optionIds = {
  model: "opt-model",
  language: "opt-language",
  task: "opt-task",
  timestamps: "opt-timestamps",
};
let chosenFormats = load("formats", DEFAULT_FORMATS).filter((f) => FORMATS.some((x) => x.id === f));

function setupOptions() {
  const language = $("opt-language");
  for (const [code, name] of LANGUAGES) language.append(new Option(name, code));
  const saved = load("options", {});
  for (const [key, id] of Object.entries(optionIds)) {
    const select = $(id);
    if (saved[key] && [...select.options].some((o) => o.value === saved[key]))
      select.value = saved[key];
    select.addEventListener("change", saveOptions);
  }
  const list = $("opt-formats");
  for (const f of FORMATS) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = f.id;
    box.checked = chosenFormats.includes(f.id);
    box.addEventListener("change", () => {
      chosenFormats = [...list.querySelectorAll("input:checked")].map((b) => b.value);
      save("formats", chosenFormats);
      for (const e of entries) render(e);
    });
    label.append(box, " " + f.label);
    list.append(label);
  }
}

function saveOptions() {
  const values = {};
  for (const [key, id] of Object.entries(optionIds)) values[key] = $(id).value;
  save("options", values);
}

function currentOptions() {
  const o = {};
  for (const [key, id] of Object.entries(optionIds)) o[key] = $(id).value;
  return o;
}

async function loadModels() {
  const select = $("opt-model");
  try {
    const res = await api("/v1/models");
    if (!res.ok) throw new Error(await errorText(res));
    const ids = (await res.json()).data.map((m) => m.id);
    if (ids.length === 0) return;
    const wanted = load("options", {}).model;
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    select.value = ids.includes(wanted) ? wanted : ids.includes("whisper-1") ? "whisper-1" : ids[0];
  } catch (err) {
    showMessage(
      `The list of models could not be loaded (${err.message}); the server's default is used.`,
    );
  }
}

// ---- the list of files --------------------------------------------------------------------------

// An entry is a row: a local file waiting or uploading, or a server job (with the File when this
// page uploaded it, for retries).
const entries = [];
const byJobId = new Map();
let nextKey = 1;

function showMessage(text) {
  $("list-message").textContent = text;
}

function announce(text) {
  $("announcer").textContent = text;
}

function entryName(e) {
  return (e.job && e.job.file && e.job.file.name) || (e.file && e.file.name) || "(unnamed)";
}

function newEntry({ file = null, job = null, options = null }) {
  const row = $("job-template").content.firstElementChild.cloneNode(true);
  const e = {
    key: nextKey++,
    file,
    job,
    options,
    state: job ? job.status : "pending",
    error: "",
    uploadFraction: 0,
    xhr: null,
    stream: null,
    removed: false,
    liveSegments: [],
    liveIds: new Set(),
    previewOpen: false,
    previewLoaded: false,
    row,
    el: {
      name: row.querySelector(".name"),
      duration: row.querySelector(".duration"),
      state: row.querySelector(".state"),
      bar: row.querySelector(".bar"),
      fill: row.querySelector(".fill"),
      percent: row.querySelector(".percent"),
      speed: row.querySelector(".speed"),
      error: row.querySelector(".error"),
      preview: row.querySelector(".preview"),
      previewLines: row.querySelector(".preview-lines"),
      previewButton: row.querySelector(".preview-button"),
      downloads: row.querySelector(".downloads"),
      cancel: row.querySelector(".cancel-button"),
      retry: row.querySelector(".retry-button"),
      remove: row.querySelector(".remove-button"),
    },
    shownState: null,
    shownFormats: "",
  };
  e.el.previewButton.addEventListener("click", () => togglePreview(e));
  e.el.cancel.addEventListener("click", () => cancel(e));
  e.el.retry.addEventListener("click", () => retry(e));
  e.el.remove.addEventListener("click", () => remove(e));
  entries.push(e);
  if (job) byJobId.set(job.id, e);
  $("jobs").append(row);
  render(e);
  return e;
}

function fractionOf(e) {
  if (e.state === "uploading") return e.uploadFraction;
  if (e.state === "pending") return 0;
  if (e.state === "done") return 1;
  const p = e.job && e.job.progress;
  if (!p || !p.windows_total) return 0;
  return Math.min(1, p.windows_done / p.windows_total);
}

// Brings a row up to date. Progress only touches fixed-size cells: the row never changes size
// while a job runs.
function render(e) {
  const { el, job } = e;
  const row = e.row;
  row.dataset.jobId = job ? job.id : "";
  row.dataset.state = e.state;
  el.name.textContent = entryName(e);
  el.name.title = entryName(e);
  const duration = job && job.file && job.file.duration;
  el.duration.textContent = typeof duration === "number" ? clock(duration) : "–";
  el.state.textContent = STATE_LABELS[e.state] || e.state;

  const f = fractionOf(e);
  el.fill.style.transform = `scaleX(${f})`;
  el.bar.setAttribute("aria-valuenow", String(Math.round(f * 100)));
  el.bar.setAttribute("aria-label", e.state === "uploading" ? "Upload" : "Transcription");
  el.percent.textContent = `${Math.floor(f * 100)} %`;
  el.speed.textContent = job ? speedText(job.realtime_factor) : "";

  const message = e.error || (e.state === "failed" && job && job.error && job.error.message) || "";
  el.error.textContent = message;
  el.error.hidden = message === "";

  const finished = FINISHED.has(e.state);
  const hasResult = Boolean(job && job.has_result);
  el.previewButton.hidden = !(hasResult || e.state === "running");
  el.cancel.hidden = finished;
  el.retry.hidden = !(e.state === "failed" || e.state === "cancelled");
  el.retry.disabled = !e.file;
  el.retry.title = e.file ? "" : NO_FILE_TITLE;
  el.remove.hidden = !finished;
  const formats = hasResult ? chosenFormats.join(",") : "";
  if (formats !== e.shownFormats) {
    e.shownFormats = formats;
    el.downloads.replaceChildren(
      ...FORMATS.filter((x) => hasResult && chosenFormats.includes(x.id)).map((x) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "download";
        b.dataset.format = x.id;
        b.textContent = x.label;
        b.setAttribute("aria-label", `Download ${x.label} of ${entryName(e)}`);
        b.addEventListener("click", () => download(e, x.id, b));
        return b;
      }),
    );
  }
  el.downloads.hidden = formats === "";

  if (e.shownState !== e.state) {
    if (e.shownState !== null) announce(`${entryName(e)}: ${STATE_LABELS[e.state] || e.state}`);
    e.shownState = e.state;
  }
  updateListControls();
}

function updateListControls() {
  const live = entries.filter((e) => !e.removed);
  $("empty").hidden = live.length > 0;
  $("download-all").disabled = !live.some((e) => e.state === "done") || downloadingAll;
}

function updateJob(e, job) {
  if (e.removed) return;
  e.job = job;
  e.state = job.status;
  if (job.status !== "failed") e.error = "";
  render(e);
  if (FINISHED.has(job.status) && e.previewOpen && !e.previewLoaded && job.has_result)
    loadPreview(e);
}

function dropEntry(e) {
  e.removed = true;
  if (e.stream && e.stream.controller) e.stream.controller.abort();
  if (e.xhr) e.xhr.abort();
  const at = entries.indexOf(e);
  if (at >= 0) entries.splice(at, 1);
  if (e.job && byJobId.get(e.job.id) === e) byJobId.delete(e.job.id);
  const next = e.row.nextElementSibling || e.row.previousElementSibling;
  const hadFocus = e.row.contains(document.activeElement);
  e.row.remove();
  if (hadFocus) {
    const target = next && next.querySelector("button:not([hidden]):not(:disabled)");
    (target || $("files-heading")).focus();
  }
  updateListControls();
}

// ---- uploads ------------------------------------------------------------------------------------

const uploadQueue = [];
let uploadsRunning = 0;

function addFiles(files) {
  const options = currentOptions();
  for (const file of files) enqueueUpload(newEntry({ file, options }));
}

function enqueueUpload(e) {
  e.state = "pending";
  e.error = "";
  e.uploadFraction = 0;
  render(e);
  uploadQueue.push(e);
  pumpUploads();
}

function pumpUploads() {
  while (uploadsRunning < MAX_UPLOADS && uploadQueue.length > 0) {
    const e = uploadQueue.shift();
    if (e.removed || e.state !== "pending") continue;
    uploadsRunning++;
    upload(e).finally(() => {
      uploadsRunning--;
      pumpUploads();
    });
  }
}

function formOf(e) {
  const form = new FormData();
  form.append("file", e.file, e.file.name);
  const o = e.options || {};
  if (o.model) form.append("model", o.model);
  if (o.task) form.append("task", o.task);
  if (o.language && o.language !== "auto") form.append("language", o.language);
  if (o.timestamps === "word") form.append("timestamp_granularities[]", "word");
  return form;
}

// One POST through XMLHttpRequest, for its upload progress. Resolves {status, body}; status 0
// when the request could not be made or was aborted.
function post(e, form) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    e.xhr = xhr;
    xhr.open("POST", "/v1/jobs");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable || e.state !== "uploading") return;
      e.uploadFraction = ev.loaded / ev.total;
      render(e);
    });
    const done = () => {
      e.xhr = null;
      resolve({ status: xhr.status, body: xhr.responseText });
    };
    xhr.addEventListener("loadend", done);
    xhr.send(form);
  });
}

async function upload(e) {
  e.state = "uploading";
  render(e);
  for (let attempt = 1; ; attempt++) {
    const sent = apiKey;
    const res = await post(e, formOf(e));
    if (e.removed || e.state !== "uploading") return; // cancelled meanwhile
    if (res.status === 401) {
      if (apiKey === sent) await needKey(sent !== "");
      continue;
    }
    if (res.status === 0 && attempt < 3) {
      // The server refuses a wrong key before reading the body and closes the connection, which
      // the browser may report as a failed request: ask the API (api() asks for a key on 401).
      try {
        await api("/v1/models", { cache: "no-store" });
      } catch {
        // unreachable: reported below
      }
      if (apiKey !== sent) continue;
    }
    if (res.status === 201) {
      let job = null;
      try {
        job = JSON.parse(res.body).data[0];
      } catch {
        // handled below
      }
      if (job && job.id) {
        attachJob(e, job);
        return;
      }
    }
    let message = res.status === 0 ? "The upload failed: the server could not be reached" : "";
    if (!message) {
      try {
        message = JSON.parse(res.body).error.message;
      } catch {
        message = `The server answered ${res.status}`;
      }
    }
    e.state = "failed";
    e.error = message;
    render(e);
    return;
  }
}

function attachJob(e, job) {
  // A poll may have listed the new job before its upload answered: this row takes it over.
  const other = byJobId.get(job.id);
  if (other && other !== e) dropEntry(other);
  byJobId.set(job.id, e);
  e.uploadFraction = 1;
  updateJob(e, job);
  scheduleStreams();
}

// ---- following jobs: event streams, and polling for the rest ------------------------------------

function wantsFollowing(e) {
  return !e.removed && e.job && !FINISHED.has(e.job.status);
}

function scheduleStreams() {
  let free = MAX_STREAMS - entries.filter((e) => e.stream).length;
  const waiting = entries.filter((e) => wantsFollowing(e) && !e.stream);
  // Running jobs first: their progress is what moves.
  waiting.sort(
    (a, b) => (a.job.status === "running" ? 0 : 1) - (b.job.status === "running" ? 0 : 1),
  );
  for (const e of waiting) {
    if (free-- <= 0) break;
    follow(e);
  }
  schedulePoll();
}

// Reads a text/event-stream body, calling onEvent(type, data) per event. EventSource cannot send
// the Authorization header, hence this parser. Aborts the request when it falls silent.
async function readEvents(res, controller, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let type = "";
  let data = [];
  let watchdog = setTimeout(() => controller.abort(), STALL_MS);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => controller.abort(), STALL_MS);
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length > 0) onEvent(type || "message", data.join("\n"));
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
      }
    }
  } finally {
    clearTimeout(watchdog);
  }
}

function onEvent(e, type, data) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return;
  }
  if (type === "segment") {
    addLiveSegment(e, payload);
  } else if (["queued", "progress", "done", "failed", "cancelled"].includes(type)) {
    updateJob(e, payload);
  }
}

// Follows one job's events until it ends, reconnecting with backoff when the stream drops.
async function follow(e) {
  const stream = { controller: null };
  e.stream = stream;
  let failures = 0;
  try {
    while (wantsFollowing(e)) {
      const controller = new AbortController();
      stream.controller = controller;
      let heard = false;
      try {
        const res = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}/events`, {
          signal: controller.signal,
          headers: { Accept: "text/event-stream" },
          cache: "no-store",
        });
        if (res.status === 404) {
          dropEntry(e); // deleted elsewhere
          return;
        }
        if (!res.ok) throw new Error(await errorText(res));
        await readEvents(res, controller, (type, data) => {
          heard = true;
          onEvent(e, type, data);
        });
      } catch {
        // dropped, refused or silent: tried again below while the job is unfinished
      }
      if (!wantsFollowing(e)) break;
      failures = heard ? 1 : failures + 1;
      await sleep(Math.min(30000, 500 * 2 ** Math.min(failures, 6)) * (0.75 + Math.random() / 2));
    }
  } finally {
    if (e.stream === stream) e.stream = null;
    scheduleStreams();
  }
}

let pollTimer = null;

function schedulePoll() {
  if (pollTimer !== null) return;
  if (!entries.some((e) => wantsFollowing(e) && !e.stream)) return;
  pollTimer = setTimeout(async () => {
    try {
      await poll();
    } catch {
      // the server is away: the next poll tries again
    } finally {
      pollTimer = null;
      schedulePoll();
    }
  }, POLL_MS);
}

async function poll() {
  const res = await api("/v1/jobs", { cache: "no-store" });
  if (!res.ok) return;
  const jobs = new Map((await res.json()).data.map((j) => [j.id, j]));
  for (const e of [...entries]) {
    if (!wantsFollowing(e) || e.stream) continue;
    const job = jobs.get(e.job.id);
    if (job) updateJob(e, job);
    else dropEntry(e);
  }
  scheduleStreams();
}

async function loadJobs() {
  try {
    const res = await api("/v1/jobs", { cache: "no-store" });
    if (!res.ok) throw new Error(await errorText(res));
    for (const job of (await res.json()).data) {
      const known = byJobId.get(job.id);
      if (known) updateJob(known, job);
      else newEntry({ job });
    }
  } catch (err) {
    showMessage(`The list of files could not be loaded: ${err.message}`);
  }
  scheduleStreams();
}

// ---- row actions --------------------------------------------------------------------------------

async function cancel(e) {
  if (e.state === "pending" || e.state === "uploading") {
    if (e.xhr) e.xhr.abort();
    e.state = "cancelled";
    e.error = "";
    render(e);
    return;
  }
  if (!e.job) return;
  e.el.cancel.disabled = true;
  try {
    const res = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}`, { method: "DELETE" });
    if (res.ok) {
      const body = await res.json();
      if (body.object === "job") updateJob(e, body);
    } else if (res.status === 404) {
      dropEntry(e);
    } else {
      e.error = `Could not cancel: ${await errorText(res)}`;
      render(e);
    }
  } catch (err) {
    e.error = `Could not cancel: ${err.message}`;
    render(e);
  } finally {
    e.el.cancel.disabled = false;
  }
}

async function retry(e) {
  if (!e.file) return;
  const old = e.job;
  if (old) {
    // The failed or cancelled job goes; its row is reused for the new one.
    byJobId.delete(old.id);
    e.job = null;
    api(`/v1/jobs/${encodeURIComponent(old.id)}`, { method: "DELETE" }).catch(() => {});
  }
  e.liveSegments = [];
  e.liveIds = new Set();
  e.previewLoaded = false;
  enqueueUpload(e);
}

async function remove(e) {
  if (!e.job) {
    dropEntry(e);
    return;
  }
  e.el.remove.disabled = true;
  try {
    const res = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}`, { method: "DELETE" });
    if (res.ok || res.status === 404) {
      dropEntry(e);
      announce(`${entryName(e)} removed`);
      return;
    }
    e.error = `Could not remove: ${await errorText(res)}`;
  } catch (err) {
    e.error = `Could not remove: ${err.message}`;
  }
  e.el.remove.disabled = false;
  render(e);
}

async function download(e, format, button) {
  const label = (FORMATS.find((f) => f.id === format) || {}).label || format;
  button.disabled = true;
  try {
    const res = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}/result?format=${format}`);
    if (!res.ok) throw new Error(await errorText(res));
    const ext = format === "verbose_json" ? "verbose.json" : format;
    saveBlob(await res.blob(), fileNameOf(res, `${baseName(entryName(e))}.${ext}`));
    if (e.error.startsWith("Download")) {
      e.error = "";
      render(e);
    }
  } catch (err) {
    e.error = `Download of ${label} failed: ${err.message}`;
    render(e);
  } finally {
    button.disabled = false;
  }
}

let downloadingAll = false;

async function downloadAll() {
  const ids = entries.filter((e) => e.state === "done").map((e) => e.job.id);
  if (ids.length === 0) return;
  const button = $("download-all");
  downloadingAll = true;
  updateListControls();
  const label = button.textContent;
  button.textContent = "Preparing…";
  showMessage("");
  try {
    const res = await api(`/v1/jobs/archive?ids=${ids.map(encodeURIComponent).join(",")}`);
    if (!res.ok) throw new Error(await errorText(res));
    saveBlob(await res.blob(), fileNameOf(res, "transcripts.zip"));
  } catch (err) {
    showMessage(`The ZIP could not be made: ${err.message}`);
  } finally {
    downloadingAll = false;
    button.textContent = label;
    updateListControls();
  }
}

// ---- preview ------------------------------------------------------------------------------------

function previewLine(start, text) {
  const li = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time num";
  time.textContent = `[${clock(start)}]`;
  li.append(time, " " + String(text).trim());
  return li;
}

function addLiveSegment(e, segment) {
  const key = `${segment.start}/${segment.id}`;
  if (e.liveIds.has(key)) return; // sent again after a reconnection
  e.liveIds.add(key);
  e.liveSegments.push(segment);
  if (e.previewOpen && !e.previewLoaded) {
    const list = e.el.previewLines;
    if (list.dataset.placeholder) list.replaceChildren();
    delete list.dataset.placeholder;
    list.append(previewLine(segment.start, segment.text));
  }
}

function showPreviewText(e, text) {
  const li = document.createElement("li");
  li.className = "placeholder";
  li.textContent = text;
  e.el.previewLines.replaceChildren(li);
  e.el.previewLines.dataset.placeholder = "1";
}

async function loadPreview(e) {
  e.previewLoaded = true;
  showPreviewText(e, "Loading…");
  try {
    const res = await api(`/v1/jobs/${encodeURIComponent(e.job.id)}/result?format=verbose_json`);
    if (!res.ok) throw new Error(await errorText(res));
    const body = await res.json();
    const segments = Array.isArray(body.segments) ? body.segments : [];
    if (segments.length > 0) {
      e.el.previewLines.replaceChildren(...segments.map((s) => previewLine(s.start, s.text)));
      delete e.el.previewLines.dataset.placeholder;
    } else {
      showPreviewText(e, body.text ? String(body.text).trim() : "(no speech)");
    }
  } catch (err) {
    e.previewLoaded = false;
    showPreviewText(e, `The transcript could not be loaded: ${err.message}`);
  }
}

function togglePreview(e) {
  e.previewOpen = !e.previewOpen;
  e.el.previewButton.setAttribute("aria-expanded", String(e.previewOpen));
  e.el.preview.hidden = !e.previewOpen;
  if (!e.previewOpen) return;
  if (e.job && e.job.has_result && FINISHED.has(e.state)) {
    if (!e.previewLoaded) loadPreview(e);
  } else if (e.liveSegments.length > 0) {
    e.el.previewLines.replaceChildren(...e.liveSegments.map((s) => previewLine(s.start, s.text)));
    delete e.el.previewLines.dataset.placeholder;
  } else {
    showPreviewText(e, "The text appears here as it is transcribed.");
  }
}

// ---- adding files -------------------------------------------------------------------------------

function setupDrop() {
  const zone = $("drop-zone");
  const input = $("file-input");
  $("choose-files").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  zone.addEventListener("click", (ev) => {
    if (ev.target === zone || ev.target.parentElement === zone) input.click();
  });
  // Files dropped anywhere on the page are taken (and never opened by the browser instead).
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes("Files");
  window.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth++;
    zone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    addFiles([...ev.dataTransfer.files]);
  });
}

function setupKeyForm() {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    apiKey = key;
    save("apiKey", key);
    $("key-input").value = "";
    $("key-form").hidden = true;
    const waiting = keyRequest;
    keyRequest = null;
    if (waiting) waiting.resolve();
  });
}

// Files not yet uploaded would be lost with the page.
window.addEventListener("beforeunload", (ev) => {
  if (entries.some((e) => e.state === "pending" || e.state === "uploading")) ev.preventDefault();
});

setupOptions();
setupDrop();
setupKeyForm();
$("download-all").addEventListener("click", downloadAll);
loadModels();
loadJobs();
