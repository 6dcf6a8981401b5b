// Throughput of the parts of the front end that run once per window or per model load:
// log-mel features, tokenizer encode/decode, reading a model folder.
//   build/release/bench/ifw_front_end_bench [--benchmark_filter=...]
// Model benchmarks use $IFW_GOLDEN_DIR (default ../shared/golden) and are skipped without it.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numbers>

#include <benchmark/benchmark.h>

#include <ifw/audio.hpp>

#include "model/model_folder.hpp"
#include "model/tokenizer/tokenizer.hpp"

namespace {

std::filesystem::path golden_dir() {
  const char* env = std::getenv("IFW_GOLDEN_DIR");
  return env != nullptr && *env != '\0' ? env : IFW_DEFAULT_GOLDEN_DIR;
}

void BM_LogMel(benchmark::State& state) {
  const int n_mels = static_cast<int>(state.range(0));
  std::vector<float> samples(ifw::kWindowSamples);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    samples[i] = static_cast<float>(
        0.3 * std::sin(2 * std::numbers::pi * 440.0 * static_cast<double>(i) / 16000));
  }
  for (auto _ : state)
    benchmark::DoNotOptimize(ifw::log_mel_spectrogram(samples, n_mels));
  state.counters["windows/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LogMel)->Arg(80)->Arg(128)->Unit(benchmark::kMillisecond);

const ifw::model::Tokenizer* real_tokenizer() {
  static const auto tokenizer = []() -> std::unique_ptr<ifw::model::Tokenizer> {
    const auto file = golden_dir() / "models" / "tiny-random-v3" / "tokenizer.json";
    if (!std::filesystem::exists(file)) return nullptr;
    return std::make_unique<ifw::model::Tokenizer>(
        ifw::model::Tokenizer::from_tokenizer_json(file));
  }();
  return tokenizer.get();
}

std::string sample_text() {
  std::string text;
  for (int i = 0; i < 100; ++i) {
    text +=
        "And so, my fellow Americans: ask not what your country can do for you, ask what you "
        "can do for your country. 你好，世界。Привет, мир! ";
  }
  return text;
}

void BM_TokenizerEncode(benchmark::State& state) {
  const auto* tokenizer = real_tokenizer();
  if (tokenizer == nullptr) {
    state.SkipWithError("reference corpus not found");
    return;
  }
  const std::string text = sample_text();
  for (auto _ : state)
    benchmark::DoNotOptimize(tokenizer->encode(text));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_TokenizerEncode)->Unit(benchmark::kMicrosecond);

void BM_TokenizerDecode(benchmark::State& state) {
  const auto* tokenizer = real_tokenizer();
  if (tokenizer == nullptr) {
    state.SkipWithError("reference corpus not found");
    return;
  }
  const auto ids = tokenizer->encode(sample_text());
  for (auto _ : state)
    benchmark::DoNotOptimize(tokenizer->decode(ids));
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * ids.size()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizerDecode)->Unit(benchmark::kMicrosecond);

void BM_LoadModelFolder(benchmark::State& state) {
  const auto dir = golden_dir() / "models" / "tiny-random-v2";
  if (!std::filesystem::exists(dir)) {
    state.SkipWithError("reference corpus not found");
    return;
  }
  for (auto _ : state)
    benchmark::DoNotOptimize(ifw::model::ModelFolder(dir));
}
BENCHMARK(BM_LoadModelFolder)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
