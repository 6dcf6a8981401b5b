#include "pipeline/transcriber.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <deque>
#include <future>
#include <iterator>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "audio/audio_decoder.hpp"
#include "audio/read_ahead.hpp"
#include "backend/dtype.hpp"
#include "decode/greedy.hpp"
#include "decode/language_detection.hpp"
#include "decode/segments.hpp"
#include "decode/token_timestamps.hpp"
#include "decode/window_stats.hpp"
#include "engine/weight_source.hpp"
#include "model/languages.hpp"
#include "pipeline/batch_size.hpp"
#include "pipeline/window_features.hpp"
#include "pipeline/window_source.hpp"
#include "pipeline/words.hpp"
#include "util/cores.hpp"
#include "util/heap.hpp"

namespace ifw::pipeline {
namespace {

constexpr int kEncoderFrames = kFramesPerWindow / 2;  // 1500 positions, 20 ms each
constexpr int kSamplesPerFrame = kHopLength;          // 10 ms mel frames

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\n") - b + 1);
}

// The encoder states of some windows (repeats allowed), as a batch of their own.
backend::Tensor select_windows(backend::Backend& be, const backend::Tensor& states,
                               std::span<const std::int64_t> items) {
  const std::int64_t width = states.dim(1) * states.dim(2);
  backend::Tensor out = be.empty({static_cast<std::int64_t>(items.size()), width}, states.dtype());
  be.gather_rows(states.reshape({states.dim(0), width}), items, out);
  return out.reshape({static_cast<std::int64_t>(items.size()), states.dim(1), states.dim(2)});
}

}  // namespace

struct Transcriber::Item {
  File* file = nullptr;
  AudioWindow window;      // its samples are dropped once its features are computed
  std::size_t length = 0;  // samples in the window
  std::vector<model::TokenId> prompt;
  FeatureRef features;  // empty until computed (on the run's thread, or ahead of its batch)

  Item() = default;
  Item(File* f, AudioWindow w) : file(f), window(std::move(w)), length(window.samples.size()) {}
};

struct Transcriber::File {
  int index = 0;
  std::string path;
  std::unique_ptr<audio::ReadAhead> audio;  // the file's samples, decoded ahead on threads
  bool duration_is_estimate = false;        // guessed from the bit rate
  std::unique_ptr<WindowSource> source;
  Transcript transcript;
  ResolvedJob job;
  std::vector<model::TokenId> history;  // sequential: earlier text, the next window's prompt
  bool finished = false;
  bool broken = false;  // reading failed: finished with what was done
  int windows_done = 0;
  int in_flight = 0;
  double duration_hint = -1.0;
  std::string error;

  std::shared_ptr<const CancellationToken> cancel;  // the job's own, if any
  std::shared_ptr<const ResumeState> resume;        // windows decoded by an earlier run

  // Windows read ahead of their batch (batched strategy), their features computed, in order.
  std::deque<Item> ahead;
  // The task reading the next batch's windows uses `source` now: nothing else touches it. (It
  // was not exhausted when the task began, and what the task reads will be in `ahead`.)
  bool reading_ahead = false;
  // Opened before its turn (the command line, beside a GPU: so that its windows can be read
  // ahead): batches take none of its windows until the fill would have opened it.
  bool held = false;

  bool cancelled() const { return cancel && cancel->cancelled(); }
  bool source_exhausted() const { return !reading_ahead && source->exhausted(); }
  bool drained() const { return (broken || source_exhausted()) && ahead.empty() && in_flight == 0; }
  int windows_estimate() const {
    const int by_duration =
        duration_hint > 0 ? static_cast<int>(std::ceil(duration_hint / kWindowSeconds)) : 0;
    const int known = windows_done + in_flight + static_cast<int>(ahead.size());
    return std::max({known + (drained() ? 0 : 1), by_duration, windows_done});
  }
  // The next window: the first read ahead, else the source's (none once reading failed).
  std::optional<Item> next_window() {
    if (!ahead.empty()) {
      Item item = std::move(ahead.front());
      ahead.pop_front();
      return item;
    }
    if (broken) return std::nullopt;
    std::optional<AudioWindow> w = source->next();
    if (!w) return std::nullopt;
    return Item(this, std::move(*w));
  }
  // An earlier run of the job decoded this window already.
  bool resumable(const AudioWindow& w) const {
    return resume && resume->windows.contains(w.start_sample);
  }
};

// The next batch's windows, read from their files with their features computed on other threads
// while a batch runs. Until taken, the task uses the sources of `files` and nothing else of them.
struct Transcriber::Ahead {
  struct Reading {
    File* file = nullptr;
    bool held = false;  // joins once the others run out, as the fill opens a file
    // Windows it read ahead before, which a batch takes first: whether each is restored from the
    // job's ResumeState (it then takes no place in the batch).
    std::deque<bool> leftover;
    bool done = false;
    std::string error;  // reading failed
  };
  std::vector<Reading> files;
  std::vector<Item> items;  // in the order the next batch would take them
  std::future<void> task;
  ~Ahead() {
    if (task.valid()) task.wait();  // it reads the files' sources
  }
};

struct Transcriber::Decoded {
  decode::GreedyResult result;
  std::vector<model::TokenId> tokens;  // without the closing end of text
  std::string text;
  double temperature = 0.0;
  double avg_logprob = 0.0;
  double compression_ratio = 0.0;
};

// An event about a file, with its progress as it stands.
ProgressEvent Transcriber::event(ProgressEvent::Kind kind, const File& f) {
  ProgressEvent e;
  e.kind = kind;
  e.file = f.index;
  e.path = f.path;
  e.windows_done = f.windows_done;
  e.windows_total = f.source ? f.windows_estimate() : 0;
  e.audio_total = std::max(f.duration_hint, 0.0);
  e.language = f.transcript.language;
  return e;
}

