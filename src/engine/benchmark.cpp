#include "engine/benchmark.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "backend/cuda_module.hpp"
#include "backend/device_selection.hpp"
#include "backend/devices.hpp"
#include "engine/timing.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"

namespace ifw::engine {
namespace {

using Clock = std::chrono::steady_clock;

// Best of `repetitions` timed runs after one warm-up run.
double best_ms(int repetitions, const std::function<void()>& run) {
  run();
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < repetitions; ++i) {
    const auto start = Clock::now();
    run();
    best = std::min(best, ms_since(start));
  }
  return best;
}

// What a transcription's greedy steps apply, in the form the backend takes (token flags and
// per-row rules): suppressed tokens and Whisper's timestamp rules, with the token ids of the
// architecture's vocabulary. The choice itself is ignored (the benchmark feeds fixed tokens).
struct StepRules {
  std::vector<std::uint8_t> flags;
  backend::RowRules row;
};
StepRules transcription_rules(const model::WhisperConfig& config) {
  StepRules r;
  const int vocab = config.vocab_size;
  const int timestamp_begin = vocab - 1501;  // <|0.00|> .. <|30.00|> end the vocabulary
  const int end_of_text = vocab >= 51865 ? 50257 : 50256;
  r.flags.assign(static_cast<std::size_t>(vocab), 0);
  for (const int t :
       {1,  2,  7,  8,  9,  10, 14,  25,  26,  27,  28,  29,  31,  58,  59,  60,  61,
        62, 63, 90, 91, 92, 93, 359, 503, 522, 542, 873, 893, 902, 918, 922, 931, 1350})
    r.flags[static_cast<std::size_t>(t)] = backend::kTokenForbidden;
  r.flags[static_cast<std::size_t>(end_of_text)] |= backend::kTokenForbiddenFirst;
  // After "<|0.00|> text": <|notimestamps|> and timestamps before the last one are forbidden,
  // and the timestamps vote against the text.
  r.row.timestamp_vote = 1;
  r.row.timestamp_begin = timestamp_begin;
  r.row.ranges = 2;
  r.row.forbidden[0][0] = timestamp_begin - 1;
  r.row.forbidden[0][1] = timestamp_begin;
  r.row.forbidden[1][0] = timestamp_begin;
  r.row.forbidden[1][1] = timestamp_begin + 1;
  return r;
}

// ms per decoder step for `batch` sequences: after a 4-token prompt, `steps` single tokens. With
// `choose`, each step's next tokens are chosen under a transcription's rules where the logits
// are (what greedy decoding does); without, the logits come to the host (the forward pass alone,
// as whisper.cpp's bench measures it).
double decode_step_ms(const WhisperModel& model, const backend::Tensor& states, int batch,
                      int steps, int repetitions, bool choose) {
  const StepRules rules = transcription_rules(model.config());
  const std::vector<backend::RowRules> row_rules(static_cast<std::size_t>(batch), rules.row);
  const int prompt_len = 4;
  steps = std::min(steps, model.config().max_target_positions - prompt_len);
  std::vector<int> items(static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b)
    items[static_cast<std::size_t>(b)] = b;
  const backend::Tensor batch_states =
      states.dim(0) == batch ? states
                             : states.rows(0, std::min<std::int64_t>(batch, states.dim(0)));
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions + 1; ++r) {
    DecoderSession session(model, batch_states);
    std::vector<TokenId> prompt;
    for (int b = 0; b < batch; ++b)
      prompt.insert(prompt.end(), {50258, 50259, 50359, 50363});
    session.forward(prompt, prompt_len, items, LogitRows::kLast);
    std::vector<TokenId> step(static_cast<std::size_t>(batch), 440);
    const auto start = Clock::now();
    for (int s = 0; s < steps; ++s) {
      if (choose) {
        session.choose(step, items, rules.flags, row_rules);
      } else {
        session.forward(step, 1, items, LogitRows::kLast);
      }
    }
    if (r > 0) best = std::min(best, ms_since(start) / steps);  // the first run warms up
  }
  return best;
}

