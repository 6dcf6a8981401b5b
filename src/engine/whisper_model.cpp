#include "engine/whisper_model.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <mutex>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

namespace ifw::engine {
namespace {

using backend::Activation;
using backend::MatrixRef;
using backend::Shape;
using backend::Tensor;

constexpr int kEncoderPositions = kFramesPerWindow / 2;  // 1500

class Loader {
 public:
  Loader(WeightSource& source, backend::Backend& backend) : source_(source), backend_(backend) {}

  // Matrices (what products read) in the backend's weight type; biases, norms and positions,
  // which are small and added in float32, as float32.
  Tensor tensor(const std::string& name, const Shape& shape,
                backend::DType dtype = backend::DType::kF32) {
    return backend_.upload(source_.read(name, shape), shape, dtype);
  }
  Tensor matrix(const std::string& name, const Shape& shape) {
    return tensor(name, shape, backend_.weight_dtype());
  }
  Linear linear(const std::string& prefix, std::int64_t out, std::int64_t in) {
    return {matrix(prefix + ".weight", {out, in}), tensor(prefix + ".bias", {out})};
  }

  // The residual stream keeps no biases (see Norm): a product that adds into it has its bias
  // summed here instead, in the order the model runs, and each norm takes the sum so far.
  void start_residual_stream(std::int64_t d) {
    residual_bias_.assign(static_cast<std::size_t>(d), 0.0);
  }
  Norm norm(const std::string& prefix, std::int64_t d) {
    const std::vector<float> shift(residual_bias_.begin(), residual_bias_.end());
    if (static_cast<std::int64_t>(shift.size()) != d)
      throw std::logic_error("model loader: a norm outside a residual stream");
    return {tensor(prefix + ".weight", {d}), tensor(prefix + ".bias", {d}),
            backend_.upload(shift, {d})};
  }
  // A product that adds into the residual stream: its weights, its bias to the stream's sum.
  Linear residual_linear(const std::string& prefix, std::int64_t out, std::int64_t in) {
    add_residual_bias(source_.read(prefix + ".bias", {out}));
    return {matrix(prefix + ".weight", {out, in}), {}};
  }
  // See SelfAttention and CrossAttention (whisper_model.hpp): no bias on the products of q, k
  // and v; the value bias goes into the output projection's, computed in double.
  SelfAttention self_attention(const std::string& prefix, std::int64_t d) {
    const std::vector<float> w = stacked_weights(prefix, {"q_proj", "k_proj", "v_proj"}, d);
    return {backend_.upload(w, {3 * d, d}, backend_.weight_dtype()),
            tensor(prefix + ".q_proj.bias", {d}), folded_output(prefix, d)};
  }
  CrossAttention cross_attention(const std::string& prefix, std::int64_t d) {
    const std::vector<float> kv = stacked_weights(prefix, {"k_proj", "v_proj"}, d);
    return {matrix(prefix + ".q_proj.weight", {d, d}), tensor(prefix + ".q_proj.bias", {d}),
            backend_.upload(kv, {2 * d, d}, backend_.weight_dtype()), folded_output(prefix, d)};
  }

 private:
  // out_proj, which adds into the residual stream, with the value bias folded into its bias:
  // bo + Wo bv goes to the stream's sum.
  Linear folded_output(const std::string& prefix, std::int64_t d) {
    const auto bv = source_.read(prefix + ".v_proj.bias", {d});
    const auto wo = source_.read(prefix + ".out_proj.weight", {d, d});
    const auto bo = source_.read(prefix + ".out_proj.bias", {d});
    std::vector<double> bias(bo.begin(), bo.end());
    for (std::int64_t i = 0; i < d; ++i) {
      for (std::int64_t j = 0; j < d; ++j) {
        bias[static_cast<std::size_t>(i)] +=
            static_cast<double>(wo[static_cast<std::size_t>(i * d + j)]) *
            bv[static_cast<std::size_t>(j)];
      }
    }
    add_residual_bias(bias);
    return {backend_.upload(wo, {d, d}, backend_.weight_dtype()), {}};
  }
  template <typename Values>
  void add_residual_bias(const Values& bias) {
    if (bias.size() != residual_bias_.size())
      throw std::logic_error("model loader: a product outside a residual stream");
    for (std::size_t i = 0; i < bias.size(); ++i)
      residual_bias_[i] += static_cast<double>(bias[i]);
  }
  // Rows of several d x d projections stacked into one matrix.
  std::vector<float> stacked_weights(const std::string& prefix,
                                     const std::vector<std::string>& parts, std::int64_t d) {
    std::vector<float> w;
    for (const std::string& part : parts) {
      const auto pw = source_.read(prefix + "." + part + ".weight", {d, d});
      w.insert(w.end(), pw.begin(), pw.end());
    }
    return w;
  }

