// The operations the Whisper model is written against. Each device implements them; layers and
// models are written once (CTranslate2's split: ops per device, layers from ops, models from
// layers). All matrices are row-major tensors on the backend's device. The CPU backend computes
// in float32 only; the CUDA backend keeps weights and activations in float32, float16 or
// bfloat16 (its `activation_dtype`), with float32 residual streams and accumulators.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/activation.hpp"
#include "backend/host_buffer.hpp"
#include "backend/tensor.hpp"
#include "backend/token_choice.hpp"

namespace ifw::backend {

// Columns [column, column + width) of a matrix whose rows are `ld` elements apart; lets fused
// projections (q|k|v in one matrix) be read without copies.
struct MatrixRef {
  Tensor tensor;
  std::int64_t column = 0;
  std::int64_t ld = 0;
};
// All of a matrix's columns.
inline MatrixRef whole(const Tensor& t) {
  return {t, 0, t.shape().back()};
}

struct AttentionArgs {
  MatrixRef q;    // batch * query_len rows, heads * head_dim wide
  MatrixRef k;    // batch blocks of key_block rows
  MatrixRef v;    // as k
  MatrixRef out;  // batch * query_len rows
  int batch = 0;
  int heads = 0;
  int head_dim = 0;
  int query_len = 0;
  std::int64_t key_block = 0;    // rows from one batch item's keys to the next's
  std::vector<int> key_lengths;  // valid keys per batch row
  // Key block of each batch row when only some items of a cache take part (empty: row b uses
  // block b).
  std::vector<int> item_index;
  bool causal = false;  // query i sees keys [0, key_length - query_len + i]
  float scale = 1.0f;
  // Optional: float32 [heads * head_dim] added to every query row before its scores (the query
  // projection's bias, which the encoder's q | k | v product then leaves out: no pass over it).
  const Tensor* q_bias = nullptr;
  // Optional: softmax weights of these heads, written to host memory as
  // [batch][capture_heads.size()][query_len][key_block] (zeros past each key length).
  std::vector<int> capture_heads;
  std::span<float> capture;
};

// A sequence of operations issued the same way many times (a decoder step): a backend that can
// record it runs it from one recording afterwards, so the host no longer issues each operation
// (CUDA graphs). Between runs, only the host values the operations read may change (token ids,
// positions, lengths, indices); shapes, tensors and the order of operations must not. Host
// buffers given to download() or an attention capture are filled when run() returns. `ops` may
// be called more than once in a run (a recording that cannot be used is dropped and the
// operations are issued directly), so it must not change host state other than those buffers.
class StepGraph {
 public:
  virtual ~StepGraph() = default;
  virtual void run(const std::function<void()>& ops) = 0;
  // False once the recording was dropped for good (operations issued one by one from then on):
  // not worth keeping for later sessions, which may record it anew.
  virtual bool usable() const { return true; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string description() const = 0;
  virtual int threads() const = 0;

  // What the model keeps its weight matrices and intermediate activations in (residual
  // streams stay float32).
  virtual DType weight_dtype() const { return DType::kF32; }
  virtual DType activation_dtype() const { return DType::kF32; }

  virtual Tensor empty(const Shape& shape, DType dtype = DType::kF32) = 0;
  // Host floats into a new tensor of `dtype` (converted on the way).
  virtual Tensor upload(std::span<const float> values, const Shape& shape,
                        DType dtype = DType::kF32) = 0;
  // `count` floats of host memory that upload() reads fastest (page-locked beside a GPU; plain
  // memory elsewhere, and where the device refuses it). Callable from any thread.
  virtual HostBuffer host_buffer(std::size_t count) { return HostBuffer(count); }
  // The tensor's values as floats (waits for the device).
  virtual void download(const Tensor& t, std::span<float> out) = 0;
  // Waits until every operation issued so far has finished (timing; a no-op on the CPU).
  virtual void synchronize() {}
  // Gives cached device memory back to the device (after a job); a no-op on the CPU.
  virtual void release_cached_memory() {}
  // A new recording for a repeated sequence of operations, or nullptr where the backend issues
  // operations directly anyway (the CPU).
  virtual std::unique_ptr<StepGraph> make_step_graph() { return nullptr; }
  // Ends a section of an operation profile (IFW_CUDA_PROFILE=1 on the GPU): what was counted since
  // the last section is reported under `name` and counting starts anew. A no-op elsewhere.
  virtual void profile_section(std::string_view name) { (void)name; }

  // y[M, N] (=|+=) act(x[M, K] . w[N, K]^T + bias[N]); with accumulate, y += x . w^T + bias
  // (activation must then be none).
  virtual void linear(const MatrixRef& x, const Tensor& w, const Tensor* bias, Activation act,
                      const MatrixRef& y, std::int64_t rows, bool accumulate) = 0;
  // y = layer_norm(x + shift) over the last dimension: `shift` (one row, added to every row; none
  // when null) leaves x as it is. The model's residual stream keeps no biases: the products that
  // add into it leave theirs out, and each norm is shifted by the sum of all those before it.
  virtual void layer_norm(const Tensor& x, const Tensor* shift, const Tensor& gamma,
                          const Tensor& beta, float eps, Tensor& y) = 0;
  // x[b * block + t] += rows[t] for every batch item b (position embeddings).
  virtual void add_rows(Tensor& x, const Tensor& rows, std::int64_t block) = 0;
  // [batch, channels, time] -> [batch, time, channels]
  virtual void transpose_last2(const Tensor& x, Tensor& y) = 0;
  // y[b, t, :] = gelu(bias + sum_k w[:, c, k] x[b, t * stride + k - 1, c]) with zero padding 1:
  // Whisper's convolutions, time-major in and out. w is [out, in, 3].
  virtual void conv1d_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, int stride,
                           Tensor& y) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  // y[i] = table[ids[i]] + positions[pos[i]]
  virtual void embed(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
                     const Tensor& table, const Tensor& positions, Tensor& y) = 0;
  // dst[blocks[b] * dst_block + starts[b] + t] = src row (b * rows_per_item + t), columns of
  // src: item b of src goes to its own block of dst (a KV cache slot), whichever items run.
  virtual void write_rows(const MatrixRef& src, int batch, int rows_per_item, Tensor& dst,
                          std::int64_t dst_block, std::span<const int> blocks,
                          std::span<const int> starts) = 0;
  // y[i] = x[index[i]]
  virtual void gather_rows(const Tensor& x, std::span<const std::int64_t> index, Tensor& y) = 0;
  // For each row of float32 logits [rows, vocab]: what `flags` (one per token, or empty) and the
  // row's `rules` forbid, then the most likely allowed token and its log-probability
  // (choose_token). This default downloads the logits and chooses on the host; a GPU chooses
  // where the logits are, so that only the choices travel.
  virtual void choose_tokens(const Tensor& logits, std::span<const std::uint8_t> flags,
                             std::span<const RowRules> rules, std::span<TokenChoice> out);
};

// Throws ifw::Error (kInvalidArgument) naming the first token id outside the table's rows or
// position outside the position table's: what every backend's embed() checks first.
void check_embedding_inputs(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
                            std::int64_t vocabulary, std::int64_t positions);

// The CPU backend (OpenBLAS and ifw's thread pool); `threads` 0 means one per core.
std::unique_ptr<Backend> make_cpu_backend(int threads);

// The CUDA backend on GPU `index`, computing in `dtype` (float32, float16 or bfloat16). Throws
// ifw::Error (kUnsupported) in a build without the toolkit or where the GPU cannot be used.
std::unique_ptr<Backend> make_cuda_backend(int index, DType dtype);

}  // namespace ifw::backend
