// `ifw bench --ops`: the model's operations one by one at an architecture's real shapes (one
// layer's, `batch` windows), each timed alone with the rate it reaches (TFLOP/s for products and
// encoder attention, GB/s for what only moves memory). The whole-model figures of `ifw bench`
// say how fast; these say where the time goes and how near each kernel is to the device's
// limits, without a profiler (whisper.cpp's bench has its memcpy and mul_mat modes for this).
#pragma once

#include <string>
#include <vector>

#include "engine/benchmark.hpp"

namespace ifw::engine {

struct OpTiming {
  std::string name;
  std::string shape;       // what one call computes, in words
  double ms_per_call = 0;  // best of the repetitions
  // One call's share of a window (the encoder's calls, every layer, and what a window's decoding
  // computes once) or of a decoder step (every layer's calls); 0 where neither applies (a row
  // for comparison).
  double ms_per_window = 0, ms_per_step = 0;
  double rate = 0;   // in `unit`
  std::string unit;  // "TFLOP/s" or "GB/s"
};

struct OpsBenchmarkResult {
  BenchmarkOptions options;
  std::string backend;
  std::vector<OpTiming> ops;
};

// Uses options.arch, device, precision, threads, batch and repetitions (tokens: the decoder's
// self-attention sees half of them as its context).
OpsBenchmarkResult run_ops_benchmark(const BenchmarkOptions& options);
std::string ops_benchmark_text(const OpsBenchmarkResult& result);
std::string ops_benchmark_json(const OpsBenchmarkResult& result);

}  // namespace ifw::engine