  WeightSource& source_;
  backend::Backend& backend_;
  std::vector<double> residual_bias_;  // the biases of the residual stream so far, summed
};

}  // namespace

WhisperModel::WhisperModel(const model::WhisperConfig& config, WeightSource& source,
                           backend::Backend& backend)
    : config_(config), backend_(backend) {
  const std::int64_t d = config.d_model;
  if (config.max_source_positions != kEncoderPositions) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("max_source_positions {} (ifw runs 30 s windows: {})",
                            config.max_source_positions, kEncoderPositions));
  }
  if (config.scale_embedding) {
    // No Whisper checkpoint scales its embeddings; the table doubles as the output projection.
    throw Error(ErrorKind::kUnsupported, "scale_embedding=true is not supported");
  }
  // The loader sums the residual stream's biases for the norms (Norm::shift) as it goes: what
  // follows loads each stack in the order the model runs it.
  Loader load(source, backend);
  const std::string e = "model.encoder";
  conv1_w_ = load.matrix(e + ".conv1.weight", {d, config.num_mel_bins, 3});
  conv1_b_ = load.tensor(e + ".conv1.bias", {d});
  conv2_w_ = load.matrix(e + ".conv2.weight", {d, d, 3});
  conv2_b_ = load.tensor(e + ".conv2.bias", {d});
  encoder_positions_ = load.tensor(e + ".embed_positions.weight", {config.max_source_positions, d});
  load.start_residual_stream(d);
  for (int i = 0; i < config.encoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", e, i);
    EncoderLayer layer;
    layer.attn_norm = load.norm(p + ".self_attn_layer_norm", d);
    layer.attn = load.self_attention(p + ".self_attn", d);
    layer.ffn_norm = load.norm(p + ".final_layer_norm", d);
    layer.fc1 = load.linear(p + ".fc1", config.encoder_ffn_dim, d);
    layer.fc2 = load.residual_linear(p + ".fc2", d, config.encoder_ffn_dim);
    encoder_.push_back(std::move(layer));
  }
  encoder_norm_ = load.norm(e + ".layer_norm", d);

  const std::string k = "model.decoder";
  embed_tokens_ = load.matrix(k + ".embed_tokens.weight", {config.vocab_size, d});
  decoder_positions_ = load.tensor(k + ".embed_positions.weight", {config.max_target_positions, d});
  load.start_residual_stream(d);
  for (int i = 0; i < config.decoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", k, i);
    DecoderLayer layer;
    layer.self_norm = load.norm(p + ".self_attn_layer_norm", d);
    layer.self = load.self_attention(p + ".self_attn", d);
    layer.cross_norm = load.norm(p + ".encoder_attn_layer_norm", d);
    layer.cross = load.cross_attention(p + ".encoder_attn", d);
    layer.ffn_norm = load.norm(p + ".final_layer_norm", d);
    layer.fc1 = load.linear(p + ".fc1", config.decoder_ffn_dim, d);
    layer.fc2 = load.residual_linear(p + ".fc2", d, config.decoder_ffn_dim);
    decoder_.push_back(std::move(layer));
  }
  decoder_norm_ = load.norm(k + ".layer_norm", d);
  // Tied output projection unless the checkpoint brings its own.
  proj_out_ = !config.tie_word_embeddings && source.has("proj_out.weight")
                  ? load.matrix("proj_out.weight", {config.vocab_size, d})
                  : embed_tokens_;
}

