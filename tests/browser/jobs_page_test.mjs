// The web page of `ifw serve` in headless Chromium (Debian's), driven by playwright-core, against a
// real server on loopback (started by tests/integration/web_page_test.cpp):
//
//   node jobs_page_test.mjs --url http://127.0.0.1:PORT --out DIR [--api-key KEY]
//        [--chromium PATH] [--timeout SECONDS (for all files to be done; default 300)] FILE...
//
// Drops the files on the page as a person would, waits for every row to be done, checks the rows,
// downloads one SRT through the row's button and the ZIP of all files through "Download all",
// checks their contents, reloads (the list must come back), opens a preview, checks that rows
// keep their size while progress moves and that a 360 px wide phone needs no sideways scrolling,
// and saves screenshots in DIR. Exits 0 when every check passes, 1 with the reason otherwise.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const FORMAT_EXTENSIONS = ["txt", "srt", "vtt", "tsv", "json", "verbose.json"];
const MIME = {
  ".wav": "audio/wav",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".flac": "audio/flac",
  ".m4a": "audio/mp4",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mkv": "video/x-matroska",
};

function parseArgs(argv) {
  const args = { files: [], chromium: "/usr/bin/chromium", apiKey: "", timeout: 300 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--url") args.url = argv[++i];
    else if (a === "--out") args.out = argv[++i];
    else if (a === "--api-key") args.apiKey = argv[++i];
    else if (a === "--chromium") args.chromium = argv[++i];
    else if (a === "--timeout") args.timeout = Number(argv[++i]);
    else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else args.files.push(a);
  }
  if (!args.url || !args.out || args.files.length === 0) {
    throw new Error(
      "usage: jobs_page_test.mjs --url URL --out DIR [--api-key KEY] [--chromium PATH] " +
        "[--timeout SECONDS] FILE...",
    );
  }
  return args;
}

const started = Date.now();
const log = (text) =>
  console.error(`jobs page [${((Date.now() - started) / 1000).toFixed(1)} s]: ${text}`);

class CheckFailed extends Error {}
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

const baseName = (name) => name.replace(/\.[^.]*$/, "");

// Parses SRT text; throws CheckFailed naming what is wrong. Returns the cues.
function parseSrt(text, what) {
  const toMs = (h, m, s, ms) => ((+h * 60 + +m) * 60 + +s) * 1000 + +ms;
  const blocks = text
    .replace(/\r\n/g, "\n")
    .trim()
    .split(/\n\s*\n/)
    .filter((b) => b.trim() !== "");
  check(blocks.length > 0, `${what}: no cues in ${JSON.stringify(text.slice(0, 200))}`);
  const cues = [];
  let previousEnd = 0;
  blocks.forEach((block, i) => {
    const lines = block.split("\n");
    check(
      lines[0].trim() === String(i + 1),
      `${what}: cue ${i + 1} is numbered ${JSON.stringify(lines[0])}`,
    );
    const m = /^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$/.exec(
      (lines[1] || "").trim(),
    );
    check(
      m,
      `${what}: cue ${i + 1} has no "HH:MM:SS,mmm --> HH:MM:SS,mmm" line: ` +
        JSON.stringify(lines[1]),
    );
    const start = toMs(m[1], m[2], m[3], m[4]);
    const end = toMs(m[5], m[6], m[7], m[8]);
    check(end > start, `${what}: cue ${i + 1} ends (${lines[1]}) before it starts`);
    check(start >= previousEnd, `${what}: cue ${i + 1} starts before cue ${i} ends`);
    previousEnd = end;
    cues.push({ start, end, text: lines.slice(2).join("\n") });
  });
  return cues;
}

// name, state, job id, progress, duration of every row.
function rowsOf(page) {
  return page.$$eval("#jobs > li", (rows) =>
    rows.map((r) => ({
      id: r.dataset.jobId,
      state: r.dataset.state,
      name: r.querySelector(".name")?.textContent ?? "",
      progress: r.querySelector("[role=progressbar]")?.getAttribute("aria-valuenow") ?? "",
      duration: r.querySelector(".duration")?.textContent ?? "",
      error: r.querySelector(".error")?.hidden
        ? ""
        : (r.querySelector(".error")?.textContent ?? ""),
    })),
  );
}