Transcriber::Transcriber(const model::ModelFolder& folder, const engine::WhisperModel& model,
                         TranscribeOptions options)
    : folder_(folder),
      device_model_(&model),
      model_(&model),
      options_(std::move(options)),
      extractor_(std::make_shared<audio::LogMelSpectrogram>(model.config().num_mel_bins)) {
  const auto check = [](bool ok, const std::string& message) {
    if (!ok) throw Error(ErrorKind::kInvalidArgument, message);
  };
  check(options_.batch_size >= 1 && options_.batch_size <= 256,
        fmt::format("batch size {}: use 1 to 256", options_.batch_size));
  check(options_.max_new_tokens >= 1 &&
            options_.max_new_tokens <= model_->config().max_target_positions,
        fmt::format("max new tokens {}: use 1 to {}", options_.max_new_tokens,
                    model_->config().max_target_positions));
  check(std::isfinite(options_.temperature_increment) && options_.temperature_increment >= 0.0 &&
            options_.temperature_increment <= 1.0,
        fmt::format("temperature increment {}: use 0 to 1", options_.temperature_increment));
  check(options_.best_of >= 1 && options_.best_of <= 16,
        fmt::format("best of {}: use 1 to 16", options_.best_of));
  default_job_ = resolve({options_.task, options_.language, options_.prompt, options_.temperature,
                          options_.word_timings});
  options_.language = default_job_.language;
}

Transcriber::ResolvedJob Transcriber::resolve(const JobOptions& job) const {
  const model::Tokenizer& tok = folder_.tokenizer();
  ResolvedJob r;
  r.task = job.task;
  r.temperature = job.temperature;
  r.word_timings = job.word_timings;
  if (job.task != "transcribe" && job.task != "translate") {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("task \"{}\": use transcribe or translate", job.task));
  }
  if (!tok.multilingual() && job.task == "translate") {
    throw Error(ErrorKind::kInvalidArgument, "this model is English-only: it cannot translate");
  }
  if (job.language) {
    std::string code = lower(strip(*job.language));
    if (const auto by_name = model::language_index_by_name(code)) {
      code = std::string(model::whisper_languages()[static_cast<std::size_t>(*by_name)].code);
    }
    if (!tok.multilingual()) {
      if (code != "en") {
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("language \"{}\": this model is English-only", *job.language));
      }
    } else {
      r.language_token = tok.language_token(code);
      if (!r.language_token) {
        throw Error(
            ErrorKind::kInvalidArgument,
            fmt::format("language \"{}\" is not one of this model's {} languages (codes such as "
                        "en, de, zh, or names such as english)",
                        *job.language, tok.specials().languages.size()));
      }
    }
    r.language = code;
  } else if (!tok.multilingual()) {
    r.language = "en";
  }
  if (!std::isfinite(job.temperature) || job.temperature < 0.0 || job.temperature > 1.0) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("temperature {}: use 0 to 1", job.temperature));
  }
  if (const std::string prompt = strip(job.prompt); !prompt.empty()) {
    if (!tok.specials().start_of_prev) {
      throw Error(ErrorKind::kUnsupported,
                  "this model's vocabulary has no <|startofprev|> for a prompt");
    }
    r.prompt_tokens = tok.encode(" " + prompt);
  }
  return r;
}

std::vector<model::TokenId> Transcriber::prompt_for(const File& f) const {
  const model::Tokenizer& tok = folder_.tokenizer();
  const auto& sp = tok.specials();
  // openai/whisper: <|startofprev|>, the last (text context / 2 - 1) tokens of the conditioning
  // text, then the task's tokens.
  const std::vector<model::TokenId>& conditioning =
      options_.strategy == Strategy::kSequential ? f.history : f.job.prompt_tokens;
  std::vector<model::TokenId> p;
  if (!conditioning.empty()) {
    const auto keep = static_cast<std::size_t>(model_->config().max_target_positions / 2 - 1);
    p.push_back(*sp.start_of_prev);
    p.insert(p.end(),
             conditioning.end() - static_cast<std::ptrdiff_t>(std::min(keep, conditioning.size())),
             conditioning.end());
  }
  p.push_back(sp.start_of_transcript);
  if (tok.multilingual()) {
    p.push_back(*f.job.language_token);
    p.push_back(f.job.task == "translate" ? sp.translate : sp.transcribe);
  }
  if (options_.timestamps == TimestampMode::kNone) p.push_back(sp.no_timestamps);
  return p;
}

void Transcriber::run(const std::vector<std::string>& paths, const CancellationToken& cancel,
                      const std::function<void(const ProgressEvent&)>& on_progress,
                      const std::function<void(FileResult&&)>& on_result) {
  std::vector<Job> jobs;
  for (const std::string& p : paths)
    jobs.emplace_back(p);
  run(jobs, cancel, on_progress, on_result);
}

void Transcriber::run(const std::vector<Job>& jobs, const CancellationToken& cancel,
                      const std::function<void(const ProgressEvent&)>& on_progress,
                      const std::function<void(FileResult&&)>& on_result) {
  JobList list(jobs);
  run(list, cancel, on_progress, on_result);
}