Tensor WhisperModel::encode(std::span<const float> mel, int batch) const {
  const std::int64_t d = config_.d_model, mels = config_.num_mel_bins;
  const std::int64_t frames = kFramesPerWindow, positions = kEncoderPositions;
  if (batch < 1 || mel.size() != static_cast<std::size_t>(batch * mels * frames)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("encoder input holds {} values; {} windows of {} x {} need {}",
                            mel.size(), batch, mels, frames, batch * mels * frames));
  }
  backend::Backend& be = backend_;
  const backend::DType act = be.activation_dtype();
  const Tensor features = be.upload(mel, {batch, mels, frames});
  Tensor time_major = be.empty({batch, frames, mels}, act);
  be.transpose_last2(features, time_major);
  Tensor conv1 = be.empty({batch, frames, d}, act);
  be.conv1d_gelu(time_major, conv1_w_, conv1_b_, 1, conv1);
  Tensor x = be.empty({batch, positions, d});
  be.conv1d_gelu(conv1, conv2_w_, conv2_b_, 2, x);
  be.add_rows(x, encoder_positions_, positions);

  const std::int64_t rows = batch * positions;
  x = x.reshape({rows, d});
  Tensor normed = be.empty({rows, d}, act);
  Tensor qkv = be.empty({rows, 3 * d}, act);
  Tensor attended = be.empty({rows, d}, act);
  Tensor hidden = be.empty({rows, config_.encoder_ffn_dim}, act);
  const int heads = config_.encoder_attention_heads;
  for (const EncoderLayer& layer : encoder_) {
    be.layer_norm(x, &layer.attn_norm.shift, layer.attn_norm.gamma, layer.attn_norm.beta,
                  kLayerNormEps, normed);
    be.linear(whole(normed), layer.attn.qkv_w, nullptr, Activation::kNone, whole(qkv), rows, false);
    backend::AttentionArgs att;
    att.q = {qkv, 0, 3 * d};
    att.k = {qkv, d, 3 * d};
    att.v = {qkv, 2 * d, 3 * d};
    att.out = whole(attended);
    att.batch = batch;
    att.heads = heads;
    att.head_dim = static_cast<int>(d / heads);
    att.query_len = static_cast<int>(positions);
    att.key_block = positions;
    att.key_lengths.assign(static_cast<std::size_t>(batch), static_cast<int>(positions));
    att.scale = 1.0f / std::sqrt(static_cast<float>(d / heads));
    att.q_bias = &layer.attn.q_bias;
    be.attention(att);
    be.linear(whole(attended), layer.attn.out.w, nullptr, Activation::kNone, whole(x), rows, true);

    be.layer_norm(x, &layer.ffn_norm.shift, layer.ffn_norm.gamma, layer.ffn_norm.beta,
                  kLayerNormEps, normed);
    be.linear(whole(normed), layer.fc1.w, &layer.fc1.b, Activation::kGelu, whole(hidden), rows,
              false);
    be.linear(whole(hidden), layer.fc2.w, nullptr, Activation::kNone, whole(x), rows, true);
  }
  Tensor out = be.empty({batch, positions, d}, act);
  Tensor out_rows = out.reshape({rows, d});
  be.layer_norm(x, &encoder_norm_.shift, encoder_norm_.gamma, encoder_norm_.beta, kLayerNormEps,
                out_rows);
  return out;
}

DecoderSession::DecoderSession(const WhisperModel& model, const Tensor& encoder_states,
                               std::optional<bool> bucket_steps)
    : model_(model),
      batch_(static_cast<int>(encoder_states.dim(0))),
      max_length_(model.config().max_target_positions),
      step_graphs_(model.backend().make_step_graph() != nullptr),
      uncaught_exceptions_(std::uncaught_exceptions()),
      lengths_(static_cast<std::size_t>(batch_), 0) {
  bucket_steps_ = bucket_steps.value_or(step_graphs_);
  const auto& c = model.config();
  const std::int64_t d = c.d_model, positions = encoder_states.dim(1);
  backend::Backend& be = model.backend();
  const backend::DType act = be.activation_dtype();
  const Tensor states = encoder_states.reshape({batch_ * positions, d});
  // A spare slot for the rows that round a step up (below 3 items a step is never rounded).
  const std::int64_t slots = batch_ + (bucket_steps_ && batch_ >= 3 ? 1 : 0);
  if (step_graphs_) buffers_ = model.take_decoder_buffers(batch_, slots, positions);
  // Kept buffers hold an earlier session's keys and values: the encoder's are computed again
  // below, and each item's cache is read only up to its own length.
  const bool kept = buffers_ != nullptr;
  if (!kept) {
    buffers_ = std::make_unique<DecoderBuffers>();
    buffers_->batch = batch_;
    buffers_->slots = slots;
    buffers_->positions = positions;
  }
  const auto& layers = model.decoder_layers();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    if (!kept) {
      buffers_->self_kv.push_back(be.empty({slots, max_length_, 2 * d}, act));
      buffers_->cross_kv.push_back(be.empty({batch_, positions, 2 * d}, act));
    }
    Tensor kv = buffers_->cross_kv[l].reshape({batch_ * positions, 2 * d});
    be.linear(whole(states), layers[l].cross.kv_w, nullptr, Activation::kNone, whole(kv),
              batch_ * positions, false);
  }
}

