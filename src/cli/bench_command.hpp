// `ifw bench`: its options, shared by the `ifw` command and `ifw-bench`, the engine-only program
// built for GPU hosts that have no FFmpeg or HTTP libraries.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "engine/benchmark.hpp"

namespace ifw::cli {

struct BenchArgs {
  engine::BenchmarkOptions options;
  bool json = false;
  bool ops = false;  // the model's operations one by one (engine/ops_benchmark.hpp)
  // Whole transcriptions of these files instead (pipeline/transcription_benchmark.hpp).
  std::vector<std::string> audio;
  std::string tokenizer;               // a model folder: its tokenizer and generation settings
  std::string prepare_ahead = "auto";  // auto, on, off
};

void add_bench_options(CLI::App& command, BenchArgs& args);
// Runs the benchmark and prints its figures; returns the exit code.
int run_bench(const BenchArgs& args);

}  // namespace ifw::cli