void Transcriber::run(JobSource& jobs, const CancellationToken& cancel,
                      const std::function<void(const ProgressEvent&)>& on_progress,
                      const std::function<void(FileResult&&)>& on_result) {
  cancel_ = &cancel;
  std::vector<std::unique_ptr<File>> open;  // started and not yet handed over
  Ahead ahead;  // after `open`: it reads their sources, so it ends first
  const bool sequential = options_.strategy == Strategy::kSequential;
  const VoiceActivity* vad = options_.voice_activity ? &voice_activity_ : nullptr;

  const auto finish = [&](File& f) {
    if (f.finished) return;
    f.finished = true;
    FileResult r;
    r.file = f.index;
    r.path = f.path;
    r.transcript = std::move(f.transcript);
    r.transcript.task = f.job.task;
    r.transcript.duration =
        static_cast<double>(f.source ? f.source->samples_read() : 0) / kSampleRate;
    if (r.transcript.language.empty() && f.job.language) r.transcript.language = *f.job.language;
    // Audio that stops well before the length the container states was cut short.
    const double decoded = r.transcript.duration;
    const double tolerance =
        std::max(1.0, f.duration_hint * (f.duration_is_estimate ? 0.25 : 0.02));
    if (f.audio && !cancel.cancelled() && !f.cancelled() && f.error.empty() &&
        f.duration_hint > 0 && f.duration_hint - decoded > tolerance) {
      f.error = fmt::format(
          "{}: the audio ends at {:.1f} s but the file says it lasts {:.1f} s (truncated or "
          "damaged); the transcript covers what could be decoded",
          f.path, decoded, f.duration_hint);
    }
    if (f.audio && f.audio->damaged_packets() > 0 && f.error.empty()) {
      f.error = fmt::format(
          "{}: {} damaged or truncated part(s) of the audio could not be decoded; the "
          "transcript covers what could",
          f.path, f.audio->damaged_packets());
    }
    if (!f.error.empty()) {
      r.ok = false;
      r.error = f.error;
      r.transcript.partial = true;
    }
    // Stable: segments of one window that start together keep their order.
    std::stable_sort(r.transcript.segments.begin(), r.transcript.segments.end(),
                     [](const Segment& a, const Segment& b) { return a.start < b.start; });
    for (std::size_t i = 0; i < r.transcript.segments.size(); ++i)
      r.transcript.segments[i].id = static_cast<int>(i);
    if (f.audio) {
      const audio::ReadAheadStats read = f.audio->stats();
      spdlog::debug("{}: audio read in {} segment(s) by {} ({} joined after a seek, {} read on)",
                    f.path, read.segments, f.audio->parallel() ? "threads at once" : "one thread",
                    read.joined, read.read_on);
    }
    f.source.reset();  // reads through the read-ahead: goes first
    f.audio.reset();
    ProgressEvent e =
        event(r.ok ? ProgressEvent::Kind::kFileDone : ProgressEvent::Kind::kFileFailed, f);
    e.windows_total = f.windows_done;
    e.audio_done = e.audio_total = decoded;
    e.message = r.error;
    e.language = r.transcript.language;
    on_progress(e);
    on_result(std::move(r));
  };

  // The next job: one that is waiting, else, with `wait`, the next to come.
  const auto take = [&](bool wait) -> std::optional<Job> {
    if (std::optional<Job> ready = jobs.next(false)) return ready;
    if (!wait) return std::nullopt;
    // Nothing open and nothing waiting (a server between requests): the device's full batch is
    // tried again for what comes next, and device memory the last batches used goes back to the
    // GPU, so that other models on it can have it.
    if (!jobs.finished()) return_to_the_device();
    model_->release_decoder_buffers();
    release_cached_memory();
    return jobs.next(true);
  };
  // Opens the next job that can be opened; with `wait`, waits for one to come.
  const auto open_next = [&](bool wait) -> bool {
    while (std::optional<Job> job = take(wait)) {
      auto f = std::make_unique<File>();
      f->index = job->id;
      f->path = job->path;
      f->cancel = job->cancel;
      // Sequential windows depend on the text before them (the prompt, where the next one
      // starts), which a resume would have to rebuild exactly: such jobs start again instead.
      if (!sequential) f->resume = job->resume;
      std::string error;
      if (f->cancelled()) {
        error = fmt::format("{}: cancelled before it started", f->path);
      } else {
        try {
          f->job = job->options ? resolve(*job->options) : default_job_;
          auto decoder = std::make_unique<audio::AudioDecoder>(f->path);
          f->duration_hint = decoder->duration_seconds();
          f->duration_is_estimate = decoder->duration_is_estimate();
          f->audio = std::make_unique<audio::ReadAhead>(
              std::move(decoder), read_ahead_options(static_cast<int>(open.size()) + 1));
        } catch (const std::exception& e) {  // one job's failure, whatever it is, is its own
          error = e.what();
        }
      }
      if (!error.empty()) {
        ProgressEvent e = event(ProgressEvent::Kind::kFileFailed, *f);
        e.message = error;
        on_progress(e);
        FileResult r;
        r.file = f->index;
        r.path = f->path;
        r.ok = false;
        r.error = error;
        on_result(std::move(r));
        continue;
      }
      auto read = [audio = f->audio.get()](std::span<float> out) { return audio->read(out); };
      f->source = sequential ? seeking_windows(read, vad) : chunked_windows(read, vad);
      if (f->resume && f->resume->language && !f->job.language_token &&
          folder_.tokenizer().multilingual()) {
        // Detected by the earlier run: detecting again could only give the same answer.
        f->job.language_token = folder_.tokenizer().language_token(*f->resume->language);
        if (f->job.language_token) f->job.language = *f->resume->language;
      }
      if (f->job.language) f->transcript.language = *f->job.language;
      if (sequential) f->history = f->job.prompt_tokens;  // openai/whisper's initial prompt
      on_progress(event(ProgressEvent::Kind::kFileStarted, *f));
      open.push_back(std::move(f));
      return true;
    }
    return false;
  };

  // The command line opens its next file only once the open ones run out: with windows read
  // ahead, the files the next batch will need (by their durations) are opened now and held back
  // until then, so that their windows can be read ahead too (a folder of short clips would
  // otherwise prepare every batch while the GPU waits).
  const auto open_ahead = [&] {
    const int wanted = std::min(options_.batch_size, batch_limit_);
    double supply = 0.0;  // windows the open files can still give, by their durations
    for (const auto& f : open) {
      if (f->finished || f->broken || f->cancelled()) continue;
      supply += static_cast<double>(f->ahead.size());
      if (f->source->exhausted()) continue;
      if (f->duration_hint <= 0) return;  // length unknown: it may well fill the batch itself
      const double left =
          f->duration_hint - static_cast<double>(f->source->samples_read()) / kSampleRate;
      supply += std::max(1.0, std::ceil(left / kWindowSeconds));
    }
    int held = static_cast<int>(
        std::count_if(open.begin(), open.end(), [](const auto& f) { return f->held; }));
    while (supply < wanted && held < wanted && open_next(false)) {
      File& f = *open.back();
      f.held = true;
      ++held;
      supply += f.duration_hint > 0 ? std::max(1.0, std::ceil(f.duration_hint / kWindowSeconds))
                                    : static_cast<double>(wanted);
    }
  };

  const auto full = [&](const std::vector<Item>& batch) {
    return static_cast<int>(batch.size()) >= std::min(options_.batch_size, batch_limit_);
  };
  std::size_t turn = 0;  // the open job whose turn it is: where the last batch stopped
  // Finished jobs leave the open list; the turn stays with the job it pointed at.
  const auto drop_finished = [&] {
    std::size_t before_turn = 0;
    for (std::size_t i = 0; i < open.size() && i < turn; ++i)
      before_turn += open[i]->finished ? 1 : 0;
    turn -= before_turn;
    std::erase_if(open, [](const auto& f) { return f->finished; });
  };
  while (!cancel.cancelled()) {
    take_ahead(ahead);
    // Jobs whose requester gave up end here with what they have (nothing of theirs is in flight
    // between batches).
    for (auto& f : open) {
      if (f->finished || !f->cancelled()) continue;
      f->transcript.partial = true;
      if (f->error.empty())
        f->error = fmt::format("{}: cancelled after {} of its windows", f->path, f->windows_done);
      finish(*f);
    }
    drop_finished();
    // Every job that has come, up to the limit, when jobs are opened eagerly.
    while (options_.max_open_jobs > 0 && static_cast<int>(open.size()) < options_.max_open_jobs &&
           open_next(open.empty())) {
    }

    // Fill a batch, one window per open job in turn (sequential: at most one per job in flight);
    // otherwise another job is opened while there is room (batched: once the open ones have no
    // window ready).
    std::vector<Item> batch;
    for (;;) {
      bool added = false;
      bool any = true;
      while (any && !full(batch)) {
        any = false;
        const std::size_t first = turn;
        for (std::size_t k = 0; k < open.size() && !full(batch); ++k) {
          const std::size_t at = (first + k) % open.size();
          File* f = open[at].get();
          if (f->finished || f->held || f->cancelled() || (f->broken && f->ahead.empty())) continue;
          try {
            std::optional<Item> item = f->next_window();
            if (!item) continue;
            if (restore(*f, *item, on_progress)) {
              added = any = true;
              continue;
            }
            ++f->in_flight;
            batch.push_back(std::move(*item));
            added = any = true;
            turn = at + 1;
          } catch (const std::exception& e) {
            f->error = e.what();  // keep what was decoded so far
            f->broken = true;
          }
        }
      }
      if (full(batch)) break;
      const bool all_drained_or_waiting = std::all_of(open.begin(), open.end(), [&](const auto& f) {
        return f->finished || f->held || f->broken || (f->source_exhausted() && f->ahead.empty()) ||
               sequential;
      });
      const bool room = options_.max_open_jobs > 0
                            ? static_cast<int>(open.size()) < options_.max_open_jobs
                            : (sequential ? static_cast<int>(open.size()) < options_.batch_size
                                          : all_drained_or_waiting);
      // Nothing to do at all: wait for a job (the server between requests).
      const bool idle = batch.empty() && open.empty();
      if (room) {
        // A file opened ahead joins where the fill would have opened one.
        const auto held = std::find_if(open.begin(), open.end(),
                                       [](const auto& f) { return f->held && !f->finished; });
        if (held != open.end()) {
          (*held)->held = false;
          continue;
        }
      }
      if (room && open_next(idle)) continue;
      if (!added) break;
    }
    compute_features(batch);
    if (!batch.empty()) {
      // Beside a GPU, the next batch's windows are read and their features computed while this
      // one runs there.
      if (!sequential &&
          options_.prepare_ahead.value_or(model_->backend().device() != backend::Device::kCpu)) {
        if (options_.max_open_jobs == 0) open_ahead();
        start_ahead(ahead, open, turn);
      }
      process_batch_fitting(batch, on_progress);
      util::release_free_heap_memory();
    }
    for (auto& f : open) {
      if (!f->finished && f->drained()) finish(*f);
    }
    drop_finished();
    if (batch.empty() && open.empty() && jobs.finished()) break;
  }
  take_ahead(ahead);
  // What the models kept for later batches goes with the run (a caller may keep the model).
  device_model_->release_decoder_buffers();
  if (fallback_model_) fallback_model_->release_decoder_buffers();
  if (windows_read_ahead_ > 0) {
    spdlog::debug(
        "{} windows read ahead of their batches (at most {} at once); batches waited "
        "{:.0f} ms for them",
        windows_read_ahead_, most_windows_ahead_, waited_ahead_ms_);
  }
  if (cancel.cancelled()) {
    // Stopped: what each started file has finished is kept, marked partial.
    for (auto& f : open) {
      f->transcript.partial = true;
      if (f->error.empty())
        f->error = fmt::format("{}: cancelled after {} of its windows", f->path, f->windows_done);
      finish(*f);
    }
  }
}