DecoderSession::~DecoderSession() {
  // Not when it ends by an exception (out of memory, a device error): what it leaves behind is
  // not worth keeping, and the caller may be freeing memory to try again.
  if (step_graphs_ && buffers_ && std::uncaught_exceptions() == uncaught_exceptions_) {
    try {
      model_.keep_decoder_buffers(std::move(buffers_));
    } catch (const std::exception& e) {  // a destructor: the buffers simply go
      spdlog::warn("decoder buffers not kept for the next batch: {}", e.what());
    }
  }
}

std::unique_ptr<DecoderBuffers> WhisperModel::take_decoder_buffers(int batch, std::int64_t slots,
                                                                   std::int64_t positions) const {
  const std::lock_guard lock(decoder_buffers_mutex_);
  const auto it = std::find_if(decoder_buffers_.begin(), decoder_buffers_.end(),
                               [&](const auto& b) { return b->fits(batch, slots, positions); });
  if (it == decoder_buffers_.end()) return nullptr;
  std::unique_ptr<DecoderBuffers> kept = std::move(*it);
  decoder_buffers_.erase(it);
  return kept;
}

void WhisperModel::keep_decoder_buffers(std::unique_ptr<DecoderBuffers> buffers) const {
  // A recording dropped for good (a capture refused, out of memory for its buffers) is not kept:
  // the next session records that step anew.
  std::erase_if(buffers->graphs, [](const auto& entry) {
    return entry.second == nullptr || !entry.second->usable();
  });
  std::vector<std::unique_ptr<DecoderBuffers>> dropped;  // after the lock is let go
  const std::lock_guard lock(decoder_buffers_mutex_);
  // One set per size (two sessions of a size at once each made one): the newer stays.
  for (auto it = decoder_buffers_.begin(); it != decoder_buffers_.end();) {
    if ((*it)->fits(buffers->batch, buffers->slots, buffers->positions)) {
      dropped.push_back(std::move(*it));
      it = decoder_buffers_.erase(it);
    } else {
      ++it;
    }
  }
  decoder_buffers_.push_back(std::move(buffers));
  if (decoder_buffers_.size() > kKeptDecoderSizes) {
    dropped.push_back(std::move(decoder_buffers_.front()));
    decoder_buffers_.erase(decoder_buffers_.begin());
  }
}

bool WhisperModel::release_decoder_buffers() const {
  std::vector<std::unique_ptr<DecoderBuffers>> kept;  // dropped after the lock is let go
  const std::lock_guard lock(decoder_buffers_mutex_);
  kept.swap(decoder_buffers_);
  return !kept.empty();
}

int DecoderSession::step_rows(int items, int batch) {
  int rows = 1;
  if (items <= 8) {
    while (rows < items)
      rows *= 2;
  } else {
    rows = (items + 7) / 8 * 8;
  }
  return std::max(items, std::min(rows, batch));
}

// Everything a step reads from the host, rows rounded up included.
struct DecoderSession::Step {
  int rows = 0;  // batch rows (items, then placeholders)
  int tokens_per_row = 0;
  std::vector<TokenId> tokens;
  std::vector<std::int32_t> positions;
  std::vector<int> starts, key_lengths;
  std::vector<int> self_slots;   // cache slot of each row (placeholders: the spare slot)
  std::vector<int> cross_items;  // encoder states of each row (placeholders: the first item's)
  std::vector<int> cross_lengths;
  std::vector<std::int64_t> logit_rows;  // rows of x to turn into logits
  // Alignment heads by layer: (head, capture slot) pairs.
  std::vector<std::vector<std::pair<int, std::size_t>>> capture_heads;
  std::int64_t encoder_positions = 0;
  Choosing* choosing = nullptr;  // tokens chosen on the backend instead of logits downloaded
};

