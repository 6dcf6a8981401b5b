#include "engine/ops_benchmark.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <ifw/audio.hpp>

#include "backend/device_selection.hpp"
#include "backend/dtype.hpp"
#include "engine/timing.hpp"
#include "engine/weight_source.hpp"

namespace ifw::engine {
namespace {

using backend::Activation;
using backend::Backend;
using backend::DType;
using backend::MatrixRef;
using backend::Tensor;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kPositions = kFramesPerWindow / 2;  // the encoder's 1500
constexpr float kLayerNormEps = 1e-5f;

// Reproducible values in [-scale, scale).
std::vector<float> random_values(std::int64_t count, std::uint32_t seed, float scale) {
  std::vector<float> v(static_cast<std::size_t>(count));
  std::uint32_t x = seed * 2654435761u + 12345u;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = (static_cast<float>(x >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  return v;
}

// A [rows, width] tensor of random values: `block` rows uploaded, then repeated on the device (a
// batch's worth of inputs without a batch's worth of host memory and upload time).
Tensor random_rows(Backend& be, std::int64_t rows, std::int64_t width, std::int64_t block,
                   DType dtype, std::uint32_t seed, float scale = 1.0f) {
  block = std::min(block, rows);
  Tensor one = be.upload(random_values(block * width, seed, scale), {block, width}, dtype);
  if (block == rows) return one;
  std::vector<std::int64_t> index(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i)
    index[static_cast<std::size_t>(i)] = i % block;
  Tensor all = be.empty({rows, width}, dtype);
  be.gather_rows(one, index, all);
  return all;
}

// What the model's attention calls share: `batch` items of `query_len` queries, each item's keys
// (and values) a block of `key_block` rows of which the first `length` count, heads of `hd`, the
// query bias added as the queries are read.
backend::AttentionArgs attention_args(MatrixRef q, MatrixRef k, MatrixRef v, const Tensor& out,
                                      std::int64_t batch, int heads, int hd, int query_len,
                                      std::int64_t key_block, int length, const Tensor& q_bias) {
  backend::AttentionArgs a;
  a.q = std::move(q);
  a.k = std::move(k);
  a.v = std::move(v);
  a.out = whole(out);
  a.batch = static_cast<int>(batch);
  a.heads = heads;
  a.head_dim = hd;
  a.query_len = query_len;
  a.key_block = key_block;
  a.key_lengths.assign(static_cast<std::size_t>(batch), length);
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.q_bias = &q_bias;
  return a;
}

// ms per call of `op`: after a warm-up call, calls in groups that take about 50 ms (at least
// one call), each group timed from its first call to the device's end of its last; the best
// group of `repetitions`.
double ms_per_call(Backend& be, int repetitions, const std::function<void()>& op) {
  op();
  be.synchronize();
  auto start = Clock::now();
  op();
  be.synchronize();
  const double one = std::max(ms_since(start), 1e-3);
  const int calls = std::clamp(static_cast<int>(50.0 / one), 1, 1000);
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    start = Clock::now();
    for (int c = 0; c < calls; ++c)
      op();
    be.synchronize();
    best = std::min(best, ms_since(start) / calls);
  }
  return best;
}

class OpsRun {
 public:
  OpsRun(Backend& be, const model::WhisperConfig& config, const BenchmarkOptions& options)
      : be_(be),
        c_(config),
        o_(options),
        act_(be.activation_dtype()),
        weights_(be.weight_dtype()),
        act_bytes_(static_cast<double>(backend::dtype_size(act_))),
        weight_bytes_(static_cast<double>(backend::dtype_size(weights_))) {}

  std::vector<OpTiming> run() {
    encoder();
    decoder();
    return std::move(ops_);
  }

 private:
  // Records a timing: `per_window` calls per encoder window or `per_step` per decoder step
  // (every layer's), and `amount` (FLOP or bytes per call) for the rate.
  void record(std::string name, std::string shape, const std::function<void()>& op,
              double per_window, double per_step, double amount, bool flops) {
    OpTiming t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.ms_per_call = ms_per_call(be_, o_.repetitions, op);
    t.ms_per_window = t.ms_per_call * per_window;
    t.ms_per_step = t.ms_per_call * per_step;
    t.unit = flops ? "TFLOP/s" : "GB/s";
    t.rate = amount / (t.ms_per_call * 1e-3) / (flops ? 1e12 : 1e9);
    ops_.push_back(std::move(t));
  }

  // A decoding step reads every layer's weights and every window's keys and values once (large-v3
  // at batch 64: ~17 GB), so nothing an operation reads is still cached when the next step comes.
  // A decoder operation's operands are therefore copied until the copies pass kColdBytes, and its
  // calls cycle through them: each call reads from memory, not from a cache its last call filled.
  static constexpr double kColdBytes = 128e6;  // over twice an H100's L2 (50 MB)
  static int cold_copies(double bytes) {
    return std::clamp(static_cast<int>(std::ceil(kColdBytes / std::max(bytes, 1.0))), 1, 32);
  }
  // cold_copies of a weight matrix (the same values at different addresses).
  std::vector<Tensor> cold_weights(std::int64_t out, std::int64_t in, std::uint32_t seed) {
    std::vector<Tensor> all{weight(out, in, seed)};
    const int copies = cold_copies(static_cast<double>(all.front().bytes()));
    std::vector<std::int64_t> index(static_cast<std::size_t>(out));
    for (std::int64_t i = 0; i < out; ++i)
      index[static_cast<std::size_t>(i)] = i;
    for (int c = 1; c < copies; ++c) {
      Tensor copy = be_.empty({out, in}, weights_);
      be_.gather_rows(all.front(), index, copy);
      all.push_back(std::move(copy));
    }
    return all;
  }

  Tensor weight(std::int64_t out, std::int64_t in, std::uint32_t seed) {
    // Small enough that sums over `in` stay in half precision's range.
    return be_.upload(random_values(out * in, seed, 1.0f / std::sqrt(static_cast<float>(in))),
                      {out, in}, weights_);
  }
  Tensor row(std::int64_t width, std::uint32_t seed, float scale) {
    return be_.upload(random_values(width, seed, scale), {width});
  }

  // A product from[rows, in] . w[out, in]^T into `to` (added to it with `accumulate`; then
  // `bias` and `act` where given), recorded as `share` calls per window - an encoder-sized
  // product, rated in TFLOP/s - or, with `step`, per decoder step: rated by the weights it reads,
  // from cold copies.
  void product(std::string name, std::int64_t out, std::int64_t in, const Tensor& from,
               const Tensor& to, bool accumulate, std::uint32_t seed, double share, bool step,
               const Tensor* bias = nullptr, Activation act = Activation::kNone) {
    const std::int64_t rows = from.dim(0);
    const std::vector<Tensor> ws =
        step ? cold_weights(out, in, seed) : std::vector<Tensor>{weight(out, in, seed)};
    std::size_t next = 0;
    const char* into = accumulate                                         ? ", added to float32"
                       : to.dtype() == DType::kF32 && act_ != DType::kF32 ? ", float32 out"
                                                                          : "";
    record(
        std::move(name), fmt::format("{} x {} . {} x {}{}", rows, in, in, out, into),
        [&] {
          be_.linear(whole(from), ws[next++ % ws.size()], bias, act, whole(to), rows, accumulate);
        },
        step ? 0 : share, step ? share : 0,
        step ? static_cast<double>(out * in) * weight_bytes_
             : 2.0 * static_cast<double>(rows * in * out),
        !step);
  }

  // `copies` of decoding attention `a`, each over its own a.batch items of a cache that holds
  // copies x a.batch (cold_copies), to be called in turn.
  template <typename Args>
  static std::vector<Args> cycled(const Args& a, int copies) {
    std::vector<Args> calls(static_cast<std::size_t>(copies), a);
    for (int c = 0; c < copies; ++c) {
      for (int& item : calls[static_cast<std::size_t>(c)].item_index)
        item += c * a.batch;
    }
    return calls;
  }

  void encoder() {
    const std::int64_t batch = o_.batch, d = c_.d_model, ffn = c_.encoder_ffn_dim;
    const std::int64_t rows = batch * kPositions;
    const int heads = c_.encoder_attention_heads, hd = c_.encoder_head_dim();
    const double layers = c_.encoder_layers, b = static_cast<double>(batch);
    const std::string positions = fmt::format("{} x {}", rows, d);

    {
      // From the backend's memory for uploads, as a transcription's features are.
      const std::vector<float> values =
          random_values(batch * c_.num_mel_bins * kFramesPerWindow, 1, 1);
      backend::HostBuffer buffer = be_.host_buffer(values.size());
      std::copy(values.begin(), values.end(), buffer.values().begin());
      const std::span<const float> mel = buffer.values();
      record(
          "log-mel upload (host to device)",
          fmt::format("{} x {} x {} float32", batch, c_.num_mel_bins, kFramesPerWindow),
          [&] {
            (void)be_.upload(mel, {batch, c_.num_mel_bins, kFramesPerWindow});
          },
          1.0 / b, 0, static_cast<double>(mel.size() * sizeof(float)), false);
    }

    Tensor x = random_rows(be_, rows, d, kPositions, DType::kF32, 2);
    const Tensor shift = row(d, 3, 0.1f), gamma = row(d, 4, 1.0f), beta = row(d, 5, 0.1f);
    Tensor normed = be_.empty({rows, d}, act_);
    record(
        "encoder layer norm", positions + ", float32 in",
        [&] { be_.layer_norm(x, &shift, gamma, beta, kLayerNormEps, normed); }, 2 * layers / b, 0,
        static_cast<double>(rows * d) * (4.0 + act_bytes_), false);

    {
      Tensor qkv = be_.empty({rows, 3 * d}, act_);
      product("encoder q|k|v product", 3 * d, d, normed, qkv, false, 6, layers / b, false);
    }

    Tensor attended = be_.empty({rows, d}, act_);
    {
      const Tensor qkv = random_rows(be_, rows, 3 * d, kPositions, act_, 7);
      const Tensor q_bias = row(d, 8, 0.1f);
      const backend::AttentionArgs a = attention_args(
          {qkv, 0, 3 * d}, {qkv, d, 3 * d}, {qkv, 2 * d, 3 * d}, attended, batch, heads, hd,
          static_cast<int>(kPositions), kPositions, static_cast<int>(kPositions), q_bias);
      record(
          "encoder self-attention",
          fmt::format("{} x {} x {} queries and keys, {} heads of {}", batch, kPositions,
                      kPositions, heads, hd),
          [&] { be_.attention(a); }, layers / b, 0,
          4.0 * b * heads * static_cast<double>(kPositions * kPositions) * hd, true);
    }

    product("encoder output projection", d, d, attended, x, true, 9, layers / b, false);

    Tensor hidden = be_.empty({rows, ffn}, act_);
    {
      const Tensor bias = row(ffn, 11, 0.1f);
      product("encoder fc1 product + bias + GELU", ffn, d, normed, hidden, false, 10, layers / b,
              false, &bias, Activation::kGelu);
      // Not a step of the model: the same product without its bias and GELU, so that the
      // difference is what they cost.
      product("  (the product alone)", ffn, d, normed, hidden, false, 10, 0, false);
    }
    product("encoder fc2 product", d, ffn, hidden, x, true, 12, layers / b, false);
  }

  // One decoding step of `batch` sequences, operation by operation (issued one by one: a
  // recorded step replays them without the host's issuing time, which small calls include).
  void decoder() {
    const std::int64_t batch = o_.batch, d = c_.d_model, ffn = c_.decoder_ffn_dim;
    const int heads = c_.decoder_attention_heads, hd = c_.decoder_head_dim();
    const double layers = c_.decoder_layers;
    const std::int64_t max_len = c_.max_target_positions;
    // The self-attention's context: a 4-token prompt and half of the decoded tokens.
    const int context = static_cast<int>(std::min<std::int64_t>(4 + o_.tokens / 2, max_len));

    Tensor x = random_rows(be_, batch, d, batch, DType::kF32, 20);
    const Tensor shift = row(d, 21, 0.1f), gamma = row(d, 22, 1.0f), beta = row(d, 23, 0.1f);
    Tensor normed = be_.empty({batch, d}, act_);
    record(
        "decoder layer norm", fmt::format("{} x {}", batch, d),
        [&] { be_.layer_norm(x, &shift, gamma, beta, kLayerNormEps, normed); }, 0, 3 * layers,
        static_cast<double>(batch * d) * (4.0 + act_bytes_), false);

    Tensor qkv = be_.empty({batch, 3 * d}, act_);
    product("decoder q|k|v product", 3 * d, d, normed, qkv, false, 24, layers, true);

    const Tensor q_bias = row(d, 25, 0.1f);
    std::vector<int> items(static_cast<std::size_t>(batch));
    for (std::int64_t i = 0; i < batch; ++i)
      items[static_cast<std::size_t>(i)] = static_cast<int>(i);
    Tensor attended = be_.empty({batch, d}, act_);
    {
      // Cold copies: each cycle of calls reads another set of batch slots of one larger cache.
      const double read = static_cast<double>(batch * context * 2 * d) * act_bytes_;
      const int copies = cold_copies(read);
      Tensor cache = random_rows(be_, copies * batch * max_len, 2 * d, max_len, act_, 26);
      const std::vector<int> starts(static_cast<std::size_t>(batch), context - 1);
      record(
          "decoder self-attention cache write", fmt::format("{} x {}", batch, 2 * d),
          [&] {
            be_.write_rows({qkv, d, 3 * d}, static_cast<int>(batch), 1, cache, max_len, items,
                           starts);
          },
          0, layers, static_cast<double>(batch * 2 * d) * act_bytes_ * 2, false);
      backend::AttentionArgs a =
          attention_args({qkv, 0, 3 * d}, {cache, 0, 2 * d}, {cache, d, 2 * d}, attended, batch,
                         heads, hd, 1, max_len, context, q_bias);
      a.item_index = items;
      a.causal = true;
      const std::vector<backend::AttentionArgs> calls = cycled(a, copies);
      std::size_t next = 0;
      record(
          "decoder self-attention",
          fmt::format("{} rows x {} keys, {} heads of {}", batch, context, heads, hd),
          [&] { be_.attention(calls[next++ % calls.size()]); }, 0, layers, read, false);
    }

    product("decoder output projection", d, d, attended, x, true, 27, layers, true);
    Tensor q = be_.empty({batch, d}, act_);
    product("decoder cross query product", d, d, normed, q, false, 28, layers, true);
    {
      const double read = static_cast<double>(batch * kPositions * 2 * d) * act_bytes_;
      const int copies = cold_copies(read);
      const Tensor kv = random_rows(be_, copies * batch * kPositions, 2 * d, kPositions, act_, 29);
      backend::AttentionArgs a =
          attention_args(whole(q), {kv, 0, 2 * d}, {kv, d, 2 * d}, attended, batch, heads, hd, 1,
                         kPositions, static_cast<int>(kPositions), q_bias);
      a.item_index = items;
      const std::vector<backend::AttentionArgs> calls = cycled(a, copies);
      std::size_t next = 0;
      record(
          "decoder cross-attention",
          fmt::format("{} rows x {} keys, {} heads of {}", batch, kPositions, heads, hd),
          [&] { be_.attention(calls[next++ % calls.size()]); }, 0, layers, read, false);
    }
    product("decoder cross output projection", d, d, attended, x, true, 30, layers, true);
    {
      // Once per window, when its decoding starts: each layer's cross-attention keys and values.
      const std::int64_t rows = batch * kPositions;
      const Tensor states = random_rows(be_, rows, d, kPositions, act_, 35);
      Tensor kv_out = be_.empty({rows, 2 * d}, act_);
      product("decoder cross k|v product (per window)", 2 * d, d, states, kv_out, false, 36,
              layers / static_cast<double>(batch), false);
    }

    Tensor hidden = be_.empty({batch, ffn}, act_);
    {
      const Tensor bias = row(ffn, 32, 0.1f);
      product("decoder fc1 product + bias + GELU", ffn, d, normed, hidden, false, 31, layers, true,
              &bias, Activation::kGelu);
    }
    product("decoder fc2 product", d, ffn, hidden, x, true, 33, layers, true);
    {
      Tensor logits = be_.empty({batch, static_cast<std::int64_t>(c_.vocab_size)});
      product("logits product", c_.vocab_size, d, normed, logits, false, 34, 1, true);
    }
  }

  Backend& be_;
  const model::WhisperConfig& c_;
  const BenchmarkOptions& o_;
  DType act_, weights_;
  double act_bytes_, weight_bytes_;
  std::vector<OpTiming> ops_;
};

}  // namespace

OpsBenchmarkResult run_ops_benchmark(const BenchmarkOptions& options) {
  check_benchmark_options(options);
  OpsBenchmarkResult result;
  result.options = options;
  const model::WhisperConfig config = published_architecture(options.arch);
  auto backend =
      backend::make_backend(backend::parse_device(options.device),
                            backend::parse_precision(options.precision), options.threads);
  result.backend = backend->description();
  result.ops = OpsRun(*backend, config, options).run();
  return result;
}

std::string ops_benchmark_text(const OpsBenchmarkResult& r) {
  std::string text = fmt::format(
      "ops         {} ({} backend: {}), batch {}: one layer's operations, each alone and issued "
      "one by one\n"
      "{:<40} {:<52} {:>9} {:>10} {:>9} {:>16}\n",
      r.options.arch, r.options.device, r.backend, r.options.batch, "operation", "one call",
      "ms/call", "ms/window", "ms/step", "rate");
  const auto share = [](double ms) { return ms > 0 ? fmt::format("{:.3f}", ms) : std::string(); };
  double window = 0, step = 0;
  for (const OpTiming& t : r.ops) {
    text +=
        fmt::format("{:<40} {:<52} {:>9.4f} {:>10} {:>9} {:>8.4g} {:<7}\n", t.name, t.shape,
                    t.ms_per_call, share(t.ms_per_window), share(t.ms_per_step), t.rate, t.unit);
    window += t.ms_per_window;
    step += t.ms_per_step;
  }
  text += fmt::format(
      "{:<40} {:<52} {:>9} {:>10.3f} {:>9.3f}\n"
      "(ms/window: the calls of every layer per 30 s window, the encoder's and those a window's\n"
      "decoding makes once; ms/step: a decoding step's, every layer; the totals leave out what\n"
      "the model does besides these)\n",
      "total", "", "", window, step);
  return text;
}

std::string ops_benchmark_json(const OpsBenchmarkResult& r) {
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  for (const OpTiming& t : r.ops) {
    ops.push_back({{"name", t.name},
                   {"shape", t.shape},
                   {"ms_per_call", t.ms_per_call},
                   {"ms_per_window", t.ms_per_window},
                   {"ms_per_step", t.ms_per_step},
                   {"rate", t.rate},
                   {"unit", t.unit}});
  }
  const nlohmann::ordered_json j = {
      {"arch", r.options.arch},   {"device", r.options.device},       {"backend", r.backend},
      {"batch", r.options.batch}, {"precision", r.options.precision}, {"ops", ops}};
  return j.dump(2) + "\n";
}

}  // namespace ifw::engine