std::vector<Transcriber::Decoded> Transcriber::decode_with_fallback(
    const backend::Tensor& states, const std::vector<Item>& batch) {
  const model::Tokenizer& tok = folder_.tokenizer();
  const auto& sp = tok.specials();
  const auto& gen = folder_.generation();
  decode::DecodingRules rules;
  rules.suppress_tokens.assign(gen.suppress_tokens->begin(), gen.suppress_tokens->end());
  rules.begin_suppress_tokens.assign(gen.begin_suppress_tokens->begin(),
                                     gen.begin_suppress_tokens->end());
  rules.timestamps = options_.timestamps != TimestampMode::kNone;
  rules.end_of_text = sp.end_of_text;
  rules.no_timestamps = sp.no_timestamps;
  rules.timestamp_begin = sp.timestamp_begin;
  rules.max_initial_timestamp_index = gen.max_initial_timestamp_index;

  // Each window's temperatures: its job's, then up by the increment to 1 (openai/whisper's).
  const auto ladder = [&](double first) {
    std::vector<double> temperatures = {first};
    if (options_.temperature_increment > 0.0) {
      for (double t = first + options_.temperature_increment; t <= 1.0 + 1e-9;
           t += options_.temperature_increment) {
        temperatures.push_back(std::min(t, 1.0));
      }
    }
    return temperatures;
  };
  std::map<double, std::vector<double>> ladders;
  for (const Item& item : batch)
    ladders.try_emplace(item.file->job.temperature, ladder(item.file->job.temperature));
  const auto temperature_of = [&](std::int64_t i, std::size_t step) -> std::optional<double> {
    const auto& l = ladders.at(batch[static_cast<std::size_t>(i)].file->job.temperature);
    return step < l.size() ? std::optional<double>(l[step]) : std::nullopt;
  };

  std::vector<Decoded> out(batch.size());
  std::vector<std::int64_t> pending(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i)
    pending[i] = static_cast<std::int64_t>(i);

  for (std::size_t step = 0; !pending.empty(); ++step) {
    // The windows still to decode, by the temperature they are at now: one decoding each.
    std::map<double, std::vector<std::int64_t>> groups;
    for (const std::int64_t i : pending) {
      if (const auto t = temperature_of(i, step)) groups[*t].push_back(i);
    }
    if (groups.empty()) break;  // every ladder is climbed: the last attempts stand
    std::vector<std::int64_t> still;
    for (const auto& [t, group] : groups) {
      if (!decode_group(states, batch, group, t, step, rules, out, still)) return {};
    }
    pending = std::move(still);
  }
  return out;
}