std::vector<float> DecoderSession::forward(std::span<const TokenId> tokens, int tokens_per_item,
                                           std::span<const int> items, LogitRows which,
                                           AlignmentCapture* capture) {
  std::vector<int> rows;
  if (which == LogitRows::kLast) {
    rows.push_back(tokens_per_item - 1);
  } else {
    for (int t = 0; t < tokens_per_item; ++t)
      rows.push_back(t);
  }
  return forward(tokens, tokens_per_item, items, std::span<const int>(rows), capture);
}

std::vector<float> DecoderSession::forward(std::span<const TokenId> tokens, int tokens_per_item,
                                           std::span<const int> items,
                                           std::span<const int> logit_rows,
                                           AlignmentCapture* capture) {
  return run(tokens, tokens_per_item, items, logit_rows, capture, nullptr);
}

std::vector<backend::TokenChoice> DecoderSession::choose(std::span<const TokenId> tokens,
                                                         std::span<const int> items,
                                                         std::span<const std::uint8_t> flags,
                                                         std::span<const backend::RowRules> rules,
                                                         AlignmentCapture* capture) {
  if (rules.size() != items.size()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("decoder: {} rules for {} items", rules.size(), items.size()));
  }
  if (!flags.empty() && flags.size() != static_cast<std::size_t>(model_.config().vocab_size)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("decoder: {} token flags for a vocabulary of {}", flags.size(),
                            model_.config().vocab_size));
  }
  Choosing choosing;
  choosing.flags = flags;
  choosing.rules.assign(rules.begin(), rules.end());
  const int last[] = {0};
  run(tokens, 1, items, last, capture, &choosing);
  choosing.out.resize(items.size());  // the placeholders' choices are the last
  return std::move(choosing.out);
}

