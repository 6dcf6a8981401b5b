#include "cli/transcribe_command.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/device_selection.hpp"
#include "backend/devices.hpp"
#include "cli/exit_codes.hpp"
#include "cli/models_command.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "formats/formats.hpp"
#include "model/model_folder.hpp"
#include "pipeline/batch_size.hpp"
#include "pipeline/transcriber.hpp"
#include "util/atomic_file.hpp"

namespace ifw::cli {
namespace {

// The first SIGINT/SIGTERM asks the work to stop after the current step; a second one ends the
// process at once.
pipeline::CancellationToken* g_cancel = nullptr;
std::atomic<int> g_cancel_signals{0};

extern "C" void on_signal(int) {
  if (g_cancel_signals.fetch_add(1) >= 1) ::_exit(kExitInterrupted);
  if (g_cancel != nullptr) g_cancel->cancel();
}

class SignalScope {
 public:
  explicit SignalScope(pipeline::CancellationToken& token) {
    g_cancel = &token;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    g_cancel = nullptr;
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

std::string output_stem(const std::string& path, const std::map<std::string, int>& stem_counts) {
  if (path == "-") return "stdin";
  const std::filesystem::path p(path);
  const std::string stem = p.stem().string();
  // Two inputs with one stem (a/talk.mp3, b/talk.wav) keep their extensions apart.
  return stem_counts.at(stem) > 1 ? p.filename().string() : stem;
}

class Progress {
 public:
  Progress(std::string mode, std::size_t files)
      : mode_(std::move(mode)), files_(files), start_(Clock::now()) {}

  void operator()(const pipeline::ProgressEvent& e) {
    using K = pipeline::ProgressEvent::Kind;
    if (mode_ == "json") {
      static constexpr const char* kNames[] = {"file_started", "window_done", "file_done",
                                               "file_failed"};
      nlohmann::json j = {{"event", kNames[static_cast<int>(e.kind)]},
                          {"file", e.path},
                          {"index", e.file},
                          {"windows_done", e.windows_done},
                          {"windows_total", e.windows_total},
                          {"audio_done", e.audio_done},
                          {"audio_total", e.audio_total}};
      if (!e.message.empty()) j["message"] = e.message;
      std::cout << j.dump() << std::endl;
      return;
    }
    if (e.kind == K::kWindowDone) {
      audio_done_ += e.audio_done - last_audio_[e.file];
      last_audio_[e.file] = e.audio_done;
    }
    if (mode_ != "bar") return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double speed = elapsed > 0 ? audio_done_ / elapsed : 0.0;
    std::string line;
    const int total = std::max(e.windows_total, 1);
    const int filled = std::clamp(e.windows_done * 30 / total, 0, 30);
    line = fmt::format("\r[{}{}] {}/{} windows  {:.1f}x realtime",
                       std::string(static_cast<std::size_t>(filled), '#'),
                       std::string(static_cast<std::size_t>(30 - filled), '.'), e.windows_done,
                       total, speed);
    if (e.audio_total > 0 && speed > 0) {
      const double eta = std::max(0.0, (e.audio_total - e.audio_done) / speed);
      line +=
          fmt::format("  ETA {:02}:{:02}", static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
    }
    line += fmt::format("  file {}/{} {}", e.file + 1, files_,
                        std::filesystem::path(e.path).filename().string());
    std::cerr << line << "\x1b[K" << std::flush;
    if (e.kind == K::kFileDone || e.kind == K::kFileFailed) std::cerr << "\n";
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::string mode_;
  std::size_t files_;
  Clock::time_point start_;
  double audio_done_ = 0.0;
  std::map<int, double> last_audio_;
};

}  // namespace

void add_transcribe_options(CLI::App& c, TranscribeArgs& a) {
  c.add_option("FILES", a.files, "Audio or video files; - reads standard input")->required();
  c.add_option(
      "-m,--model", a.model,
      "Model folder, or Hub id such as openai/whisper-large-v3-turbo (default: $IFW_MODEL)");
  c.add_option("--revision", a.revision, "Hub revision of the model (branch, tag or commit)")
      ->capture_default_str();
  c.add_option("-l,--language", a.language, "Spoken language (code or name); detected when absent");
  c.add_option("--timestamps", a.timestamps, "none, segment or word")
      ->check(CLI::IsMember({"none", "segment", "word"}))
      ->capture_default_str();
  c.add_option("-f,--format", a.formats, "Outputs: txt,srt,vtt,json,verbose_json,tsv or all")
      ->capture_default_str();
  c.add_option("-o,--output-dir", a.output_dir, "Where outputs go")->capture_default_str();
  c.add_option("--batch-size", a.batch_size,
               "Windows decoded together (0: from the memory available)")
      ->check(CLI::Range(0, 256));
  c.add_option("--threads", a.threads, "CPU threads (0: one per usable core)")
      ->check(CLI::Range(0, 1024));
  c.add_option("--decode-threads", a.decode_threads,
               "Threads decoding a file's audio ahead, segments at once (0: up to 8 beside a GPU, "
               "1 on the CPU)")
      ->check(CLI::Range(0, 64));
  c.add_option("--device", a.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  c.add_option("--precision", a.precision,
               "auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16, bf16")
      ->capture_default_str();
  c.add_option("--prompt", a.prompt, "Text that conditions every window: names, spelling, style");
  c.add_option(
       "--strategy", a.strategy,
       "batched: independent windows decoded together (fast); sequential: openai/whisper's loop, "
       "each window after the last one's text, with temperature fallback")
      ->check(CLI::IsMember({"batched", "sequential"}))
      ->capture_default_str();
  c.add_flag("--vad", a.vad, "Skip silent stretches (energy-based voice activity detection)");
  c.add_option("--temperature", a.temperature, "0 decodes greedily; above 0 samples")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c.add_option(
       "--temperature-increment", a.temperature_increment,
       "Fallback step when a window's text is repetitive or unlikely (default: 0.2 sequential, "
       "none batched; 0 disables)")
      ->check(CLI::Range(0.0, 1.0));
  c.add_option("--best-of", a.best_of, "Candidates sampled per window when falling back")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  c.add_option("--compression-ratio-threshold", a.compression_ratio_threshold,
               "Fall back when a window's text compresses better than this (repetition)")
      ->check(CLI::Range(1.0, 100.0))
      ->capture_default_str();
  c.add_flag("--no-condition-on-previous-text", a.no_condition_on_previous_text,
             "Sequential: do not give each window the previous text as prompt");
  c.add_option("--max-new-tokens", a.max_new_tokens, "Tokens decoded per 30 s window at most")
      ->check(CLI::Range(1, 448))
      ->capture_default_str();
  c.add_option("--no-speech-threshold", a.no_speech_threshold,
               "Skip a window as silence above this no-speech probability...")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  c.add_option("--logprob-threshold", a.logprob_threshold,
               "...when its average log-probability is below this")
      ->check(CLI::Range(-100.0, 0.0))
      ->capture_default_str();
  c.add_option("--subtitles", a.subtitles,
               "readable (regrouped cues) or segments (one cue per segment)")
      ->check(CLI::IsMember({"readable", "segments"}))
      ->capture_default_str();
  c.add_option("--progress", a.progress, "auto, bar, json or none")
      ->check(CLI::IsMember({"auto", "bar", "json", "none"}))
      ->capture_default_str();
  c.add_flag("-q,--quiet", a.quiet, "Only errors on the terminal");
}

int run_transcribe(const TranscribeArgs& a, const std::string& task) {
  // Everything that can be checked before the model loads is.
  std::vector<formats::Format> formats;
  try {
    formats = formats::parse_formats(a.formats);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  }
  backend::DeviceSpec device;
  std::optional<backend::DType> precision;
  try {
    device = backend::parse_device(a.device);
    precision = backend::parse_precision(a.precision);
    backend::require_device(device);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  }
  std::error_code ec;
  std::filesystem::create_directories(a.output_dir, ec);
  if (!std::filesystem::is_directory(a.output_dir, ec)) {
    spdlog::error("{}: cannot create the output folder", a.output_dir);
    return kExitFailed;
  }

  std::unique_ptr<model::ModelFolder> folder;
  std::unique_ptr<backend::Backend> backend;
  std::unique_ptr<engine::WhisperModel> model;
  std::unique_ptr<pipeline::Transcriber> transcriber;
  pipeline::TranscribeOptions o;
  try {
    std::string model_name = a.model;
    if (model_name.empty()) {
      const char* env = std::getenv("IFW_MODEL");
      if (env == nullptr || *env == '\0') {
        spdlog::error("no model: pass --model FOLDER_OR_HUB_ID (or set IFW_MODEL)");
        return kExitUsage;
      }
      model_name = env;
    }
    folder = std::make_unique<model::ModelFolder>(locate_model(model_name, a.revision, a.quiet));
    backend = backend::make_backend(device, precision, a.threads);
    engine::CheckpointWeights weights(folder->checkpoint());
    model = std::make_unique<engine::WhisperModel>(folder->config(), weights, *backend);
    o.task = task;
    if (!a.language.empty()) o.language = a.language;
    o.timestamps = a.timestamps == "none"   ? pipeline::TimestampMode::kNone
                   : a.timestamps == "word" ? pipeline::TimestampMode::kWord
                                            : pipeline::TimestampMode::kSegment;
    const bool subtitles = std::any_of(formats.begin(), formats.end(), [](formats::Format f) {
      return f == formats::Format::kSrt || f == formats::Format::kVtt;
    });
    o.word_timings =
        o.timestamps == pipeline::TimestampMode::kWord ||
        (subtitles && a.subtitles == "readable" && o.timestamps != pipeline::TimestampMode::kNone);
    o.batch_size = a.batch_size > 0
                       ? a.batch_size
                       : pipeline::planned_batch_size(folder->config(), *backend,
                                                      device.automatic ? 0 : device.index, 16);
    o.max_new_tokens = a.max_new_tokens;
    o.decode_threads = a.decode_threads;
    o.prompt = a.prompt;
    o.temperature = a.temperature;
    o.strategy =
        a.strategy == "sequential" ? pipeline::Strategy::kSequential : pipeline::Strategy::kBatched;
    o.temperature_increment = a.temperature_increment >= 0.0 ? a.temperature_increment
                              : o.strategy == pipeline::Strategy::kSequential ? 0.2
                                                                              : 0.0;
    o.best_of = a.best_of;
    o.compression_ratio_threshold = a.compression_ratio_threshold;
    o.voice_activity = a.vad;
    o.condition_on_previous_text = !a.no_condition_on_previous_text;
    o.no_speech_threshold = a.no_speech_threshold;
    o.logprob_threshold = a.logprob_threshold;
    transcriber = std::make_unique<pipeline::Transcriber>(*folder, *model, o);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailed;
  }
  spdlog::debug("model {} on {}, batch {}", a.model, backend->description(), o.batch_size);

  std::map<std::string, int> stem_counts;
  for (const std::string& f : a.files)
    ++stem_counts[f == "-" ? "stdin" : std::filesystem::path(f).stem().string()];

  formats::SubtitleOptions subtitle_options;
  subtitle_options.readable = a.subtitles == "readable";
  std::string progress_mode = a.progress;
  if (progress_mode == "auto") progress_mode = !a.quiet && ::isatty(STDERR_FILENO) ? "bar" : "none";
  Progress progress(progress_mode, a.files.size());

  bool any_failed = false;
  pipeline::CancellationToken cancel;
  const SignalScope signals(cancel);
  transcriber->run(
      a.files, cancel, [&](const pipeline::ProgressEvent& e) { progress(e); },
      [&](pipeline::FileResult&& r) {
        if (!r.ok && cancel.cancelled()) {
          spdlog::warn("{}", r.error);
        } else if (!r.ok) {
          any_failed = true;
          spdlog::error("{}", r.error);
        }
        const bool has_output = r.ok || !r.transcript.segments.empty() || r.transcript.partial;
        if (!has_output) return;
        // Unfinished work is kept, under names that cannot be mistaken for a finished transcript.
        const std::string stem =
            output_stem(r.path, stem_counts) + (r.transcript.partial ? ".partial" : "");
        for (const formats::Format f : formats) {
          const auto path = std::filesystem::path(a.output_dir) /
                            fmt::format("{}.{}", stem, formats::extension(f));
          try {
            util::write_file_atomically(path, formats::render(r.transcript, f, subtitle_options));
            if (!a.quiet && progress_mode != "json") spdlog::info("wrote {}", path.string());
          } catch (const Error& e) {
            any_failed = true;
            spdlog::error("{}", e.what());
          }
        }
      });
  if (cancel.cancelled()) {
    spdlog::warn("cancelled: finished work was written as .partial outputs");
    return kExitInterrupted;
  }
  return any_failed ? kExitFailed : kExitOk;
}

}  // namespace ifw::cli
