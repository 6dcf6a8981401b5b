// `ifw bench --audio`: whole transcriptions (audio read ahead, windows cut and their log-mel
// computed, batches on the device, text out) with random weights of a published architecture,
// so that the pipeline's own cost shows beside the model's (`ifw bench` without --audio). A
// model folder gives the tokenizer and generation settings (any of the architecture's family:
// the weights are not used).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "engine/benchmark.hpp"

namespace ifw::pipeline {

struct TranscriptionBenchmarkOptions {
  // arch, device, precision, threads; batch: windows decoded together; tokens: the most decoded
  // per window (random weights seldom end a window earlier).
  engine::BenchmarkOptions model;
  std::vector<std::string> audio;
  std::filesystem::path tokenizer_folder;
  std::optional<bool> prepare_ahead;  // unset: the transcriber's default for the device
};

struct TranscriptionBenchmarkResult {
  std::string backend;
  int files = 0;
  int failed = 0;
  double audio_seconds = 0.0;
  double wall_ms = 0.0;  // the transcriber's run, the model loaded
  double rtfx = 0.0;     // audio seconds per wall second
  std::int64_t segments = 0;
  std::int64_t tokens = 0;
  std::int64_t windows_read_ahead = 0;
  std::int64_t most_windows_ahead = 0;
  double waited_for_windows_ahead_ms = 0.0;
};

// Throws ifw::Error for bad options (no audio, a folder that is not a model folder, a tokenizer
// whose vocabulary does not match the architecture).
TranscriptionBenchmarkResult run_transcription_benchmark(const TranscriptionBenchmarkOptions& o);
std::string transcription_benchmark_text(const TranscriptionBenchmarkOptions& o,
                                         const TranscriptionBenchmarkResult& r);
std::string transcription_benchmark_json(const TranscriptionBenchmarkOptions& o,
                                         const TranscriptionBenchmarkResult& r);

}  // namespace ifw::pipeline