std::vector<float> DecoderSession::run(std::span<const TokenId> tokens, int tokens_per_item,
                                       std::span<const int> items, std::span<const int> logit_rows,
                                       AlignmentCapture* capture, Choosing* choosing) {
  const auto& c = model_.config();
  const int n_items = static_cast<int>(items.size());
  const int tq = tokens_per_item;
  if (n_items == 0 || tq < 1 || tokens.size() != static_cast<std::size_t>(n_items * tq)) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("decoder: {} tokens for {} items of {} tokens", tokens.size(), n_items, tq));
  }
  for (const int r : logit_rows) {
    if (r < 0 || r >= tq) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("decoder: no row {} among {} tokens", r, tq));
    }
  }
  // Single-token steps are what repeats; a prompt runs once.
  const bool recorded = tq == 1 && step_graphs_;
  Step step;
  step.rows = tq == 1 && bucket_steps_ ? step_rows(n_items, batch_) : n_items;
  step.tokens_per_row = tq;
  step.tokens.assign(tokens.begin(), tokens.end());
  step.encoder_positions = buffers_->positions;
  for (const int item : items) {
    if (item < 0 || item >= batch_) {
      throw Error(ErrorKind::kInvalidArgument, fmt::format("decoder: no batch item {}", item));
    }
    const int start = lengths_[static_cast<std::size_t>(item)];
    if (start + tq > max_length_) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("decoder: {} tokens exceed the model's {} positions", start + tq,
                              max_length_));
    }
    for (int t = 0; t < tq; ++t)
      step.positions.push_back(start + t);
    step.starts.push_back(start);
    step.key_lengths.push_back(start + tq);
    step.self_slots.push_back(item);
    step.cross_items.push_back(item);
  }
  for (int r = n_items; r < step.rows; ++r) {  // placeholders, from position 0 each time
    for (int t = 0; t < tq; ++t) {
      step.tokens.push_back(tokens[0]);
      step.positions.push_back(t);
    }
    step.starts.push_back(0);
    step.key_lengths.push_back(tq);
    step.self_slots.push_back(batch_);
    step.cross_items.push_back(0);
  }
  step.cross_lengths.assign(static_cast<std::size_t>(step.rows),
                            static_cast<int>(step.encoder_positions));
  for (int i = 0; i < step.rows; ++i) {
    for (const int r : logit_rows)
      step.logit_rows.push_back(static_cast<std::int64_t>(i) * tq + r);
  }

  const std::size_t layers = model_.decoder_layers().size();
  step.capture_heads.resize(layers);
  std::vector<std::vector<float>> captured(layers);
  if (capture != nullptr) {
    for (std::size_t h = 0; h < capture->heads.size(); ++h) {
      const auto l = static_cast<std::size_t>(capture->heads[h].layer);
      if (l < layers) step.capture_heads[l].emplace_back(capture->heads[h].head, h);
    }
    for (std::size_t l = 0; l < layers; ++l) {
      captured[l].resize(static_cast<std::size_t>(step.rows) * step.capture_heads[l].size() *
                         static_cast<std::size_t>(tq * step.encoder_positions));
    }
  }

  const auto vocab = static_cast<std::size_t>(c.vocab_size);
  std::vector<float> logits(choosing != nullptr ? 0 : step.logit_rows.size() * vocab);
  if (choosing != nullptr) {  // placeholders: nothing forbidden
    choosing->rules.resize(static_cast<std::size_t>(step.rows));
    choosing->out.assign(static_cast<std::size_t>(step.rows), {});
    step.choosing = choosing;
  }
  const auto run = [&] { issue(step, logits, captured); };
  backend::StepGraph* graph = nullptr;
  if (recorded) {
    // Everything that shapes the step's operations; the captured heads are launch parameters.
    const int returned = choosing == nullptr ? 0 : choosing->flags.empty() ? 1 : 2;
    StepKey key{step.rows, tq, {logit_rows.begin(), logit_rows.end()}, {}, returned};
    if (capture != nullptr) {
      for (const auto& head : capture->heads)
        std::get<3>(key).insert(std::get<3>(key).end(), {head.layer, head.head});
      std::get<3>(key).push_back(-1);  // capturing without heads differs from not capturing
    }
    auto& slot = buffers_->graphs[std::move(key)];
    if (!slot) slot = model_.backend().make_step_graph();
    graph = slot.get();
  }
  if (graph != nullptr) {
    graph->run(run);
  } else {
    run();
  }

  for (const int item : items)
    lengths_[static_cast<std::size_t>(item)] += tq;
  if (capture != nullptr) {
    if (capture->weights.size() < static_cast<std::size_t>(batch_))
      capture->weights.resize(static_cast<std::size_t>(batch_));
    const auto positions = static_cast<std::size_t>(step.encoder_positions);
    for (std::size_t l = 0; l < layers; ++l) {
      const auto& heads = step.capture_heads[l];
      for (int i = 0; i < n_items; ++i) {
        auto& per_head =
            capture->weights[static_cast<std::size_t>(items[static_cast<std::size_t>(i)])];
        per_head.resize(capture->heads.size());
        for (std::size_t s = 0; s < heads.size(); ++s) {
          for (int t = 0; t < tq; ++t) {
            const float* row =
                captured[l].data() +
                ((static_cast<std::size_t>(i) * heads.size() + s) * static_cast<std::size_t>(tq) +
                 static_cast<std::size_t>(t)) *
                    positions;
            auto& out = per_head[heads[s].second];
            out.insert(out.end(), row, row + positions);
          }
        }
      }
    }
  }
  // The placeholders' logits are the last rows.
  if (choosing == nullptr)
    logits.resize(static_cast<std::size_t>(n_items) * logit_rows.size() * vocab);
  return logits;
}

void DecoderSession::cross_attention(const Step& step, std::size_t l, const Tensor& q,
                                     const Tensor& attended, std::span<float> captured) const {
  const auto& c = model_.config();
  const std::int64_t d = c.d_model;
  const int heads = c.decoder_attention_heads;
  const DecoderLayer& layer = model_.decoder_layers()[l];
  const Tensor& kv = buffers_->cross_kv[l];
  backend::AttentionArgs cross;
  cross.q = whole(q);
  cross.out = whole(attended);
  cross.batch = step.rows;
  cross.heads = heads;
  cross.head_dim = static_cast<int>(d / heads);
  cross.query_len = step.tokens_per_row;
  cross.item_index = step.cross_items;
  cross.scale = 1.0f / std::sqrt(static_cast<float>(d / heads));
  if (!step.capture_heads[l].empty()) {
    for (const auto& [head, slot] : step.capture_heads[l])
      cross.capture_heads.push_back(head);
    cross.capture = captured;
  }
  cross.k = {kv, 0, 2 * d};
  cross.v = {kv, d, 2 * d};
  cross.key_block = step.encoder_positions;
  cross.key_lengths = step.cross_lengths;
  cross.q_bias = &layer.cross.q_bias;
  model_.backend().attention(cross);
}

