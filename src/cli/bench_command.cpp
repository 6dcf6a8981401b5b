#include "cli/bench_command.hpp"

#include <iostream>

#include "engine/ops_benchmark.hpp"
#include "engine/weight_source.hpp"
#include "pipeline/transcription_benchmark.hpp"

namespace ifw::cli {

void add_bench_options(CLI::App& c, BenchArgs& a) {
  engine::BenchmarkOptions& o = a.options;
  c.add_option("--arch", o.arch, "Architecture")
      ->check(CLI::IsMember(engine::published_architecture_names()))
      ->capture_default_str();
  c.add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  c.add_option("--precision", o.precision, "auto (fp16 on a GPU), fp32, fp16 or bf16")
      ->check(CLI::IsMember({"auto", "fp32", "fp16", "bf16"}))
      ->capture_default_str();
  c.add_option("--threads", o.threads, "CPU threads (0: one per usable core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  c.add_option("--batch", o.batch, "Windows processed together")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  c.add_option("--tokens", o.tokens, "Decoded tokens per window")
      ->check(CLI::Range(1, 440))
      ->capture_default_str();
  c.add_option("--repetitions", o.repetitions, "Timed runs (the best counts)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  c.add_flag("--json", a.json, "Print the figures as JSON");
  CLI::Option* ops =
      c.add_flag("--ops", a.ops,
                 "Time the model's operations one by one instead, at one layer's shapes, with the "
                 "rate each reaches (where the time goes)");
  c.add_option("--audio", a.audio,
               "Transcribe these files instead (random weights of --arch; needs --tokenizer): "
               "the whole pipeline's speed")
      ->check(CLI::ExistingFile)
      ->excludes(ops);
  c.add_option("--tokenizer", a.tokenizer,
               "With --audio: a model folder whose tokenizer and generation settings are used")
      ->check(CLI::ExistingDirectory)
      ->excludes(ops);
  c.add_option("--prepare-ahead", a.prepare_ahead,
               "With --audio: prepare the next batch's windows while a batch runs")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str()
      ->excludes(ops);
}

int run_bench(const BenchArgs& a) {
  if (!a.audio.empty() || !a.tokenizer.empty()) {
    pipeline::TranscriptionBenchmarkOptions o;
    o.model = a.options;
    o.audio = a.audio;
    o.tokenizer_folder = a.tokenizer;
    if (a.prepare_ahead != "auto") o.prepare_ahead = a.prepare_ahead == "on";
    const auto r = pipeline::run_transcription_benchmark(o);
    std::cout << (a.json ? pipeline::transcription_benchmark_json(o, r)
                         : pipeline::transcription_benchmark_text(o, r));
    return r.failed == 0 ? 0 : 1;
  }
  if (a.ops) {
    const auto result = engine::run_ops_benchmark(a.options);
    std::cout << (a.json ? engine::ops_benchmark_json(result) : engine::ops_benchmark_text(result));
    return 0;
  }
  const auto result = engine::run_benchmark(a.options);
  std::cout << (a.json ? engine::benchmark_json(result) : engine::benchmark_text(result));
  return 0;
}

}  // namespace ifw::cli