// Decodes the windows `group` of the batch at temperature t (best_of candidates when sampling);
// their results go to `out`, and those to decode again at the next temperature to `still`.
// False when cancelled.
bool Transcriber::decode_group(const backend::Tensor& states, const std::vector<Item>& batch,
                               const std::vector<std::int64_t>& group, double t, std::size_t step,
                               const decode::DecodingRules& rules, std::vector<Decoded>& out,
                               std::vector<std::int64_t>& still) {
  const model::Tokenizer& tok = folder_.tokenizer();
  const auto& sp = tok.specials();
  const auto& gen = folder_.generation();
  const int copies = t > 0.0 ? options_.best_of : 1;  // candidates sampled per window
  std::vector<std::int64_t> rows;
  decode::GreedyOptions o;
  bool word_timings = false;
  for (const std::int64_t i : group) {
    word_timings = word_timings || batch[static_cast<std::size_t>(i)].file->job.word_timings;
    for (int c = 0; c < copies; ++c) {
      rows.push_back(i);
      o.item_prompts.push_back(batch[static_cast<std::size_t>(i)].prompt);
    }
  }
  // Every window once, in order: the batch's states as they are. (Counting rows is not enough:
  // one window's best_of candidates can number as many as the batch.)
  bool all = copies == 1 && rows.size() == batch.size();
  for (std::size_t r = 0; all && r < rows.size(); ++r)
    all = rows[r] == static_cast<std::int64_t>(r);
  const backend::Tensor sub = all ? states : select_windows(model_->backend(), states, rows);
  o.max_new_tokens = options_.max_new_tokens;
  o.rules = &rules;
  o.end_tokens = *gen.eos_token_ids;
  o.no_speech_token = sp.no_speech;
  o.start_of_transcript = sp.start_of_transcript;
  if (word_timings) o.alignment_heads = *gen.alignment_heads;
  o.temperature = t;
  o.seed = options_.seed + step;
  // The run was stopped, or every window's requester gave up (clients gone, a shutdown's
  // deadline): stop within a step rather than at the end of the batch. The batch is then
  // dropped, which only cancelled jobs notice.
  o.stop = [this, &batch] {
    return (cancel_ != nullptr && cancel_->cancelled()) ||
           std::all_of(batch.begin(), batch.end(),
                       [](const Item& item) { return item.file->cancelled(); });
  };
  std::vector<decode::GreedyResult> results = decode::greedy_decode(*model_, sub, o);
  if (!results.empty() && results.front().stopped)
    return false;  // cancelled: nothing of this batch is kept

  for (std::size_t k = 0; k < group.size(); ++k) {
    // Of the candidates, the likeliest per token (openai/whisper's ranking without length
    // penalty).
    std::size_t best = k * static_cast<std::size_t>(copies);
    const auto score = [&](const decode::GreedyResult& r) {
      return r.sum_logprob / static_cast<double>(std::max<std::size_t>(r.tokens.size(), 1));
    };
    for (int c = 1; c < copies; ++c) {
      if (score(results[k * static_cast<std::size_t>(copies) + static_cast<std::size_t>(c)]) >
          score(results[best])) {
        best = k * static_cast<std::size_t>(copies) + static_cast<std::size_t>(c);
      }
    }
    Decoded d;
    d.result = std::move(results[best]);
    d.tokens = d.result.tokens;
    if (d.result.ended && !d.tokens.empty())
      d.tokens.pop_back();  // the end of text closes, it is not text
    d.text = tok.decode(d.tokens);
    d.temperature = t;
    d.avg_logprob = decode::average_logprob(d.result.sum_logprob, d.tokens.size());
    d.compression_ratio = decode::compression_ratio(d.text);
    bool fallback = d.compression_ratio > options_.compression_ratio_threshold ||
                    d.avg_logprob < options_.logprob_threshold;
    if (d.result.no_speech_prob > options_.no_speech_threshold &&
        d.avg_logprob < options_.logprob_threshold) {
      fallback = false;  // silence: nothing better will come
    }
    out[static_cast<std::size_t>(group[k])] = std::move(d);
    if (fallback) still.push_back(group[k]);
  }
  return true;
}

bool Transcriber::restore(File& f, const Item& item,
                          const std::function<void(const ProgressEvent&)>& on_progress) {
  if (!f.resume) return false;
  const AudioWindow& window = item.window;
  const auto it = f.resume->windows.find(window.start_sample);
  if (it == f.resume->windows.end()) return false;
  const FinishedWindow& done = it->second;
  std::string text;
  for (const Segment& s : done.segments) {
    text += s.text;
    f.transcript.segments.push_back(s);
  }
  f.source->done(window.start_sample, item.length, done.frames_consumed);
  ++f.windows_done;
  ProgressEvent e = event(ProgressEvent::Kind::kWindowDone, f);
  e.audio_done = static_cast<double>(window.start_sample + static_cast<std::int64_t>(item.length)) /
                 kSampleRate;
  e.text = std::move(text);
  e.window_start = window.start_sample;
  e.frames_consumed = done.frames_consumed;
  e.segments = done.segments;
  e.restored = true;
  on_progress(e);
  return true;
}

