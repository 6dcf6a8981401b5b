// Whisper's encoder and decoder, written once against the backend's operations.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include "backend/backend.hpp"
#include "engine/weight_source.hpp"
#include "model/generation_config.hpp"
#include "model/whisper_config.hpp"

namespace ifw::engine {

using TokenId = std::int32_t;

struct Linear {
  backend::Tensor w;  // [out, in]
  backend::Tensor b;  // [out], empty where the bias is elsewhere (Norm::shift)
};
// The residual stream keeps no biases: the products that add into it (attention outputs, fc2)
// leave theirs out, and since each is the same row added to every row, a norm adds their sum
// (Backend::layer_norm's shift) to what it reads. No pass over the stream adds a bias.
struct Norm {
  backend::Tensor gamma, beta;
  backend::Tensor shift;  // [d]: the biases of the products before this norm, summed
};
// Attention's projections without a bias pass over their outputs: the query bias is added by
// attention as it reads the queries (AttentionArgs::q_bias), keys have no bias in Whisper, and
// the value bias is folded into the output projection's (softmax rows sum to 1, so
// P (V + 1 bv^T) Wo^T + bo = P V Wo^T + (Wo bv + bo)).
struct SelfAttention {
  backend::Tensor qkv_w;   // [3d, d]: q, k and v by one product
  backend::Tensor q_bias;  // [d]
  Linear out;              // bias bo + Wo bv: in the next norms' shifts
};
// Its keys and values are computed once per window from the encoder's output.
struct CrossAttention {
  backend::Tensor q_w;     // [d, d]
  backend::Tensor q_bias;  // [d]
  backend::Tensor kv_w;    // [2d, d]: keys' weights, then values'
  Linear out;              // bias bo + Wo bv: in the next norms' shifts
};
struct EncoderLayer {
  Norm attn_norm;
  SelfAttention attn;
  Norm ffn_norm;
  Linear fc1, fc2;
};
struct DecoderLayer {
  Norm self_norm;
  SelfAttention self;
  Norm cross_norm;
  CrossAttention cross;
  Norm ffn_norm;
  Linear fc1, fc2;
};

// What a step graph is recorded for: rows, tokens per row, logit rows, captured (layer, head)
// pairs, and what comes back (0: logits, 1: chosen tokens, 2: chosen tokens under token flags;
// flags or none is a launch parameter: a null pointer or the staged flags).
using StepKey = std::tuple<int, int, std::vector<int>, std::vector<int>, int>;

// A decoder session's tensors (self-attention caches, the encoder's keys and values) and the step
// graphs recorded over them, which bake in their addresses.
struct DecoderBuffers {
  int batch = 0;
  std::int64_t slots = 0;      // cache slots: the batch, and a spare one for rounded steps
  std::int64_t positions = 0;  // encoder positions
  bool fits(int b, std::int64_t s, std::int64_t p) const {
    return batch == b && slots == s && positions == p;
  }
  std::vector<backend::Tensor> self_kv;   // per layer [slots, max_length, 2d]: keys | values
  std::vector<backend::Tensor> cross_kv;  // per layer [batch, positions, 2d]
  // After the tensors, so that the graphs go first.
  std::map<StepKey, std::unique_ptr<backend::StepGraph>> graphs;
};

class WhisperModel {
 public:
  // Reads every weight from `source` (converted to float32) onto `backend`.
  WhisperModel(const model::WhisperConfig& config, WeightSource& source, backend::Backend& backend);

  const model::WhisperConfig& config() const { return config_; }
  backend::Backend& backend() const { return backend_; }

  // mel: [batch][n_mels][3000] log-mel features -> encoder states [batch, 1500, d_model].
  backend::Tensor encode(std::span<const float> mel, int batch) const;

  // Weights, for the decoder session.
  const std::vector<DecoderLayer>& decoder_layers() const { return decoder_; }
  const Norm& decoder_norm() const { return decoder_norm_; }
  const backend::Tensor& token_embedding() const { return embed_tokens_; }
  const backend::Tensor& decoder_positions() const { return decoder_positions_; }
  const backend::Tensor& output_projection() const { return proj_out_; }

  static constexpr float kLayerNormEps = 1e-5f;

  // Where the backend records decoder steps (step graphs), a decoder session leaves its buffers
  // and graphs here when it ends, so that the next session of the same size replays the graphs
  // instead of recording every step shape again (a long transcription's batches then record
  // each shape once, not once per batch). The last kKeptDecoderSizes sizes are kept: a batch's
  // size, a language detection's single window, a temperature fallback's group. take: the kept
  // buffers of that size, or nullptr. release: drops them all (an idle model, memory running
  // out); true when there were any.
  static constexpr std::size_t kKeptDecoderSizes = 3;
  std::unique_ptr<DecoderBuffers> take_decoder_buffers(int batch, std::int64_t slots,
                                                       std::int64_t positions) const;
  void keep_decoder_buffers(std::unique_ptr<DecoderBuffers> buffers) const;
  bool release_decoder_buffers() const;