void DecoderSession::issue(const Step& step, std::span<float> logits,
                           std::vector<std::vector<float>>& captured) {
  const auto& c = model_.config();
  const std::int64_t d = c.d_model;
  const int tq = step.tokens_per_row;
  backend::Backend& be = model_.backend();
  const std::int64_t rows = static_cast<std::int64_t>(step.rows) * tq;
  Tensor x = be.empty({rows, d});
  be.embed(step.tokens, step.positions, model_.token_embedding(), model_.decoder_positions(), x);
  const backend::DType act = be.activation_dtype();
  Tensor normed = be.empty({rows, d}, act);
  Tensor qkv = be.empty({rows, 3 * d}, act);
  Tensor q = be.empty({rows, d}, act);
  Tensor attended = be.empty({rows, d}, act);
  Tensor hidden = be.empty({rows, c.decoder_ffn_dim}, act);
  const int heads = c.decoder_attention_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d / heads));
  constexpr float kEps = WhisperModel::kLayerNormEps;
  for (std::size_t l = 0; l < model_.decoder_layers().size(); ++l) {
    const DecoderLayer& layer = model_.decoder_layers()[l];
    // Self-attention over everything this item has seen, with its new keys appended.
    be.layer_norm(x, &layer.self_norm.shift, layer.self_norm.gamma, layer.self_norm.beta, kEps,
                  normed);
    be.linear(whole(normed), layer.self.qkv_w, nullptr, Activation::kNone, whole(qkv), rows, false);
    // Keys and values side by side into each item's own cache slot, in one copy (attention
    // reads them by slot too).
    be.write_rows({qkv, d, 3 * d}, step.rows, tq, buffers_->self_kv[l], max_length_,
                  step.self_slots, step.starts);
    backend::AttentionArgs self;
    self.q = {qkv, 0, 3 * d};
    self.k = {buffers_->self_kv[l], 0, 2 * d};
    self.v = {buffers_->self_kv[l], d, 2 * d};
    self.out = whole(attended);
    self.batch = step.rows;
    self.heads = heads;
    self.head_dim = static_cast<int>(d / heads);
    self.query_len = tq;
    self.key_block = max_length_;
    self.key_lengths = step.key_lengths;
    self.item_index = step.self_slots;
    self.causal = true;
    self.scale = scale;
    self.q_bias = &layer.self.q_bias;
    be.attention(self);
    be.linear(whole(attended), layer.self.out.w, nullptr, Activation::kNone, whole(x), rows, true);

    // Cross-attention over the window's encoder states.
    be.layer_norm(x, &layer.cross_norm.shift, layer.cross_norm.gamma, layer.cross_norm.beta, kEps,
                  normed);
    be.linear(whole(normed), layer.cross.q_w, nullptr, Activation::kNone, whole(q), rows, false);
    cross_attention(step, l, q, attended, captured[l]);
    be.linear(whole(attended), layer.cross.out.w, nullptr, Activation::kNone, whole(x), rows, true);

    be.layer_norm(x, &layer.ffn_norm.shift, layer.ffn_norm.gamma, layer.ffn_norm.beta, kEps,
                  normed);
    be.linear(whole(normed), layer.fc1.w, &layer.fc1.b, Activation::kGelu, whole(hidden), rows,
              false);
    be.linear(whole(hidden), layer.fc2.w, nullptr, Activation::kNone, whole(x), rows, true);
  }

  // Logits of the requested rows: final norm, then the (tied) output projection.
  const auto n_rows = static_cast<std::int64_t>(step.logit_rows.size());
  Tensor last = be.empty({n_rows, d});
  be.gather_rows(x, step.logit_rows, last);
  Tensor last_normed = be.empty({n_rows, d}, act);
  const Norm& final_norm = model_.decoder_norm();
  be.layer_norm(last, &final_norm.shift, final_norm.gamma, final_norm.beta, kEps, last_normed);
  Tensor out = be.empty({n_rows, static_cast<std::int64_t>(c.vocab_size)});
  be.linear(whole(last_normed), model_.output_projection(), nullptr, Activation::kNone, whole(out),
            n_rows, false);
  if (step.choosing != nullptr) {
    be.choose_tokens(out, step.choosing->flags, step.choosing->rules, step.choosing->out);
  } else {
    be.download(out, logits);
  }
}

}  // namespace ifw::engine
