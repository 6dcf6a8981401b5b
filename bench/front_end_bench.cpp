// Throughput of the parts of the front end that run once per window, file or model load:
// log-mel features, decoding a file's audio, tokenizer encode/decode, reading a model folder.
//   build/release/bench/ifw_front_end_bench [--benchmark_filter=...]
// Model benchmarks use $IFW_GOLDEN_DIR (default ../shared/golden) and are skipped without it.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numbers>
#include <string>

#include <benchmark/benchmark.h>

#include <ifw/audio.hpp>

#include "audio/audio_decoder.hpp"
#include "audio/read_ahead.hpp"
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

// A podcast-like file to decode: $IFW_BENCH_AUDIO, else ten minutes of MP3 (44.1 kHz stereo,
// 128 kb/s: a tone under noise) made once by the ffmpeg program in the temporary folder.
std::string bench_audio() {
  if (const char* env = std::getenv("IFW_BENCH_AUDIO"); env != nullptr && *env != '\0') return env;
  const auto path = std::filesystem::temp_directory_path() / "ifw_front_end_bench_600s.mp3";
  if (!std::filesystem::exists(path)) {
    const std::string command =
        "ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=frequency=330:duration=600 -f lavfi "
        "-i anoisesrc=color=pink:amplitude=0.2:duration=600 -filter_complex amix=inputs=2 -ar "
        "44100 -ac 2 -c:a libmp3lame -b:a 128k '" +
        path.string() + ".tmp.mp3' && mv '" + path.string() + ".tmp.mp3' '" + path.string() + "'";
    if (std::system(command.c_str()) != 0) return {};
  }
  return path.string();
}

// Decoding a whole file to 16 kHz mono: by one decoder in the calling thread (argument 0), or
// read ahead by that many threads (segments of a minute decoded at once). Wall time.
void BM_DecodeFile(benchmark::State& state) {
  const std::string file = bench_audio();
  if (file.empty()) {
    state.SkipWithError("no audio file: set IFW_BENCH_AUDIO or install the ffmpeg program");
    return;
  }
  const int threads = static_cast<int>(state.range(0));
  std::vector<float> piece(ifw::kWindowSamples);
  double seconds = 0.0;
  for (auto _ : state) {
    std::size_t samples = 0;
    auto decoder = std::make_unique<ifw::audio::AudioDecoder>(file);
    if (threads == 0) {
      while (const std::size_t n = decoder->read(piece))
        samples += n;
    } else {
      ifw::audio::ReadAhead reader(std::move(decoder), {.threads = threads});
      while (const std::size_t n = reader.read(piece))
        samples += n;
    }
    seconds = static_cast<double>(samples) / ifw::kSampleRate;
  }
  state.counters["audio_s/s"] = benchmark::Counter(
      seconds * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeFile)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Arg(4)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

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