 private:
  model::WhisperConfig config_;
  backend::Backend& backend_;
  backend::Tensor conv1_w_, conv1_b_, conv2_w_, conv2_b_, encoder_positions_;
  std::vector<EncoderLayer> encoder_;
  Norm encoder_norm_;
  backend::Tensor embed_tokens_, decoder_positions_, proj_out_;
  std::vector<DecoderLayer> decoder_;
  Norm decoder_norm_;
  mutable std::mutex decoder_buffers_mutex_;
  // Least recently kept first; they go before the weights.
  mutable std::vector<std::unique_ptr<DecoderBuffers>> decoder_buffers_;
};

// Which rows of a forward pass to turn into logits.
enum class LogitRows { kLast, kAll };

// Cross-attention weights of the alignment heads, collected token by token for one batch item:
// weights[head][token] is a row of 1500 (one per encoder position).
struct AlignmentCapture {
  std::vector<model::AlignmentHead> heads;
  std::vector<std::vector<std::vector<float>>> weights;  // [item][head] -> tokens x 1500
};

// The decoder's state for a batch of windows: cross-attention keys and values (computed once),
// self-attention caches, and each item's length so far.
//
// Steps of one token per item are run as step graphs where the backend records them (CUDA
// graphs): the same operations on the same tensors, with new token ids, positions and lengths.
// So that a decoding batch whose items end one by one repeats a few step sizes only, such steps
// then run for a number of rows rounded up (step_rows), the extra rows decoding a placeholder
// into a spare cache slot; their results are dropped.
class DecoderSession {
 public:
  // `bucket_steps` rounds single-token steps up whatever the backend (tests of the padding on
  // the CPU); by default they are rounded where the backend records step graphs.
  DecoderSession(const WhisperModel& model, const backend::Tensor& encoder_states,
                 std::optional<bool> bucket_steps = std::nullopt);
  ~DecoderSession();  // its buffers and graphs to the model, where steps are recorded
  DecoderSession(const DecoderSession&) = delete;
  DecoderSession& operator=(const DecoderSession&) = delete;

  int batch() const { return batch_; }
  int length(int item) const { return lengths_.at(static_cast<std::size_t>(item)); }

  // Rows a rounded step of `items` runs: up to 8, the next power of two, then the next multiple
  // of 8; never more than max(items, batch).
  static int step_rows(int items, int batch);

  // Appends tokens_per_item tokens to each of `items` (tokens laid out item after item) and
  // returns logits on the host: [items.size()][rows][vocab] with rows 1 (kLast) or
  // tokens_per_item (kAll). With `capture`, appends the alignment heads' cross-attention.
  std::vector<float> forward(std::span<const TokenId> tokens, int tokens_per_item,
                             std::span<const int> items, LogitRows rows,
                             AlignmentCapture* capture = nullptr);
  // The same with logits for the given rows of each item's new tokens (indices below
  // tokens_per_item), returned [items.size()][logit_rows.size()][vocab].
  std::vector<float> forward(std::span<const TokenId> tokens, int tokens_per_item,
                             std::span<const int> items, std::span<const int> logit_rows,
                             AlignmentCapture* capture = nullptr);
  // One token appended to each of `items`, and each item's next token chosen where the logits
  // are (Backend::choose_tokens with `flags` and one RowRules per item) instead of its logits
  // returned: a GPU then sends back 16 bytes per item rather than the vocabulary's logits.
  std::vector<backend::TokenChoice> choose(std::span<const TokenId> tokens,
                                           std::span<const int> items,
                                           std::span<const std::uint8_t> flags,
                                           std::span<const backend::RowRules> rules,
                                           AlignmentCapture* capture = nullptr);

 private:
  struct Step;
  struct Choosing {
    std::span<const std::uint8_t> flags;
    std::vector<backend::RowRules> rules;  // one per row of the step
    std::vector<backend::TokenChoice> out;
  };
  std::vector<float> run(std::span<const TokenId> tokens, int tokens_per_item,
                         std::span<const int> items, std::span<const int> logit_rows,
                         AlignmentCapture* capture, Choosing* choosing);
  // Issues one step's operations; fills `logits` and, per layer with alignment heads, `captured`.
  void issue(const Step& step, std::span<float> logits, std::vector<std::vector<float>>& captured);
  // Layer l's cross-attention of queries q into attended, over the session's cached keys and
  // values.
  void cross_attention(const Step& step, std::size_t l, const backend::Tensor& q,
                       const backend::Tensor& attended, std::span<float> captured) const;

  const WhisperModel& model_;
  int batch_;
  int max_length_;
  bool bucket_steps_;
  bool step_graphs_;         // the backend records steps
  int uncaught_exceptions_;  // when it began: a session that ends by an exception keeps nothing
  std::unique_ptr<DecoderBuffers> buffers_;
  std::vector<int> lengths_;
};

}  // namespace ifw::engine