// ms per decoded token for `batch` windows that end one by one, as a transcription's do: window b
// takes `tokens` x (b + 1) / batch tokens (at least one), the steps shrink with the windows still
// going, and each step's tokens are chosen under a transcription's rules. What a fixed batch
// (decode_step_ms) leaves out: steps of every row count from `batch` down to 1. With CUDA graphs
// the untimed first run records each count and the timed runs replay them (the model keeps them
// from session to session): a long transcription's steady state.
double shrinking_decode_ms_per_token(const WhisperModel& model, const backend::Tensor& states,
                                     int batch, int tokens, int repetitions) {
  const StepRules rules = transcription_rules(model.config());
  const int prompt_len = 4;
  tokens = std::min(tokens, model.config().max_target_positions - prompt_len);
  std::vector<int> length(static_cast<std::size_t>(batch));
  std::int64_t decoded = 0;
  for (int b = 0; b < batch; ++b) {
    length[static_cast<std::size_t>(b)] = std::max(1, tokens * (b + 1) / batch);
    decoded += length[static_cast<std::size_t>(b)];
  }
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions + 1; ++r) {
    DecoderSession session(model, states.rows(0, batch));
    std::vector<int> active(static_cast<std::size_t>(batch));
    std::vector<TokenId> prompt;
    for (int b = 0; b < batch; ++b) {
      active[static_cast<std::size_t>(b)] = b;
      prompt.insert(prompt.end(), {50258, 50259, 50359, 50363});
    }
    session.forward(prompt, prompt_len, active, LogitRows::kLast);
    const auto start = Clock::now();
    for (int s = 0; !active.empty(); ++s) {
      const std::vector<TokenId> step(active.size(), 440);
      const std::vector<backend::RowRules> row_rules(active.size(), rules.row);
      session.choose(step, active, rules.flags, row_rules);
      std::erase_if(active, [&](int b) { return length[static_cast<std::size_t>(b)] <= s + 1; });
    }
    if (r > 0) best = std::min(best, ms_since(start) / static_cast<double>(decoded));
  }
  return best;
}

}  // namespace

void check_benchmark_options(const BenchmarkOptions& options) {
  if (options.batch < 1 || options.batch > 256 || options.tokens < 1 || options.repetitions < 1) {
    throw Error(ErrorKind::kInvalidArgument,
                "bench: batch must be 1 to 256, tokens and repetitions at least 1");
  }
}

BenchmarkResult run_benchmark(const BenchmarkOptions& options) {
  check_benchmark_options(options);
  BenchmarkResult result;
  result.options = options;
  const model::WhisperConfig config = published_architecture(options.arch);
  const backend::DeviceSpec spec = backend::parse_device(options.device);
  auto backend =
      backend::make_backend(spec, backend::parse_precision(options.precision), options.threads);
  result.backend = backend->description();
  result.step_graphs = backend->make_step_graph() != nullptr;
  const bool gpu = backend->device() == backend::Device::kCuda;
  const int gpu_index = spec.automatic ? 0 : spec.index;
  const auto used_mib = [&] {
    const backend::DeviceMemory m = backend::device_memory(gpu_index);
    return static_cast<double>(m.total - m.free) / (1024.0 * 1024.0);
  };
  if (gpu) result.device_mib_before = used_mib();

  auto start = Clock::now();
  RandomWeights weights(42);
  auto model = std::make_unique<WhisperModel>(config, weights, *backend);
  backend->synchronize();
  result.load_ms = ms_since(start);
  if (gpu) result.device_mib_loaded = used_mib();
  backend->profile_section("loading the model");

  // A plausible log-mel window: values in Whisper's normalised range.
  // In the backend's memory for uploads, as a transcription's features are.
  backend::HostBuffer mel_buffer =
      backend->host_buffer(static_cast<std::size_t>(options.batch) *
                           static_cast<std::size_t>(config.num_mel_bins) * kFramesPerWindow);
  const std::span<float> mel = mel_buffer.values();
  std::uint32_t x = 12345;
  for (float& v : mel) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<float>(x >> 8) / 16777216.0f * 2.0f - 1.0f;
  }
  backend::Tensor states;
  result.encoder_ms = best_ms(options.repetitions,
                              [&] {
                                states = model->encode(mel, options.batch);
                                backend->synchronize();
                              }) /
                      options.batch;
  backend->profile_section(
      fmt::format("the encoder ({} runs of {} windows)", options.repetitions + 1, options.batch));
  // The decoder's cost does not depend on what the states hold: repeat the first window's.
  const int decode_batch = std::max(options.batch, 5);
  if (states.dim(0) < decode_batch) {
    std::vector<float> one(static_cast<std::size_t>(states.numel() / states.dim(0)));
    backend->download(states.rows(0, 1), one);
    std::vector<float> repeated;
    for (int b = 0; b < decode_batch; ++b)
      repeated.insert(repeated.end(), one.begin(), one.end());
    states =
        backend->upload(repeated, {decode_batch, states.dim(1), states.dim(2)}, states.dtype());
  }

  backend->profile_section("the encoder's states repeated for the decoder's batches");
  // On the CPU the per-token cost barely depends on the position, so 64 steps stand for all; a
  // GPU step is short enough to run every one.
  const int steps = gpu ? options.tokens : std::min(options.tokens, 64);
  result.decode_ms_per_token = decode_step_ms(*model, states, 1, steps, options.repetitions, false);
  result.decode_ms_per_token_batch5 =
      decode_step_ms(*model, states, 5, steps, options.repetitions, false) / 5.0;
  backend->profile_section("decoding at batch 1 and 5");
  const std::uint64_t launched = backend::cuda_step_graph_launches();
  result.decode_ms_per_step =
      decode_step_ms(*model, states, options.batch, steps, options.repetitions, true);
  result.graph_launches = backend::cuda_step_graph_launches() - launched;
  backend->profile_section(fmt::format("{} runs of the steps of {} sequences, tokens chosen",
                                       options.repetitions + 1, options.batch));
  result.decode_ms_per_token_shrinking =
      shrinking_decode_ms_per_token(*model, states, options.batch, steps, options.repetitions);
  backend->profile_section("the batch's windows ending one by one");
  if (gpu) {
    result.device_mib_peak = used_mib();
    states = {};
    mel_buffer = {};  // its memory keeps the device's context
    model.reset();
    backend->release_cached_memory();
    backend.reset();
    result.device_mib_after = used_mib();
  }

  const double seconds =
      (result.encoder_ms * options.batch + result.decode_ms_per_step * options.tokens) / 1000.0;
  result.rtfx = options.batch * static_cast<double>(kWindowSeconds) / seconds;
  return result;
}