void Transcriber::process_batch_fitting(
    std::vector<Item>& batch, const std::function<void(const ProgressEvent&)>& on_progress,
    bool retry) {
  try {
    process_batch(batch, on_progress);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kDeviceFailure && leave_the_failed_device(e)) {
      // Nothing of the batch was applied: it runs again on the CPU.
      process_batch(batch, on_progress);
      return;
    }
    if (e.kind() != ErrorKind::kOutOfMemory) throw;
    if (retry && model_->release_decoder_buffers()) {
      spdlog::info(
          "out of device memory with {} windows ({}); trying again without the decoder "
          "buffers kept from earlier batches",
          batch.size(), e.what());
      release_cached_memory();
      process_batch_fitting(batch, on_progress, false);
      return;
    }
    if (batch.size() == 1) {
      if (!options_.cpu_fallback || model_ == fallback_model_.get()) {
        throw Error(ErrorKind::kOutOfMemory,
                    fmt::format("one window does not fit on the device: {}", e.what()));
      }
      spdlog::warn(
          "out of device memory for a single window ({}); {} the model on the CPU and going "
          "on there",
          e.what(), fallback_model_ ? "using" : "loading");
      // The kept decoder buffers first, so that trimming the pool gives their memory back too.
      model_->release_decoder_buffers();
      release_cached_memory();
      fall_back_to_cpu();
      process_batch(batch, on_progress);
      return;
    }
    // Nothing of a batch is applied before its decoding ends, so its halves can run again.
    const std::size_t half = batch.size() / 2;
    batch_limit_ = static_cast<int>(half);
    spdlog::warn("out of device memory with {} windows ({}); going on with batches of {}",
                 batch.size(), e.what(), half);
    model_->release_decoder_buffers();
    release_cached_memory();
    std::vector<Item> first(
        std::make_move_iterator(batch.begin()),
        std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(half)));
    std::vector<Item> second(
        std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(half)),
        std::make_move_iterator(batch.end()));
    process_batch_fitting(first, on_progress);
    process_batch_fitting(second, on_progress);
    batch.clear();
    std::move(first.begin(), first.end(), std::back_inserter(batch));
    std::move(second.begin(), second.end(), std::back_inserter(batch));
  }
}

void Transcriber::features_for(std::span<Item* const> items, util::ThreadPool* pool) const {
  if (items.empty()) return;
  // The device model's host memory (page-locked beside a GPU) whichever model encodes them: on
  // a CPU fallback it is as good as any, and model_ may change on the run's thread meanwhile.
  // Plain memory once that device failed.
  auto buffer = std::make_shared<FeatureBuffer>(
      extractor_, items.size(), device_failed_ ? nullptr : &device_model_->backend());
  const auto one = [&](int i) {
    Item& item = *items[static_cast<std::size_t>(i)];
    buffer->compute(static_cast<std::size_t>(i), item.window.samples);
    std::vector<float>().swap(item.window.samples);  // the features are what is read
  };
  if (items.size() < 2 || pool == nullptr) {
    for (int i = 0; i < static_cast<int>(items.size()); ++i)
      one(i);
  } else {
    pool->run(static_cast<int>(items.size()), one);
  }
  for (std::size_t i = 0; i < items.size(); ++i)
    items[i]->features = {buffer, i};
}

void Transcriber::compute_features(std::vector<Item>& batch) {
  std::vector<Item*> missing;
  for (Item& item : batch) {
    if (!item.features.buffer) missing.push_back(&item);
  }
  if (missing.size() >= 2 && !mel_pool_) {
    const backend::Backend& be = model_->backend();
    const int threads =
        be.device() == backend::Device::kCpu ? be.threads() : std::min(util::usable_cores(), 16);
    mel_pool_ = std::make_unique<util::ThreadPool>(std::max(1, threads));
  }
  features_for(missing, mel_pool_.get());
  // A window whose samples were refused fails its file, which keeps what it finished.
  std::erase_if(batch, [](Item& item) {
    const std::string& error = item.features.buffer->error(item.features.index);
    if (error.empty()) return false;
    File& f = *item.file;
    if (f.error.empty()) f.error = fmt::format("{}: {}", f.path, error);
    f.broken = true;
    f.ahead.clear();  // as when nothing is read ahead: the file ends at the window it failed on
    --f.in_flight;
    return true;
  });
}

void Transcriber::start_ahead(Ahead& ahead, const std::vector<std::unique_ptr<File>>& open,
                              std::size_t turn) {
  ahead.files.clear();
  ahead.items.clear();
  // The files the next batch would take windows from, in the order it would; then those opened
  // ahead, in the order the fill lets them join.
  const auto plan = [&](File* f) {
    if (f->finished || f->cancelled()) return;
    const bool readable = !f->broken && !f->source->exhausted();
    if (!readable && f->ahead.empty()) return;
    Ahead::Reading r;
    r.file = f;
    r.held = f->held;
    for (const Item& item : f->ahead)
      r.leftover.push_back(f->resumable(item.window));
    r.done = !readable;
    ahead.files.push_back(std::move(r));
  };
  for (std::size_t k = 0; k < open.size(); ++k) {
    File* f = open[(turn + k) % open.size()].get();
    if (!f->held) plan(f);
  }
  for (const auto& f : open) {
    if (f->held) plan(f.get());
  }
  if (ahead.files.empty()) return;
  for (Ahead::Reading& r : ahead.files)
    r.file->reading_ahead = !r.done;
  if (!ahead_pool_) {
    ahead_pool_ = std::make_unique<util::ThreadPool>(std::clamp(util::usable_cores(), 1, 16));
  }
  const int wanted = std::min(options_.batch_size, batch_limit_);
  ahead.task =
      std::async(std::launch::async, [this, &ahead, wanted] { read_ahead(ahead, wanted); });
}

