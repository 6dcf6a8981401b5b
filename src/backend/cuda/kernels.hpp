// The CUDA backend's own kernels (layer norm, bias and GELU, attention, copies): launchers over
// raw device pointers, issued on the given stream. Element types are chosen at run time.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "backend/activation.hpp"
#include "backend/element_type.hpp"

namespace ifw::backend::cuda {

// Most heads any Whisper has (large: 20); the attention kernels index captured heads by it.
constexpr int kMaxHeads = 64;

// out[i] = in[i] converted between element types.
void convert(const void* in, DType in_type, void* out, DType out_type, std::int64_t n,
             cudaStream_t stream);

// y[r] = (v - mean) / sqrt(var + eps) * gamma + beta over rows of d floats, where v = x[r] +
// shift (d floats; v = x[r] where shift is null).
void layer_norm(const float* x, const float* shift, void* y, DType y_type, std::int64_t rows,
                std::int64_t d, const float* gamma, const float* beta, float eps,
                cudaStream_t stream);

// y[r, c] = act(y[r, c] + bias[c]) for a rows x cols block with rows `ld` apart; bias may be null.
void bias_activation(void* y, DType type, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                     const float* bias, Activation act, cudaStream_t stream);

// x[r] += rows[r % block] for rows of d floats.
void add_rows(float* x, const float* rows, std::int64_t total_rows, std::int64_t d,
              std::int64_t block, cudaStream_t stream);

// [batch, c, t] -> [batch, t, c]
void transpose_last2(const void* x, DType x_type, void* y, DType y_type, std::int64_t batch,
                     std::int64_t c, std::int64_t t, cudaStream_t stream);

// Rows of a kernel-3, padding-1 convolution's input: columns[b, t, ci * 3 + k] =
// x[b, t * stride + k - 1, ci] (zero outside), for time-major x [batch, t_in, c_in].
void im2col3(const void* x, void* columns, DType type, std::int64_t batch, std::int64_t t_in,
             std::int64_t c_in, std::int64_t t_out, int stride, cudaStream_t stream);

// y[i] = table[ids[i]] + positions[pos[i]] (ids and pos in device memory, already checked).
void embed(const std::int32_t* ids, const std::int32_t* pos, std::int64_t n, const void* table,
           DType table_type, const float* positions, float* y, std::int64_t d, cudaStream_t stream);

// dst[(blocks[b] * dst_block + starts[b] + t) * width] = src[(b * rows_per_item + t) * ld_src]
// (width elements each); blocks and starts in device memory.
void write_rows(const void* src, std::int64_t ld_src, DType type, int batch, int rows_per_item,
                void* dst, std::int64_t width, std::int64_t dst_block, const int* blocks,
                const int* starts, cudaStream_t stream);

// y[i] = x[index[i]] for rows of d elements; index in device memory.
void gather_rows(const void* x, DType type, std::int64_t d, const std::int64_t* index,
                 std::int64_t n, void* y, cudaStream_t stream);

// The decoding rules of one row (backend::RowRules, the same layout: checked where both are
// seen) and a chosen token (backend::TokenChoice).
struct ChoiceRules {
  std::int32_t first;
  std::int32_t timestamp_vote;
  std::int32_t timestamp_begin;
  std::int32_t ranges;
  std::int32_t forbidden[4][2];
};
struct ChosenToken {
  std::int32_t token;
  double logprob;
};
// For each of `rows` rows of float32 logits [rows, vocab]: what flags (per token, may be null:
// bit 1 always forbidden, bit 2 forbidden for a first token) and the row's rules forbid, the
// timestamp vote, then the most likely allowed token (the first on ties) and its log-probability
// among the allowed tokens. rules and out in device memory.
void choose_tokens(const float* logits, std::int64_t rows, std::int64_t vocab,
                   const std::uint8_t* flags, const ChoiceRules* rules, ChosenToken* out,
                   cudaStream_t stream);

// Capture slot of each head (-1: not captured).
struct HeadSlots {
  int slot[kMaxHeads];
};

// Attention computed one query row per thread block (decoding: few queries, long keys).
// Pointers are at column 0 of head 0; rows of q/out are item-major (item * query_len + i); keys of
// item b start at row item_index[b] * key_block. key_lengths and item_index (may be null: item b
// uses block b) are in device memory. Captured probabilities go to capture (device memory)
// [batch][n_capture][query_len][key_block], zeros past each key length.
struct RowAttention {
  const void* q = nullptr;
  std::int64_t ld_q = 0;
  const float* q_bias = nullptr;  // [heads * head_dim], added to the queries as they are read
  const void* k = nullptr;
  std::int64_t ld_k = 0;
  const void* v = nullptr;
  std::int64_t ld_v = 0;
  void* out = nullptr;
  std::int64_t ld_out = 0;
  DType type = DType::kF32;
  int batch = 0, heads = 0, head_dim = 0, query_len = 0;
  std::int64_t key_block = 0;
  const int* key_lengths = nullptr;
  const int* item_index = nullptr;
  bool causal = false;
  float scale = 1.0f;
  HeadSlots slots{};
  int n_capture = 0;
  float* capture = nullptr;
};
void row_attention(const RowAttention& a, cudaStream_t stream);

// The same attention for head size 64 with each item's keys split into parts of `keys` (128 or
// 256), one thread block each, and the parts combined by a second kernel (flash decoding): many
// more blocks than (query, head, item), each streaming its keys and values in whole lines. The
// parts are fixed by key_block (not the lengths), so the launch can be recorded in a step graph.
// `partial` (device memory) holds kSplitPartial floats per (query row, head, part); unused with
// one part.
constexpr int kSplitHead = 64;
constexpr int kSplitPartial = kSplitHead + 2;  // unnormalised output, maximum, sum
// Keys per part, from IFW_CUDA_DECODE_ATTENTION: 128 by default (on an H100, large-v3's step at
// batch 64: 9.00 against 9.86 ms by rows), 256 with "split256" (for comparisons), 0 with "rows"
// (row_attention).
int split_attention_keys();
// False with IFW_CUDA_DECODE_ATTENTION=mixed: causal (self-)attention by rows, one kernel where
// the split needs two for a cache of 448 keys mostly unfilled (on an H200 within the noise of the
// split: large-v3 at batch 64 1964x against 1956x).
bool split_self_attention();
// The split kernel with parts of 128 keys takes the tweaks of split_tweaks() (environment.hpp):
// blocks ordered head by head within a part, a part's value loads issued with its key loads, and
// the parts combined by the last of their blocks instead of a second kernel (kernels.cu).
bool split_attention_supported(const RowAttention& a);
int split_attention_parts(const RowAttention& a, int keys);
// `done`: kSplitCounters zeroed counters that stay zero between launches (the fused tweak
// counts a (query row, head)'s finished parts in one and sets it back); nullptr: the parts are
// combined by a second kernel.
constexpr int kSplitCounters = 1 << 16;
void split_attention(const RowAttention& a, int keys, float* partial, unsigned* done,
                     cudaStream_t stream);

// Softmax of one item's attention scores [heads][query_len][key_len] (scaled already) into
// probabilities of `type` with the same layout; with causal, query i sees keys
// [0, key_len - query_len + i]. Captured heads' probabilities go to capture
// [n_capture][query_len][key_block] (zeros past key_len).
void masked_softmax(const float* scores, void* probs, DType type, int heads, int query_len,
                    int key_len, bool causal, const HeadSlots& slots, float* capture,
                    std::int64_t key_block, cudaStream_t stream);

// Unmasked attention for head size 64 in float16/bfloat16 (the encoder's self-attention):
// flash_attention.cu. Queries of item b are rows b * query_len + i, its keys rows
// b * key_block + j (j < key_len).
struct FlashAttention {
  const void* q = nullptr;
  std::int64_t ld_q = 0;
  const float* q_bias = nullptr;  // [heads * head_dim], added to the queries as they are read
  const void* k = nullptr;
  std::int64_t ld_k = 0;
  const void* v = nullptr;
  std::int64_t ld_v = 0;
  void* out = nullptr;
  std::int64_t ld_out = 0;
  DType type = DType::kF16;
  int batch = 0, heads = 0, head_dim = 0, query_len = 0, key_len = 0;
  std::int64_t key_block = 0;
  float scale = 1.0f;
};
bool flash_attention_supported(const FlashAttention& a);
void flash_attention(const FlashAttention& a, cudaStream_t stream);
// IFW_CUDA_FLASH chooses the kernel: unset, 6 (Hopper's wgmma) where the device has sm_90a code
// and 2 elsewhere (a version sharing key tiles among 8 warps, double-buffered with cp.async, B
// fragments by ldmatrix); 1 (the first); 7 (6 with a tile's softmax overlapping the last tile's
// product) or 8 (7 with FlashAttention-4's lazy rescaling). 6 to 8 run version 2 where the device
// or build has no sm_90a code. Measured on an H200: 6 and 8 alike, 7 4 % slower, 2 1.6 times 6.
// Version 6, 7 or 8 (flash_attention_hopper.cu, built for sm_90a where the toolkit can): false,
// having launched nothing, where the current device cannot run it.
bool flash_attention_hopper(const FlashAttention& a, int version, cudaStream_t stream);

}  // namespace ifw::backend::cuda
