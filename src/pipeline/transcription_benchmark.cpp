#include "pipeline/transcription_benchmark.hpp"

#include <chrono>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/device_selection.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/transcriber.hpp"

namespace ifw::pipeline {

TranscriptionBenchmarkResult run_transcription_benchmark(const TranscriptionBenchmarkOptions& o) {
  if (o.audio.empty()) throw Error(ErrorKind::kInvalidArgument, "bench --audio: no audio files");
  if (o.tokenizer_folder.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "bench --audio needs --tokenizer: a model folder whose tokenizer and generation "
                "settings the transcription uses (its weights are not)");
  }
  const model::WhisperConfig config = engine::published_architecture(o.model.arch);
  const model::ModelFolder folder(o.tokenizer_folder);
  if (folder.tokenizer().size() != config.vocab_size) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("bench --tokenizer {}: a vocabulary of {} tokens, {} has {}",
                            o.tokenizer_folder.string(), folder.tokenizer().size(), o.model.arch,
                            config.vocab_size));
  }
  auto backend =
      backend::make_backend(backend::parse_device(o.model.device),
                            backend::parse_precision(o.model.precision), o.model.threads);
  TranscriptionBenchmarkResult r;
  r.backend = backend->description();
  engine::RandomWeights weights(42);
  const engine::WhisperModel model(config, weights, *backend);
  backend->synchronize();

  TranscribeOptions t;
  t.batch_size = o.model.batch;
  t.max_new_tokens = o.model.tokens;
  // Random weights fail every quality threshold: temperature fallbacks would decode each window
  // several times over, which a real model seldom does.
  t.temperature_increment = 0.0;
  t.language = "en";
  t.cpu_fallback = false;  // a benchmark of the device, not of the CPU after it
  t.prepare_ahead = o.prepare_ahead;
  Transcriber transcriber(folder, model, t);
  CancellationToken cancel;
  const auto start = std::chrono::steady_clock::now();
  transcriber.run(
      o.audio, cancel, [](const ProgressEvent&) {},
      [&](FileResult&& f) {
        ++r.files;
        if (!f.ok) {
          ++r.failed;
          spdlog::error("bench --audio: {}", f.error);
        }
        r.audio_seconds += f.transcript.duration;
        r.segments += static_cast<std::int64_t>(f.transcript.segments.size());
        for (const Segment& s : f.transcript.segments)
          r.tokens += static_cast<std::int64_t>(s.tokens.size());
      });
  backend->synchronize();
  r.wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  r.rtfx = r.wall_ms > 0.0 ? r.audio_seconds * 1000.0 / r.wall_ms : 0.0;
  r.windows_read_ahead = transcriber.windows_read_ahead();
  r.most_windows_ahead = transcriber.most_windows_ahead();
  r.waited_for_windows_ahead_ms = transcriber.waited_for_windows_ahead_ms();
  return r;
}

std::string transcription_benchmark_text(const TranscriptionBenchmarkOptions& o,
                                         const TranscriptionBenchmarkResult& r) {
  return fmt::format(
      "arch        {} ({} backend: {}; random weights, tokenizer of {})\n"
      "transcribed {} files ({} failed), {:.1f} s of audio in {:.0f} ms: {:.1f}x realtime\n"
      "            batch {}, at most {} tokens a window: {} segments, {} tokens\n"
      "ahead       {} windows prepared ahead of their batch (at most {} at once); batches "
      "waited {:.0f} ms for them\n",
      o.model.arch, o.model.device, r.backend, o.tokenizer_folder.string(), r.files, r.failed,
      r.audio_seconds, r.wall_ms, r.rtfx, o.model.batch, o.model.tokens, r.segments, r.tokens,
      r.windows_read_ahead, r.most_windows_ahead, r.waited_for_windows_ahead_ms);
}

std::string transcription_benchmark_json(const TranscriptionBenchmarkOptions& o,
                                         const TranscriptionBenchmarkResult& r) {
  const nlohmann::ordered_json j = {
      {"arch", o.model.arch},
      {"device", o.model.device},
      {"backend", r.backend},
      {"batch", o.model.batch},
      {"tokens", o.model.tokens},
      {"files", r.files},
      {"failed", r.failed},
      {"audio_seconds", r.audio_seconds},
      {"wall_ms", r.wall_ms},
      {"rtfx", r.rtfx},
      {"segments", r.segments},
      {"decoded_tokens", r.tokens},
      {"windows_read_ahead", r.windows_read_ahead},
      {"most_windows_ahead", r.most_windows_ahead},
      {"waited_for_windows_ahead_ms", r.waited_for_windows_ahead_ms},
  };
  return j.dump(2) + "\n";
}

}  // namespace ifw::pipeline