// On the ahead task's thread: takes windows as the next batch's fill would (one per file in turn,
// each round from the file after the last one that gave the batch a window; windows read ahead
// before first; windows an earlier run decoded, which the fill restores, taking no place), then
// computes their features.
void Transcriber::read_ahead(Ahead& ahead, int wanted) const {
  // Files held back join one at a time once a round gives nothing, as the fill opens one.
  std::size_t files = static_cast<std::size_t>(
      std::count_if(ahead.files.begin(), ahead.files.end(), [](const auto& r) { return !r.held; }));
  int counted = 0;
  std::size_t turn = 0;
  for (bool any = true; counted < wanted && !cancel_->cancelled();) {
    if (!any) {
      if (files == ahead.files.size()) break;
      ++files;
    }
    any = false;
    const std::size_t first = turn;
    for (std::size_t k = 0; k < files && counted < wanted; ++k) {
      const std::size_t at = (first + k) % files;
      Ahead::Reading& r = ahead.files[at];
      if (r.file->cancelled()) continue;
      if (!r.leftover.empty()) {
        const bool restored = r.leftover.front();
        r.leftover.pop_front();
        any = true;
        if (!restored) {
          ++counted;
          turn = at + 1;
        }
        continue;
      }
      if (r.done) continue;
      try {
        std::optional<AudioWindow> w = r.file->source->next();
        if (!w) {
          r.done = true;
          continue;
        }
        Item item(r.file, std::move(*w));
        if (r.file->resumable(item.window)) {
          std::vector<float>().swap(item.window.samples);  // restored by position
        } else {
          ++counted;
          turn = at + 1;
        }
        ahead.items.push_back(std::move(item));
        any = true;
      } catch (const std::exception& e) {  // as when the batch reads it: the file fails alone
        r.error = e.what();
        r.done = true;
      }
    }
  }
  std::vector<Item*> computed;
  for (Item& item : ahead.items) {
    if (!item.file->resumable(item.window)) computed.push_back(&item);
  }
  features_for(computed, ahead_pool_.get());
}

void Transcriber::take_ahead(Ahead& ahead) {
  if (!ahead.task.valid()) return;
  const auto started = std::chrono::steady_clock::now();
  try {
    ahead.task.get();
  } catch (...) {
    for (Ahead::Reading& r : ahead.files)
      r.file->reading_ahead = false;
    throw;
  }
  const double waited =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (waited >= 1.0) {
    spdlog::debug("waited {:.0f} ms for the next batch's {} windows read ahead", waited,
                  ahead.items.size());
  }
  waited_ahead_ms_ += waited;
  windows_read_ahead_ += static_cast<std::int64_t>(ahead.items.size());
  for (Item& item : ahead.items)
    item.file->ahead.push_back(std::move(item));
  std::int64_t waiting = 0;  // with features: what their memory is
  for (Ahead::Reading& r : ahead.files) {
    waiting += std::count_if(r.file->ahead.begin(), r.file->ahead.end(),
                             [](const Item& item) { return item.features.buffer != nullptr; });
    r.file->reading_ahead = false;
    if (!r.error.empty()) {
      r.file->error = r.error;  // keep what was decoded so far
      r.file->broken = true;
    }
  }
  most_windows_ahead_ = std::max(most_windows_ahead_, waiting);
  ahead.items.clear();
  ahead.files.clear();
}

audio::ReadAheadOptions Transcriber::read_ahead_options(int open_files) const {
  audio::ReadAheadOptions o;
  // Beside a GPU, decoding one file on one core is slower than the GPU (MP3: ~550x realtime);
  // on the CPU the cores are the model's, and one thread only overlaps decoding with it. Files
  // open together (a server's requests) share the cores and the batches.
  const int cores = util::usable_cores();
  const int files = std::max(open_files, 1);
  if (options_.decode_threads > 0) {
    o.threads = options_.decode_threads;
  } else if (model_->backend().device() == backend::Device::kCpu) {
    o.threads = 1;
  } else {
    o.threads = std::clamp(cores / files, 1, 8);
  }
  // This file's part of the next batch decoded while this one runs (64 KB per second ahead).
  o.ahead_seconds = std::clamp(options_.batch_size * double{kWindowSeconds} / files, 120.0, 600.0);
  return o;
}

bool Transcriber::leave_the_failed_device(const Error& e) {
  if (!options_.cpu_fallback || model_ != device_model_) return false;
  // CUDA refuses every later call on that device in this process: the CPU from now on.
  device_failed_ = true;
  spdlog::error("{} failed ({}); {} the model on the CPU and going on there",
                model_->backend().description(), e.what(), fallback_model_ ? "using" : "loading");
  fall_back_to_cpu();
  return true;
}

void Transcriber::release_cached_memory() {
  try {
    model_->backend().release_cached_memory();
  } catch (const Error& e) {
    // A device can fail between batches too (an uncorrectable memory error; another model's
    // fault on the same GPU, whose context they share).
    if (e.kind() != ErrorKind::kDeviceFailure || !leave_the_failed_device(e)) throw;
  }
}

void Transcriber::fall_back_to_cpu() {
  model_->release_decoder_buffers();
  if (!fallback_model_) {
    // Kept once loaded: a later fallback (a device that fills up again) does not load it again.
    fallback_backend_ = backend::make_cpu_backend(0);
    engine::CheckpointWeights weights(folder_.checkpoint());
    fallback_model_ =
        std::make_unique<engine::WhisperModel>(folder_.config(), weights, *fallback_backend_);
    cpu_copy_bytes_ = static_cast<std::size_t>(folder_.checkpoint().parameter_count()) *
                      backend::dtype_size(fallback_backend_->weight_dtype());
  }
  model_ = fallback_model_.get();
  // A batch the host memory holds: one planned for the GPU (up to 64 windows) may not fit.
  batch_limit_ = planned_batch_size(folder_.config(), *fallback_backend_, 0, 16);
  mel_pool_.reset();  // sized for the CPU backend's threads at the next batch
}

