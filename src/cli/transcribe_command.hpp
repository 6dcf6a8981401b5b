// `ifw transcribe` and `ifw translate`: files in, transcripts and subtitles out.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace ifw::cli {

struct TranscribeArgs {
  std::vector<std::string> files;
  std::string model;
  std::string revision = "main";
  std::string language;
  std::string timestamps = "segment";
  std::string formats = "all";
  std::string output_dir = ".";
  int batch_size = 0;  // 0: chosen from the memory available
  int threads = 0;
  int decode_threads = 0;  // 0: chosen from the device
  std::string device = "auto";
  std::string precision = "auto";
  std::string prompt;
  double temperature = 0.0;
  double temperature_increment = -1.0;  // below 0: 0.2 for sequential, 0 (no fallback) for batched
  int best_of = 5;
  double compression_ratio_threshold = 2.4;
  std::string strategy = "batched";
  bool vad = false;
  bool no_condition_on_previous_text = false;
  int max_new_tokens = 224;
  double no_speech_threshold = 0.6;
  double logprob_threshold = -1.0;
  std::string subtitles = "readable";
  std::string progress = "auto";
  bool quiet = false;
};

// Adds the subcommand's options to `command`, filling `args`.
void add_transcribe_options(CLI::App& command, TranscribeArgs& args);

// Runs it; returns the process exit code: 0 done, 1 a file failed (the others are done),
// 2 usage, 130 cancelled by a signal.
int run_transcribe(const TranscribeArgs& args, const std::string& task);

}  // namespace ifw::cli