std::string benchmark_text(const BenchmarkResult& r) {
  return fmt::format(
      "arch        {} ({} backend: {})\n"
      "load        {:.0f} ms (random weights)\n"
      "encoder     {:.1f} ms per 30 s window (batch {})\n"
      "decoder     {:.2f} ms per token at batch 1, {:.2f} ms per token at batch 5\n"
      "            {:.2f} ms per step of {} sequences, tokens chosen{}\n"
      "            {:.3f} ms per token when they end one by one ({:.3f} at the full batch)\n"
      "throughput  {:.1f}x realtime ({} windows of {} tokens)\n{}",
      r.options.arch, r.options.device, r.backend, r.load_ms, r.encoder_ms, r.options.batch,
      r.decode_ms_per_token, r.decode_ms_per_token_batch5, r.decode_ms_per_step, r.options.batch,
      !r.step_graphs ? std::string()
      : r.graph_launches > 0
          ? fmt::format(" (steps replayed from CUDA graphs: {} launches)", r.graph_launches)
          : std::string(" (CUDA graphs asked for, none launched: steps issued one by one)"),
      r.decode_ms_per_token_shrinking, r.decode_ms_per_step / r.options.batch, r.rtfx,
      r.options.batch, r.options.tokens,
      r.device_mib_loaded > 0.0
          ? fmt::format("gpu memory  {:.0f} MiB in use before, {:.0f} loaded, {:.0f} at the peak, "
                        "{:.0f} after release\n",
                        r.device_mib_before, r.device_mib_loaded, r.device_mib_peak,
                        r.device_mib_after)
          : std::string());
}

std::string benchmark_json(const BenchmarkResult& r) {
  const nlohmann::ordered_json j = {
      {"arch", r.options.arch},
      {"device", r.options.device},
      {"backend", r.backend},
      {"threads", r.options.threads},
      {"batch", r.options.batch},
      {"tokens", r.options.tokens},
      {"load_ms", r.load_ms},
      {"encoder_ms", r.encoder_ms},
      {"decode_ms_per_token", r.decode_ms_per_token},
      {"decode_ms_per_token_batch5", r.decode_ms_per_token_batch5},
      {"decode_ms_per_step", r.decode_ms_per_step},
      {"decode_ms_per_token_shrinking", r.decode_ms_per_token_shrinking},
      {"rtfx", r.rtfx},
      {"step_graphs", r.step_graphs},
      {"graph_launches", r.graph_launches},
      {"precision", r.options.precision},
      {"device_mib_before", r.device_mib_before},
      {"device_mib_loaded", r.device_mib_loaded},
      {"device_mib_peak", r.device_mib_peak},
      {"device_mib_after", r.device_mib_after},
  };
  return j.dump(2) + "\n";
}

}  // namespace ifw::engine