void Transcriber::return_to_the_device() {
  if (device_failed_) return;  // the CPU from now on, at the CPU's batch
  if (model_ != device_model_) {
    spdlog::info("the next jobs try {} again (the last ones ran on the CPU)",
                 device_model_->backend().description());
    model_ = device_model_;
    mel_pool_.reset();  // sized for the device at the next batch
  } else if (batch_limit_ < options_.batch_size) {
    spdlog::info("the next jobs try batches of {} again (the last ones were limited to {})",
                 options_.batch_size, batch_limit_);
  }
  batch_limit_ = options_.batch_size;
}

void Transcriber::process_batch(std::vector<Item>& batch,
                                const std::function<void(const ProgressEvent&)>& on_progress) {
  const model::Tokenizer& tok = folder_.tokenizer();
  const auto& sp = tok.specials();
  const int n = static_cast<int>(batch.size());
  std::vector<FeatureRef> features;
  for (const Item& item : batch)
    features.push_back(item.features);
  backend::HostBuffer gathered;  // only when the batch's features are not one after another
  const backend::Tensor states =
      model_->encode(gather_features(features, gathered, &model_->backend()), n);

  // A file's language, when not given, is detected on its first window (as openai/whisper).
  for (int i = 0; i < n; ++i) {
    File& f = *batch[static_cast<std::size_t>(i)].file;
    if (f.job.language_token || !tok.multilingual()) continue;
    const auto probs = decode::detect_language(*model_, states.rows(i, 1), sp.start_of_transcript,
                                               sp.languages)[0];
    f.job.language_token = tok.language_token(probs.front().code);
    f.transcript.language = probs.front().code;
    spdlog::debug("{}: detected language {} ({:.2f})", f.path, probs.front().code,
                  probs.front().probability);
  }
  for (Item& item : batch)
    item.prompt = prompt_for(*item.file);

  const std::vector<Decoded> decoded = decode_with_fallback(states, batch);
  if (decoded.empty()) return;  // cancelled

  const bool timestamps = options_.timestamps != TimestampMode::kNone;
  for (int i = 0; i < n; ++i) {
    Item& item = batch[static_cast<std::size_t>(i)];
    File& f = *item.file;
    const Decoded& d = decoded[static_cast<std::size_t>(i)];
    const decode::GreedyResult& r = d.result;
    const int start_frame = static_cast<int>(item.window.start_sample / kSamplesPerFrame);
    const int frames = static_cast<int>((item.length + kSamplesPerFrame - 1) / kSamplesPerFrame);
    const double window_start = static_cast<double>(item.window.start_sample) / kSampleRate;
    const double window_end = window_start + static_cast<double>(item.length) / kSampleRate;
    const bool silent = r.no_speech_prob > options_.no_speech_threshold &&
                        d.avg_logprob < options_.logprob_threshold;

    int frames_consumed = frames;
    std::string added_text;
    std::size_t added_segments = 0;
    std::vector<model::TokenId> kept;  // the tokens of the segments kept (the next prompt)
    if (!silent && !strip(d.text).empty()) {
      decode::WindowSegments split;
      if (timestamps) {
        // Batched windows are never decoded again: text after the last timestamp pair is kept.
        split = decode::split_segments(d.tokens, sp.timestamp_begin, start_frame, frames,
                                       options_.strategy == Strategy::kBatched);
        frames_consumed = split.frames_consumed;
      } else {
        split.segments.push_back({window_start, window_end, d.tokens});
      }
      std::vector<Word> words;
      if (f.job.word_timings && !r.alignment.empty()) {
        const auto times = decode::pass_token_timestamps(
            r.alignment, r.prompt_length, kEncoderFrames, model_->config().median_filter_width);
        std::vector<double> token_times;
        for (std::size_t k = 0; k < d.tokens.size(); ++k) {
          token_times.push_back(window_start +
                                times[static_cast<std::size_t>(r.prompt_length) + k]);
        }
        words = words_from_tokens(tok, d.tokens, token_times,
                                  splits_on_characters(f.transcript.language));
      }
      std::size_t next_word = 0;
      for (const decode::Segment& s : split.segments) {
        Segment seg;
        seg.seek = start_frame;
        seg.start = std::clamp(s.start, window_start, window_end);
        seg.end = std::clamp(s.end, seg.start, window_end);
        seg.tokens.assign(s.tokens.begin(), s.tokens.end());
        seg.text = tok.decode(s.tokens);
        seg.temperature = d.temperature;
        seg.avg_logprob = d.avg_logprob;
        seg.compression_ratio = d.compression_ratio;
        seg.no_speech_prob = r.no_speech_prob;
        // The words that start within this segment, held inside its bounds.
        while (next_word < words.size() &&
               (words[next_word].start < seg.end || &s == &split.segments.back())) {
          Word w = words[next_word++];
          w.start = std::clamp(w.start, seg.start, seg.end);
          w.end = std::clamp(w.end, w.start, seg.end);
          seg.words.push_back(std::move(w));
        }
        kept.insert(kept.end(), s.tokens.begin(), s.tokens.end());
        if (strip(seg.text).empty()) continue;
        added_text += seg.text;
        f.transcript.segments.push_back(std::move(seg));
        ++added_segments;
      }
    }
    if (options_.strategy == Strategy::kSequential) {
      f.history.insert(f.history.end(), kept.begin(), kept.end());
      // Text sampled hot is no good prompt (openai/whisper resets the prompt above 0.5).
      if (!options_.condition_on_previous_text || d.temperature > 0.5) f.history.clear();
    }
    // Batched windows do not depend on each other (ChunkedWindows ignores done()), and the task
    // reading the next batch's windows may be using their source right now.
    if (options_.strategy == Strategy::kSequential)
      f.source->done(item.window.start_sample, item.length, frames_consumed);
    --f.in_flight;
    ++f.windows_done;
    ProgressEvent e = event(ProgressEvent::Kind::kWindowDone, f);
    e.audio_done = window_end;
    e.text = std::move(added_text);
    e.window_start = item.window.start_sample;
    e.frames_consumed = frames_consumed;
    e.segments.assign(f.transcript.segments.end() - static_cast<std::ptrdiff_t>(added_segments),
                      f.transcript.segments.end());
    on_progress(e);
  }
}

}  // namespace ifw::pipeline
