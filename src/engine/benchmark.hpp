// `ifw bench`: speed of the encoder and decoder of a published architecture with random
// weights (nothing to download), measured the way whisper.cpp's bench measures.
#pragma once

#include <cstdint>
#include <string>

namespace ifw::engine {

struct BenchmarkOptions {
  std::string arch = "tiny";
  std::string device = "cpu";      // cpu, cuda or cuda:N (auto: the GPU when there is one)
  std::string precision = "auto";  // fp32, fp16, bf16 (auto: fp16 on a GPU, fp32 on the CPU)
  int threads = 0;                 // 0: one per core
  int batch = 1;                   // windows encoded and decoded together
  int tokens = 100;                // decoder steps per window
  int repetitions = 3;             // best of, after one warm-up
};

struct BenchmarkResult {
  BenchmarkOptions options;
  std::string backend;
  double load_ms = 0.0;
  double encoder_ms = 0.0;  // per 30 s window, at options.batch
  // The forward pass with logits to the host (as whisper.cpp's bench):
  double decode_ms_per_token = 0.0;         // batch 1
  double decode_ms_per_token_batch5 = 0.0;  // per token, 5 sequences decoded together
  // A greedy step of options.batch sequences, tokens chosen under a transcription's rules
  // (suppressed tokens, timestamp rules) where the logits are:
  double decode_ms_per_step = 0.0;
  // Per decoded token, when the batch's windows end one by one (between 1/batch and all of
  // `tokens` tokens), as a transcription's do: steps of every row count.
  double decode_ms_per_token_shrinking = 0.0;
  double rtfx = 0.0;         // audio seconds per wall second: batch windows, `tokens` tokens each
  bool step_graphs = false;  // decoder steps replayed from recorded graphs (off: IFW_CUDA_GRAPHS=0)
  // Graphs launched during the batched steps: none although asked for means every recording was
  // dropped (logged) and the steps were issued one by one.
  std::uint64_t graph_launches = 0;
  // GPU only: device memory in use (MiB) before the model loaded, with it loaded, at the peak
  // of the run (what the pool holds), and after the model and its buffers were released.
  double device_mib_before = 0.0, device_mib_loaded = 0.0, device_mib_peak = 0.0,
         device_mib_after = 0.0;
};

// Throws ifw::Error (kInvalidArgument) for a batch outside 1-256 or no tokens or repetitions.
void check_benchmark_options(const BenchmarkOptions& options);
BenchmarkResult run_benchmark(const BenchmarkOptions& options);
std::string benchmark_text(const BenchmarkResult& result);
std::string benchmark_json(const BenchmarkResult& result);

}  // namespace ifw::engine