// Waits until there are `count` rows, all done; fails at once when one fails.
async function waitAllDone(page, count, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    const rows = await rowsOf(page);
    const summary = rows.map((r) => `${r.name}=${r.state}(${r.progress} %)`).join(", ");
    if (summary !== last) log(summary || "no rows yet");
    last = summary;
    const failed = rows.find((r) => r.state === "failed" || r.state === "cancelled");
    check(
      !failed,
      failed && `${failed.name} ended ${failed.state}: ${failed.error || "(no message)"}`,
    );
    if (rows.length === count && rows.every((r) => r.state === "done")) return rows;
    check(
      Date.now() < deadline,
      `not all ${count} rows done after ${timeoutMs / 1000} s: ${summary}`,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// Clicks `selector` and saves the download it starts as `out/<suggested name>`.
async function downloadVia(page, selector, outDir) {
  const [download] = await Promise.all([
    page.waitForEvent("download", { timeout: 60000 }),
    page.click(selector),
  ]);
  const failure = await download.failure();
  check(!failure, `the download from ${selector} failed: ${failure}`);
  const target = path.join(outDir, download.suggestedFilename());
  await download.saveAs(target);
  return target;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(args.out, { recursive: true });
  const files = args.files.map((f) => ({
    path: f,
    name: path.basename(f),
    type: MIME[path.extname(f).toLowerCase()] || "application/octet-stream",
    base64: fs.readFileSync(f).toString("base64"),
  }));

  const browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    // Chromium's sandbox cannot run as root (CI runs the tests as root).
    args: [
      ...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []),
      "--disable-dev-shm-usage",
    ],
  });
  try {
    const context = await browser.newContext({
      acceptDownloads: true,
      viewport: { width: 1100, height: 800 },
    });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (err) => pageErrors.push(`uncaught: ${err.message}`));
    page.on("crash", () => log("the page crashed"));
    browser.on("disconnected", () => log("chromium exited"));
    page.on("console", (msg) => {
      // Failed requests (the first 401, a favicon) are expected; script errors and refusals by the
      // Content-Security-Policy are not.
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource"))
        pageErrors.push(msg.text());
    });

    await page.goto(args.url, { waitUntil: "load" });
    await page.waitForSelector("#drop-zone");
    if (args.apiKey) {
      // The server has a key: the page must ask for it (its first /v1 request answered 401).
      await page.waitForSelector("#key-form:not([hidden])", { timeout: 15000 });
      await page.fill("#key-input", args.apiKey);
      await page.click("#key-form button[type=submit]");
      await page.waitForSelector("#key-form[hidden]", { state: "attached", timeout: 15000 });
      log("API key entered in the page's form");
    }
    // Offer every format, so that each row has every download button.
    for (const box of await page.$$("#opt-formats input[type=checkbox]")) await box.check();
    await page.waitForFunction(() => document.querySelector("#opt-model option") !== null);

    // Row heights and states at every progress update, to find layout jumps.
    await page.evaluate(() => {
      window.__rowHeights = [];
      new MutationObserver((mutations) => {
        for (const m of mutations) {
          const row = m.target.closest && m.target.closest("#jobs > li");
          if (!row) continue;
          window.__rowHeights.push({
            name: row.querySelector(".name").textContent,
            state: row.dataset.state,
            height: row.getBoundingClientRect().height,
            width: row.querySelector(".bar").getBoundingClientRect().width,
          });
        }
      }).observe(document.getElementById("jobs"), {
        subtree: true,
        attributes: true,
        attributeFilter: ["aria-valuenow"],
      });
    });

    // A real drop: File objects in a DataTransfer, dragenter/dragover/drop on the drop zone.
    await page.evaluate((list) => {
      const dt = new DataTransfer();
      for (const f of list) {
        const bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
        dt.items.add(new File([bytes], f.name, { type: f.type }));
      }
      const zone = document.getElementById("drop-zone");
      for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(
          new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }),
        );
      }
    }, files);
    log(`dropped ${files.map((f) => f.name).join(", ")}`);

    const t0 = Date.now();
    const rows = await waitAllDone(page, files.length, args.timeout * 1000);
    log(`all ${files.length} done in ${((Date.now() - t0) / 1000).toFixed(1)} s after the drop`);
    for (const f of files) {
      const row = rows.find((r) => r.name === f.name);
      check(row, `no row named ${f.name} (rows: ${rows.map((r) => r.name).join(", ")})`);
      check(/^job_/.test(row.id), `${f.name}: row has no job id (${JSON.stringify(row.id)})`);
      check(row.progress === "100", `${f.name}: progress ${row.progress} %, not full`);
      const m = /^(?:(\d+):)?(\d+):(\d\d)$/.exec(row.duration);
      check(
        m && +(m[1] || 0) * 3600 + +m[2] * 60 + +m[3] > 0,
        `${f.name}: no duration shown (${JSON.stringify(row.duration)})`,
      );
      check(row.error === "", `${f.name}: error shown on a done row: ${row.error}`);
    }
    log(`rows: ${rows.map((r) => `${r.name} ${r.duration}`).join(", ")}`);

    // No layout jump: while a row is queued or running, progress updates never change its size.
    const heights = await page.evaluate(() => window.__rowHeights);
    for (const f of files) {
      const seen = heights.filter(
        (h) => h.name === f.name && (h.state === "queued" || h.state === "running"),
      );
      const sizes = new Set(seen.map((h) => `${h.height}x${h.width}`));
      check(
        sizes.size <= 1,
        `${f.name}: the row changed size while its progress moved: ${[...sizes].join(", ")}`,
      );
    }
    log(`row sizes steady over ${heights.length} progress updates`);

    // One SRT through the row's own download button.
    const first = files[0];
    const srtPath = await downloadVia(
      page,
      `#jobs > li:has(.name:text-is("${first.name}")) button.download[data-format="srt"]`,
      args.out,
    );
    check(
      path.basename(srtPath) === `${baseName(first.name)}.srt`,
      `SRT saved as ${path.basename(srtPath)}`,
    );
    const cues = parseSrt(fs.readFileSync(srtPath, "utf8"), path.basename(srtPath));
    log(`${path.basename(srtPath)}: ${cues.length} cues, parseable`);

    // The ZIP of all three: every format of each, in a folder per file; its subtitles parse too.
    const zipPath = await downloadVia(page, "#download-all", args.out);
    const entries = execFileSync("unzip", ["-Z1", zipPath], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean);
    for (const f of files) {
      const b = baseName(f.name);
      for (const ext of FORMAT_EXTENSIONS) {
        check(
          entries.includes(`${b}/${b}.${ext}`),
          `${path.basename(zipPath)} has no ${b}/${b}.${ext}; it holds: ${entries.join(", ")}`,
        );
      }
      const srt = execFileSync("unzip", ["-p", zipPath, `${b}/${b}.srt`], { encoding: "utf8" });
      parseSrt(srt, `${path.basename(zipPath)}:${b}/${b}.srt`);
    }
    log(`${path.basename(zipPath)}: ${entries.length} entries, every format of every file`);

    // The list survives a reload.
    await page.reload({ waitUntil: "load" });
    const reloaded = await waitAllDone(page, files.length, 30000);
    for (const f of files)
      check(
        reloaded.some((r) => r.name === f.name),
        `${f.name} is gone after a reload`,
      );
    const retry = await page.$eval(
      `#jobs > li:has(.name:text-is("${first.name}")) .retry-button`,
      (b) => b.hidden,
    );
    check(retry, "a done row offers Retry");
    log("after a reload: the same rows, done");

    // Usable without a mouse or sight: every control labelled, every button named, and the live
    // region that announces state changes present.
    const unnamed = await page.evaluate(() => [
      ...[...document.querySelectorAll("select, input:not([type=file])")]
        .filter((el) => el.labels.length === 0)
        .map((el) => `${el.tagName.toLowerCase()}#${el.id}`),
      ...[...document.querySelectorAll("button")]
        .filter((b) => (b.getAttribute("aria-label") || b.textContent).trim() === "")
        .map((b) => `button.${b.className}`),
      ...(document.querySelector("[aria-live]") ? [] : ["no aria-live region"]),
    ]);
    check(unnamed.length === 0, `controls without a label or name: ${unnamed.join(", ")}`);
    // "Choose files" is reached with the Tab key and shows where the focus is.
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    let focused = "";
    for (let i = 0; i < 10 && focused !== "choose-files"; i++) {
      await page.keyboard.press("Tab");
      focused = await page.evaluate(() => document.activeElement.id);
    }
    check(focused === "choose-files", "Tab does not reach the Choose files button");
    const outline = await page.$eval("#choose-files", (b) => getComputedStyle(b).outlineStyle);
    check(outline === "solid", `the focused Choose files button has outline ${outline}`);

    // Preview: "[mm:ss] text" lines from the result.
    await page.click(`#jobs > li:has(.name:text-is("${first.name}")) .preview-button`);
    await page.waitForSelector(
      `#jobs > li:has(.name:text-is("${first.name}")) .preview-lines li .time`,
      { timeout: 15000 },
    );
    const lines = await page.$$eval(
      `#jobs > li:has(.name:text-is("${first.name}")) .preview-lines li`,
      (l) => l.map((x) => x.textContent),
    );
    check(
      lines.every((l) => /^\[\d{2,}:\d{2}(:\d{2})?\]/.test(l)),
      `preview lines without a time: ${JSON.stringify(lines.slice(0, 3))}`,
    );
    log(`preview: ${lines.length} lines`);

    const shot = path.join(args.out, "jobs-page.png");
    await page.screenshot({ path: shot, fullPage: true });
    log(`screenshot: ${shot}`);

    // A phone: 360 px wide, nothing to scroll sideways.
    await page.setViewportSize({ width: 360, height: 740 });
    await page.waitForTimeout(100);
    const overflow = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
      wide: [...document.querySelectorAll("body *")]
        .filter(
          (el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5,
        )
        .slice(0, 5)
        .map((el) => `${el.tagName.toLowerCase()}.${el.className}`),
    }));
    check(
      overflow.scroll <= overflow.client,
      `at 360 px the page scrolls sideways (${overflow.scroll} > ${overflow.client}): ` +
        overflow.wide.join(", "),
    );
    const phoneShot = path.join(args.out, "jobs-page-phone.png");
    await page.screenshot({ path: phoneShot, fullPage: true });
    log(`no horizontal scroll at 360 px; screenshot: ${phoneShot}`);

    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(" | ")}`);
    log("all checks passed");
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(
      `jobs page: FAILED: ${err instanceof CheckFailed ? err.message : err.stack || err}`,
    );
    process.exit(1);
  },
);
