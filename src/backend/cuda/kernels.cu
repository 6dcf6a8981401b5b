// Kernels of the CUDA backend. Element-wise and reduction work only: products go to cuBLAS.
// Every kernel computes in float32 whatever it reads and writes.
#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>
#include <string_view>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/environment.hpp"
#include "backend/cuda/kernels.hpp"

namespace ifw::backend::cuda {
namespace {

using i64 = std::int64_t;

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Calls f with a value of the C++ type of `type`.
template <typename F>
void dispatch(DType type, F&& f) {
  switch (type) {
    case DType::kF32:
      f(float{});
      return;
    case DType::kF16:
      f(__half{});
      return;
    case DType::kBF16:
      f(__nv_bfloat16{});
      return;
  }
  throw std::logic_error("cuda kernels: unknown element type");
}

std::size_t dtype_bytes(DType type) {
  return type == DType::kF32 ? 4 : 2;
}

void check_launch() {
  check(cudaGetLastError(), "launching a CUDA kernel");
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
unsigned grid_for(i64 n) {
  const i64 blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<i64>(blocks, 1, 65536));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the block; `shared` holds 33 floats. Every thread gets the result.
template <bool kMax>
__device__ float block_reduce(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < warps ? shared[lane] : (kMax ? -INFINITY : 0.0f);
    t = kMax ? warp_max(t) : warp_sum(t);
    if (lane == 0) shared[32] = t;
  }
  __syncthreads();
  const float result = shared[32];
  __syncthreads();  // the next reduction may overwrite shared
  return result;
}

// --- Choosing tokens (the decoding rules on the device) ---

constexpr int kChooseThreads = 1024;

// The largest value and, on ties, the smallest index; every thread gets the result. `values`
// and `indices` hold 32 entries each.
__device__ void block_argmax(float& v, int& index, float* values, int* indices) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  const auto combine = [](float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  };
  for (int o = 16; o > 0; o >>= 1)
    combine(v, index, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, index, o));
  if (lane == 0) {
    values[warp] = v;
    indices[warp] = index;
  }
  __syncthreads();
  v = values[0];
  index = indices[0];
  for (int w = 1; w < warps; ++w)
    combine(v, index, values[w], indices[w]);
  __syncthreads();
}

__global__ void __launch_bounds__(kChooseThreads)
    choose_tokens_kernel(const float* logits, int vocab, const std::uint8_t* flags,
                         const ChoiceRules* all_rules, ChosenToken* out) {
  __shared__ float reduce[33];
  __shared__ float arg_values[32];
  __shared__ int arg_indices[32];
  const ChoiceRules r = all_rules[blockIdx.x];
  const float* x = logits + static_cast<i64>(blockIdx.x) * vocab;
  const std::uint8_t mask = r.first != 0 ? 3 : 1;
  const int ranges = min(max(r.ranges, 0), 4);
  const auto value = [&](int i) {
    if (flags != nullptr && (flags[i] & mask) != 0) return -INFINITY;
    for (int k = 0; k < ranges; ++k) {
      if (i >= r.forbidden[k][0] && i < r.forbidden[k][1]) return -INFINITY;
    }
    return x[i];
  };
  // Whisper's vote: all allowed timestamps together against the likeliest allowed text token
  // (log-probabilities share the row's normaliser, so the logits compare the same way).
  int text_end = 0;  // tokens below it are forbidden by the vote
  if (r.timestamp_vote != 0) {
    const int ts = min(max(r.timestamp_begin, 0), vocab);
    float max_text = -INFINITY, max_ts = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = value(i);
      if (i < ts) {
        max_text = fmaxf(max_text, v);
      } else {
        max_ts = fmaxf(max_ts, v);
      }
    }
    max_text = block_reduce<true>(max_text, reduce);
    max_ts = block_reduce<true>(max_ts, reduce);
    if (max_ts != -INFINITY) {
      float sum = 0.0f;
      for (int i = ts + static_cast<int>(threadIdx.x); i < vocab; i += blockDim.x)
        sum += expf(value(i) - max_ts);
      // In double, as the host compares: near ties decide alike.
      const double lse_ts =
          static_cast<double>(max_ts) + log(static_cast<double>(block_reduce<false>(sum, reduce)));
      if (lse_ts > static_cast<double>(max_text)) text_end = ts;
    }
  }
  float best = -INFINITY;
  int best_index = vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = i < text_end ? -INFINITY : value(i);
    if (v > best || (v == best && i < best_index)) {
      best = v;
      best_index = i;
    }
  }
  block_argmax(best, best_index, arg_values, arg_indices);
  float sum = 0.0f;
  if (best != -INFINITY) {
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const float v = i < text_end ? -INFINITY : value(i);
      sum += expf(v - best);
    }
  }
  sum = block_reduce<false>(sum, reduce);
  if (threadIdx.x == 0) {
    out[blockIdx.x].token = best_index < vocab ? best_index : 0;
    // log softmax of the best token: -log(sum exp(v - best)); no allowed token: NaN, as on the
    // host (-inf - -inf).
    out[blockIdx.x].logprob =
        best == -INFINITY ? static_cast<double>(NAN) : -static_cast<double>(logf(sum));
  }
}

template <typename In, typename Out>
__global__ void convert_kernel(const In* in, Out* out, i64 n) {
  for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<i64>(gridDim.x) * blockDim.x)
    out[i] = from_float<Out>(to_float(in[i]));
}

template <typename Out>
__global__ void layer_norm_kernel(const float* x, const float* shift, Out* y, i64 d,
                                  const float* gamma, const float* beta, float eps) {
  __shared__ float shared[33];
  const float* row = x + blockIdx.x * d;
  Out* out = y + blockIdx.x * d;
  const auto value = [&](i64 i) { return shift != nullptr ? row[i] + shift[i] : row[i]; };
  float s = 0.0f;
  for (i64 i = threadIdx.x; i < d; i += blockDim.x)
    s += value(i);
  const float mean = block_reduce<false>(s, shared) / static_cast<float>(d);
  float v = 0.0f;
  for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
    const float t = value(i) - mean;
    v += t * t;
  }
  const float var = block_reduce<false>(v, shared) / static_cast<float>(d);
  const float inv = rsqrtf(var + eps);
  for (i64 i = threadIdx.x; i < d; i += blockDim.x)
    out[i] = from_float<Out>((value(i) - mean) * inv * gamma[i] + beta[i]);
}

__device__ __forceinline__ float gelu(float v) {
  return 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));  // exact (erf) GELU, as Whisper's
}

// What bias_activation applies after the bias (backend::Activation).
__device__ __forceinline__ float activate(float v, Activation act) {
  if (act == Activation::kGelu) return gelu(v);
  return v;
}

// Row-wise kernels take one block per row (no 64-bit divisions per element).
// kVector: 16 bytes per thread and step (the host checked the alignment).
template <typename T, bool kVector>
__global__ void bias_activation_kernel(T* y, int cols, i64 ld, const float* bias, Activation act) {
  constexpr int kWidth = kVector ? 16 / static_cast<int>(sizeof(T)) : 1;
  T* row = y + blockIdx.x * ld;
  for (int c = threadIdx.x * kWidth; c < cols; c += blockDim.x * kWidth) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
    if constexpr (kVector) {
      raw = *reinterpret_cast<const uint4*>(row + c);
    } else {
      e[0] = row[c];
    }
    for (int w = 0; w < kWidth; ++w) {
      float v = to_float(e[w]);
      if (bias != nullptr) v += bias[c + w];
      e[w] = from_float<T>(activate(v, act));
    }
    if constexpr (kVector) {
      *reinterpret_cast<uint4*>(row + c) = raw;
    } else {
      row[c] = e[0];
    }
  }
}

// --- Version 2 of the row kernels (the default; IFW_CUDA_ELEMENTWISE=1 selects the first) ---
// The encoder's bias/GELU passes and layer norms stream 2.7 and 0.75 GB per large-v3 window, at an
// estimated ~1.7 and ~1.3 TB/s (a profile's totals less a guessed decoder share). Here each thread
// issues all its loads of a row before it uses them, the bias comes in 16-byte loads, a layer norm
// reads its row from memory once (into registers) and writes 4 values at a time.
constexpr int kRowThreads = 128;
constexpr int kRowUnroll = 4;

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    bias_activation_v2_kernel(T* y, int cols, i64 ld, const float* bias, Activation act) {
  constexpr int kWidth = 16 / static_cast<int>(sizeof(T));
  T* row = y + blockIdx.x * ld;
  const int vectors = cols / kWidth;
  for (int base = 0; base < vectors; base += kRowThreads * kRowUnroll) {
    uint4 raw[kRowUnroll];
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      const int v = base + u * kRowThreads + static_cast<int>(threadIdx.x);
      if (v < vectors) raw[u] = *reinterpret_cast<const uint4*>(row + v * kWidth);
    }
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      const int v = base + u * kRowThreads + static_cast<int>(threadIdx.x);
      if (v >= vectors) break;
      T* e = reinterpret_cast<T*>(&raw[u]);
      float b[kWidth] = {};
      if (bias != nullptr) {
#pragma unroll
        for (int q = 0; q < kWidth / 4; ++q) {
          const float4 f = reinterpret_cast<const float4*>(bias + v * kWidth)[q];
          b[4 * q] = f.x;
          b[4 * q + 1] = f.y;
          b[4 * q + 2] = f.z;
          b[4 * q + 3] = f.w;
        }
      }
#pragma unroll
      for (int w = 0; w < kWidth; ++w) {
        e[w] = from_float<T>(activate(to_float(e[w]) + b[w], act));
      }
      *reinterpret_cast<uint4*>(row + v * kWidth) = raw[u];
    }
  }
}

template <typename Out>
struct alignas(4 * sizeof(Out)) Quad {
  Out v[4];
};

// d % 4 == 0 and d <= 4 * kRowThreads * kVectors.
template <typename Out, int kVectors>
__global__ void __launch_bounds__(kRowThreads)
    layer_norm_v2_kernel(const float* x, const float* shift, Out* y, int d, const float* gamma,
                         const float* beta, float eps) {
  __shared__ float shared[33];
  const float4* row = reinterpret_cast<const float4*>(x + blockIdx.x * static_cast<i64>(d));
  Quad<Out>* out = reinterpret_cast<Quad<Out>*>(y + blockIdx.x * static_cast<i64>(d));
  const int vectors = d / 4;
  float4 v[kVectors];
  float s = 0.0f;
#pragma unroll
  for (int u = 0; u < kVectors; ++u) {
    const int i = u * kRowThreads + static_cast<int>(threadIdx.x);
    v[u] = i < vectors ? row[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  if (shift != nullptr) {
#pragma unroll
    for (int u = 0; u < kVectors; ++u) {
      const int i = u * kRowThreads + static_cast<int>(threadIdx.x);
      if (i >= vectors) break;
      const float4 a = reinterpret_cast<const float4*>(shift)[i];
      v[u].x += a.x;
      v[u].y += a.y;
      v[u].z += a.z;
      v[u].w += a.w;
    }
  }
#pragma unroll
  for (int u = 0; u < kVectors; ++u)
    s += (v[u].x + v[u].y) + (v[u].z + v[u].w);
  const float mean = block_reduce<false>(s, shared) / static_cast<float>(d);
  float q = 0.0f;
#pragma unroll
  for (int u = 0; u < kVectors; ++u) {
    if (u * kRowThreads + static_cast<int>(threadIdx.x) >= vectors) break;
    const float a = v[u].x - mean, b = v[u].y - mean, c = v[u].z - mean, e = v[u].w - mean;
    q += (a * a + b * b) + (c * c + e * e);
  }
  const float inv = rsqrtf(block_reduce<false>(q, shared) / static_cast<float>(d) + eps);
#pragma unroll
  for (int u = 0; u < kVectors; ++u) {
    const int i = u * kRowThreads + static_cast<int>(threadIdx.x);
    if (i >= vectors) break;
    const float4 g = reinterpret_cast<const float4*>(gamma)[i];
    const float4 b = reinterpret_cast<const float4*>(beta)[i];
    Quad<Out> r;
    r.v[0] = from_float<Out>((v[u].x - mean) * inv * g.x + b.x);
    r.v[1] = from_float<Out>((v[u].y - mean) * inv * g.y + b.y);
    r.v[2] = from_float<Out>((v[u].z - mean) * inv * g.z + b.z);
    r.v[3] = from_float<Out>((v[u].w - mean) * inv * g.w + b.w);
    out[i] = r;
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

__global__ void add_rows_kernel(float* x, const float* rows, int d, i64 block) {
  float* row = x + blockIdx.x * static_cast<i64>(d);
  const float* add = rows + (blockIdx.x % block) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    row[c] += add[c];
}

template <typename In, typename Out>
__global__ void transpose_kernel(const In* x, Out* y, i64 c, i64 t) {
  __shared__ float tile[32][33];
  const i64 b = blockIdx.z, t0 = static_cast<i64>(blockIdx.x) * 32,
            c0 = static_cast<i64>(blockIdx.y) * 32;
  const In* in = x + b * c * t;
  Out* out = y + b * c * t;
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    const i64 ci = c0 + j, ti = t0 + threadIdx.x;
    if (ci < c && ti < t) tile[j][threadIdx.x] = to_float(in[ci * t + ti]);
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += blockDim.y) {
    const i64 ti = t0 + j, ci = c0 + threadIdx.x;
    if (ti < t && ci < c) out[ti * c + ci] = from_float<Out>(tile[threadIdx.x][j]);
  }
}

// One block per output row (b, t).
template <typename T>
__global__ void im2col3_kernel(const T* x, T* columns, int t_in, int c_in, int t_out, int stride) {
  const int t = blockIdx.x % t_out, b = blockIdx.x / t_out;
  T* out = columns + blockIdx.x * static_cast<i64>(c_in) * 3;
  for (int col = threadIdx.x; col < c_in * 3; col += blockDim.x) {
    const int ci = col / 3, k = col % 3;
    const int src = t * stride + k - 1;
    out[col] = src >= 0 && src < t_in ? x[(static_cast<i64>(b) * t_in + src) * c_in + ci]
                                      : from_float<T>(0.0f);
  }
}

template <typename T>
__global__ void embed_kernel(const std::int32_t* ids, const std::int32_t* pos, const T* table,
                             const float* positions, float* y, i64 d) {
  const i64 row = blockIdx.x;
  const T* from = table + static_cast<i64>(ids[row]) * d;
  const float* p = positions + static_cast<i64>(pos[row]) * d;
  for (i64 c = threadIdx.x; c < d; c += blockDim.x)
    y[row * d + c] = to_float(from[c]) + p[c];
}

// One block per source row.
template <typename T>
__global__ void write_rows_kernel(const T* src, i64 ld_src, int rows_per_item, T* dst, int width,
                                  i64 dst_block, const int* blocks, const int* starts) {
  const int row = blockIdx.x;
  const int t = row % rows_per_item, b = row / rows_per_item;
  const T* from = src + row * ld_src;
  T* to = dst + (blocks[b] * dst_block + starts[b] + t) * width;
  for (int c = threadIdx.x; c < width; c += blockDim.x)
    to[c] = from[c];
}

// One block per gathered row (a row may be a whole window's states: long).
template <typename T>
__global__ void gather_rows_kernel(const T* x, i64 d, const i64* index, T* y) {
  const T* from = x + index[blockIdx.x] * d;
  T* to = y + blockIdx.x * d;
  for (i64 c = threadIdx.x; c < d; c += blockDim.x)
    to[c] = from[c];
}

constexpr int kAttentionThreads = 256;

// A query element with its bias added (none where bias is null), rounded to the queries' type
// once, as the bias kernel after their product would have rounded it.
template <typename T>
__device__ __forceinline__ float biased_query(float q, const float* bias, i64 index, T) {
  return bias != nullptr ? to_float(from_float<T>(q + bias[index])) : q;
}

// One block per (query row, head, item): scores in shared memory, softmax, then the weighted
// sum of values with the threads split over (key part, dimension). kVector: rows are read 16
// bytes at a time (the host checked the alignment).
template <typename T, bool kVector>
__global__ void row_attention_kernel(RowAttention a) {
  constexpr int kWidth = kVector ? 16 / static_cast<int>(sizeof(T)) : 1;
  extern __shared__ float smem[];
  __shared__ float reduce[33];
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hd = a.head_dim;
  const i64 kb = a.item_index != nullptr ? a.item_index[b] : b;
  const int key_len = a.key_lengths[b];
  const int visible = a.causal ? key_len - a.query_len + i + 1 : key_len;
  float* scores = smem;            // key_block
  float* qs = smem + a.key_block;  // head_dim
  float* partial = qs + hd;        // blockDim.x * kWidth
  const T* q = static_cast<const T*>(a.q) + (static_cast<i64>(b) * a.query_len + i) * a.ld_q +
               static_cast<i64>(h) * hd;
  const T* k = static_cast<const T*>(a.k) + kb * a.key_block * a.ld_k + static_cast<i64>(h) * hd;
  const T* v = static_cast<const T*>(a.v) + kb * a.key_block * a.ld_v + static_cast<i64>(h) * hd;
  for (int c = threadIdx.x; c < hd; c += blockDim.x)
    qs[c] = biased_query(to_float(q[c]), a.q_bias, static_cast<i64>(h) * hd + c, T{}) * a.scale;
  __syncthreads();

  // A key per thread: the block's threads read that many key rows at once.
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    const T* kr = k + static_cast<i64>(j) * a.ld_k;
    float s = 0.0f;
    if constexpr (kVector) {
      for (int c = 0; c < hd; c += kWidth) {
        const uint4 raw = *reinterpret_cast<const uint4*>(kr + c);
        const T* e = reinterpret_cast<const T*>(&raw);
        for (int w = 0; w < kWidth; ++w)
          s += qs[c + w] * to_float(e[w]);
      }
    } else {
      for (int c = 0; c < hd; ++c)
        s += qs[c] * to_float(kr[c]);
    }
    scores[j] = s;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int j = threadIdx.x; j < visible; j += blockDim.x)
    m = fmaxf(m, scores[j]);
  m = block_reduce<true>(m, reduce);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    const float e = __expf(scores[j] - m);
    scores[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce<false>(sum, reduce);  // ends with a barrier

  if (a.capture != nullptr && a.slots.slot[h] >= 0) {
    float* cap =
        a.capture +
        ((static_cast<i64>(b) * a.n_capture + a.slots.slot[h]) * a.query_len + i) * a.key_block;
    for (i64 j = threadIdx.x; j < a.key_block; j += blockDim.x)
      cap[j] = j < visible ? scores[j] * inv : 0.0f;
  }

  // Threads in groups of kWidth dimensions, parts of the keys each.
  const int groups = hd / kWidth;
  const int parts = blockDim.x / groups;
  const int c = (threadIdx.x % groups) * kWidth, part = threadIdx.x / groups;
  float acc[kWidth] = {};
  if (part < parts) {
    for (int j = part; j < visible; j += parts) {
      const float p = scores[j];
      const T* vr = v + static_cast<i64>(j) * a.ld_v + c;
      if constexpr (kVector) {
        const uint4 raw = *reinterpret_cast<const uint4*>(vr);
        const T* e = reinterpret_cast<const T*>(&raw);
        for (int w = 0; w < kWidth; ++w)
          acc[w] += p * to_float(e[w]);
      } else {
        acc[0] += p * to_float(vr[0]);
      }
    }
    for (int w = 0; w < kWidth; ++w)
      partial[part * hd + c + w] = acc[w];
  }
  __syncthreads();
  if (threadIdx.x < hd) {
    float total = 0.0f;
    for (int p = 0; p < parts; ++p)
      total += partial[p * hd + threadIdx.x];
    T* out = static_cast<T*>(a.out) + (static_cast<i64>(b) * a.query_len + i) * a.ld_out +
             static_cast<i64>(h) * hd;
    out[threadIdx.x] = from_float<T>(total * inv);
  }
}

// --- Decoding attention split over the keys ---
// One block per (keys [s * kKeys, ...), query row, head, item): a batch's cross-attention
// reads every window's encoder keys and values each step (large-v3, batch 64: 15.7 GB), so the
// kernel must stream them at the memory's pace. Rows are read by groups of lanes 16 bytes each
// (every warp load is whole 128-byte lines), all of a block's loads issued before they are used,
// and there are enough blocks to fill the GPU at any batch. A block leaves its part's maximum,
// sum of exponentials and unnormalised output in `partial` for the combining kernel; with one
// part it writes the output itself.
constexpr int kSplitWarps = 4;

// The parts of (query row i of item b, head h) combined by one whole block: the parts' outputs
// weighed by their maxima and sums; captured probabilities rescaled to the whole row's. kFresh:
// the parts were written by other blocks of the running kernel, so they are read past the L1
// cache (not coherent between SMs).
template <typename T, bool kFresh>
__device__ void combine_split_parts(const RowAttention& a, int splits, int keys,
                                    const float* partial, int i, int h, int b) {
  const auto load = [](const float* p) {
    if constexpr (kFresh) {
      return __ldcg(p);
    } else {
      return *p;
    }
  };
  const i64 query_row = static_cast<i64>(b) * a.query_len + i;
  const float* parts = partial + (query_row * a.heads + h) * splits * kSplitPartial;
  const auto weight = [&](int s, float top) {
    const float m = load(parts + s * kSplitPartial + kSplitHead);
    return m == -INFINITY ? 0.0f : __expf(m - top);
  };
  float top = -INFINITY;
  for (int s = 0; s < splits; ++s)
    top = fmaxf(top, load(parts + s * kSplitPartial + kSplitHead));
  float total = 0.0f;
  for (int s = 0; s < splits; ++s)
    total += load(parts + s * kSplitPartial + kSplitHead + 1) * weight(s, top);
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  if (threadIdx.x < kSplitHead) {
    float o = 0.0f;
    for (int s = 0; s < splits; ++s)
      o += load(parts + s * kSplitPartial + threadIdx.x) * weight(s, top);
    static_cast<T*>(a.out)[query_row * a.ld_out + static_cast<i64>(h) * kSplitHead + threadIdx.x] =
        from_float<T>(o * inv);
  }
  if (a.capture != nullptr && a.slots.slot[h] >= 0) {
    float* cap =
        a.capture +
        ((static_cast<i64>(b) * a.n_capture + a.slots.slot[h]) * a.query_len + i) * a.key_block;
    for (i64 j = threadIdx.x; j < a.key_block; j += blockDim.x)
      cap[j] = load(cap + j) * (weight(static_cast<int>(j / keys), top) * inv);
  }
}

// One block per (query row, head, item): combine_split_parts.
template <typename T>
__global__ void split_attention_combine_kernel(RowAttention a, int splits, int keys,
                                               const float* partial) {
  const unsigned heads = static_cast<unsigned>(a.heads);
  combine_split_parts<T, false>(a, splits, keys, partial, static_cast<int>(blockIdx.x / heads),
                                static_cast<int>(blockIdx.x % heads), static_cast<int>(blockIdx.y));
}

// With the "fused" tweak: a part block counts itself done in its (query row, head)'s counter
// once its results are visible; the last one combines the parts (no second kernel) and sets the
// counter back to zero for the next launch.
template <typename T>
__device__ void finish_split_part(const RowAttention& a, int splits, int keys, const float* partial,
                                  unsigned* done, int i, int h, int b) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* counter = done + (static_cast<i64>(b) * a.query_len + i) * a.heads + h;
    last = atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1);
    if (last) {
      __threadfence();  // acquire: the other parts' results, before the block reads them
      *counter = 0u;
    }
  }
  __syncthreads();
  if (last) combine_split_parts<T, true>(a, splits, keys, partial, i, h, b);
}

// A 16-byte load that the compiler's front end keeps where it is written (volatile asm; ptxas
// may still schedule it later): the split kernel's early value loads, which would otherwise be
// moved after the scores to save registers.
__device__ __forceinline__ uint4 issued_load(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Tweaks (IFW_CUDA_SPLIT; "heads,early" unless it names others or "none"): kEarlyValues issues a
// part's value loads with its key loads (one wait on memory per block instead of two, at the cost
// of registers: fewer blocks per SM); kHeadsFirst orders the blocks head by head within a part
// (grid: heads, parts x queries, items), so that the blocks that run together read neighbouring
// 128-byte pieces of the same key rows rather than the same head's rows further on; kFused has the
// last part block of a (query row, head) combine the parts (finish_split_part) instead of a second
// kernel.
template <typename T, int kKeys, bool kEarlyValues, bool kHeadsFirst, bool kFused>
__global__ void __launch_bounds__(kSplitWarps * 32)
    split_attention_kernel(RowAttention a, int splits, float* partial, unsigned* done) {
  constexpr int kWidth = 16 / static_cast<int>(sizeof(T));  // elements in a 16-byte load
  constexpr int kLanes = kSplitHead / kWidth;               // lanes reading one key row
  constexpr int kRowsPerWarp = 32 / kLanes;
  constexpr int kRowsPerPass = kRowsPerWarp * kSplitWarps;
  constexpr int kPasses = kKeys / kRowsPerPass;
  __shared__ float scores[kKeys];
  __shared__ float sums[kSplitWarps][kSplitHead];
  // Unsigned: the divisions are cheaper (and the untweaked kernel keeps its registers).
  const unsigned parts = static_cast<unsigned>(splits), heads = static_cast<unsigned>(a.heads);
  const unsigned query_head = kHeadsFirst ? blockIdx.y / parts * heads + blockIdx.x : blockIdx.y;
  const int s = static_cast<int>(kHeadsFirst ? blockIdx.y % parts : blockIdx.x);
  const int i = static_cast<int>(query_head / heads), h = static_cast<int>(query_head % heads);
  const int b = static_cast<int>(blockIdx.z);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = (lane % kLanes) * kWidth;               // the lane's first dimension
  const int row = warp * kRowsPerWarp + lane / kLanes;  // its key row in each pass
  const i64 kb = a.item_index != nullptr ? a.item_index[b] : b;
  const int key_len = a.key_lengths[b];
  const int visible = a.causal ? key_len - a.query_len + i + 1 : key_len;
  const int first = s * kKeys;
  const int count = min(kKeys, visible - first);  // keys of this part this query sees
  const i64 query_row = static_cast<i64>(b) * a.query_len + i;
  float* part = partial + ((query_row * a.heads + h) * splits + s) * kSplitPartial;
  float* cap =
      a.capture != nullptr && a.slots.slot[h] >= 0
          ? a.capture + ((static_cast<i64>(b) * a.n_capture + a.slots.slot[h]) * a.query_len + i) *
                            a.key_block
          : nullptr;
  T* out = static_cast<T*>(a.out) + query_row * a.ld_out + static_cast<i64>(h) * kSplitHead;
  if (count <= 0) {  // nothing visible here
    if (cap != nullptr) {
      for (int j = threadIdx.x; j < kKeys && first + j < a.key_block; j += blockDim.x)
        cap[first + j] = 0.0f;
    }
    if (threadIdx.x < kSplitHead) {
      if (splits == 1) {
        out[threadIdx.x] = from_float<T>(0.0f);
      } else {
        part[threadIdx.x] = 0.0f;
        if (threadIdx.x == 0) {
          part[kSplitHead] = -INFINITY;
          part[kSplitHead + 1] = 0.0f;
        }
      }
    }
    if constexpr (kFused) {
      if (splits > 1) finish_split_part<T>(a, splits, kKeys, partial, done, i, h, b);
    }
    return;
  }
  float q[kWidth];
  {
    const uint4 raw = *reinterpret_cast<const uint4*>(
        static_cast<const T*>(a.q) + query_row * a.ld_q + static_cast<i64>(h) * kSplitHead + c);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int w = 0; w < kWidth; ++w)
      q[w] = biased_query(to_float(e[w]), a.q_bias, static_cast<i64>(h) * kSplitHead + c + w, T{}) *
             a.scale;
  }
  const i64 key0 = kb * a.key_block + first;
  const T* k = static_cast<const T*>(a.k) + key0 * a.ld_k + static_cast<i64>(h) * kSplitHead + c;
  const T* v = static_cast<const T*>(a.v) + key0 * a.ld_v + static_cast<i64>(h) * kSplitHead + c;
  uint4 raw[kPasses];
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
    const int j = p * kRowsPerPass + row;
    raw[p] = j < count ? *reinterpret_cast<const uint4*>(k + j * a.ld_k) : make_uint4(0, 0, 0, 0);
  }
  // With kEarlyValues the values have registers of their own and go out with the keys; else
  // they take the keys' registers once the scores are made.
  [[maybe_unused]] uint4 early[kEarlyValues ? kPasses : 1];
  if constexpr (kEarlyValues) {
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int j = p * kRowsPerPass + row;
      early[p] = j < count ? issued_load(v + j * a.ld_v) : make_uint4(0, 0, 0, 0);
    }
  }
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
    const T* e = reinterpret_cast<const T*>(&raw[p]);
    float d = 0.0f;
#pragma unroll
    for (int w = 0; w < kWidth; ++w)
      d += q[w] * to_float(e[w]);
#pragma unroll
    for (int o = kLanes / 2; o > 0; o >>= 1)  // within the row's lanes
      d += __shfl_xor_sync(0xffffffffu, d, o);
    const int j = p * kRowsPerPass + row;
    if (lane % kLanes == 0) scores[j] = j < count ? d : -INFINITY;
  }
  // The values' loads go out before the scores are reduced.
  if constexpr (kEarlyValues) {
#pragma unroll
    for (int p = 0; p < kPasses; ++p)
      raw[p] = early[p];
  } else {
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int j = p * kRowsPerPass + row;
      raw[p] = j < count ? *reinterpret_cast<const uint4*>(v + j * a.ld_v) : make_uint4(0, 0, 0, 0);
    }
  }
  __syncthreads();
  // Every warp finds the part's maximum and sum itself (kKeys / 32 scores per lane).
  float m = -INFINITY;
  for (int j = lane; j < kKeys; j += 32)
    m = fmaxf(m, scores[j]);
  m = warp_max(m);
  float l = 0.0f;
  for (int j = lane; j < kKeys; j += 32)
    l += j < count ? __expf(scores[j] - m) : 0.0f;
  l = warp_sum(l);
  float acc[kWidth] = {};
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
    const int j = p * kRowsPerPass + row;
    const float weight = j < count ? __expf(scores[j] - m) : 0.0f;
    const T* e = reinterpret_cast<const T*>(&raw[p]);
#pragma unroll
    for (int w = 0; w < kWidth; ++w)
      acc[w] += weight * to_float(e[w]);
  }
#pragma unroll
  for (int o = kLanes; o < 32; o <<= 1)  // over the warp's rows
#pragma unroll
    for (int w = 0; w < kWidth; ++w)
      acc[w] += __shfl_xor_sync(0xffffffffu, acc[w], o);
  if (lane < kLanes) {
#pragma unroll
    for (int w = 0; w < kWidth; ++w)
      sums[warp][c + w] = acc[w];
  }
  if (cap != nullptr) {
    const float scale = splits == 1 ? 1.0f / l : 1.0f;  // the combining kernel rescales
    for (int j = threadIdx.x; j < kKeys && first + j < a.key_block; j += blockDim.x)
      cap[first + j] = j < count ? __expf(scores[j] - m) * scale : 0.0f;
  }
  __syncthreads();
  if (threadIdx.x < kSplitHead) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w)
      o += sums[w][threadIdx.x];
    if (splits == 1) {
      out[threadIdx.x] = from_float<T>(o / l);
    } else {
      part[threadIdx.x] = o;
      if (threadIdx.x == 0) {
        part[kSplitHead] = m;
        part[kSplitHead + 1] = l;
      }
    }
  }
  if constexpr (kFused) {
    if (splits > 1) finish_split_part<T>(a, splits, kKeys, partial, done, i, h, b);
  }
}

template <typename P>
__global__ void masked_softmax_kernel(const float* scores, P* probs, int query_len, int key_len,
                                      bool causal, HeadSlots slots, float* capture, i64 key_block) {
  extern __shared__ float row[];
  __shared__ float reduce[33];
  const int i = blockIdx.x, h = blockIdx.y;
  const i64 offset = (static_cast<i64>(h) * query_len + i) * key_len;
  const int visible = causal ? key_len - query_len + i + 1 : key_len;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    row[j] = scores[offset + j];
    m = fmaxf(m, row[j]);
  }
  m = block_reduce<true>(m, reduce);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < visible; j += blockDim.x) {
    const float e = __expf(row[j] - m);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / block_reduce<false>(sum, reduce);
  for (int j = threadIdx.x; j < key_len; j += blockDim.x)
    probs[offset + j] = from_float<P>(j < visible ? row[j] * inv : 0.0f);
  if (capture != nullptr && slots.slot[h] >= 0) {
    float* cap = capture + (static_cast<i64>(slots.slot[h]) * query_len + i) * key_block;
    for (i64 j = threadIdx.x; j < key_block; j += blockDim.x)
      cap[j] = j < visible ? row[j] * inv : 0.0f;
  }
}

}  // namespace

void convert(const void* in, DType in_type, void* out, DType out_type, i64 n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(in_type, [&](auto in_tag) {
    using In = decltype(in_tag);
    dispatch(out_type, [&](auto out_tag) {
      using Out = decltype(out_tag);
      convert_kernel<In, Out><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const In*>(in),
                                                                    static_cast<Out*>(out), n);
    });
  });
  check_launch();
}

void layer_norm(const float* x, const float* shift, void* y, DType y_type, i64 rows, i64 d,
                const float* gamma, const float* beta, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  const i64 vectors = d / 4;
  if (row_kernels_v2() && d % 4 == 0 && vectors <= 4 * kRowThreads && aligned16(x) &&
      aligned16(y) && aligned16(gamma) && aligned16(beta) &&
      (shift == nullptr || aligned16(shift))) {
    dispatch(y_type, [&](auto tag) {
      using Out = decltype(tag);
      const auto launch = [&](auto kernel) {
        kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
            x, shift, static_cast<Out*>(y), static_cast<int>(d), gamma, beta, eps);
      };
      if (vectors <= kRowThreads) {
        launch(layer_norm_v2_kernel<Out, 1>);
      } else if (vectors <= 2 * kRowThreads) {
        launch(layer_norm_v2_kernel<Out, 2>);
      } else if (vectors <= 3 * kRowThreads) {
        launch(layer_norm_v2_kernel<Out, 3>);
      } else {
        launch(layer_norm_v2_kernel<Out, 4>);
      }
    });
    check_launch();
    return;
  }
  const int threads = d >= 1024 ? 256 : 128;
  dispatch(y_type, [&](auto tag) {
    using Out = decltype(tag);
    layer_norm_kernel<Out><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        x, shift, static_cast<Out*>(y), d, gamma, beta, eps);
  });
  check_launch();
}

void bias_activation(void* y, DType type, i64 rows, i64 cols, i64 ld, const float* bias,
                     Activation act, cudaStream_t stream) {
  if (rows * cols == 0 || (bias == nullptr && act == Activation::kNone)) return;
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    const i64 width = 16 / static_cast<i64>(sizeof(T));
    const bool vector = cols % width == 0 && ld % width == 0 && aligned16(y);
    if (vector && row_kernels_v2() && (bias == nullptr || aligned16(bias))) {
      bias_activation_v2_kernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
          static_cast<T*>(y), static_cast<int>(cols), ld, bias, act);
    } else if (vector) {
      bias_activation_kernel<T, true><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
          static_cast<T*>(y), static_cast<int>(cols), ld, bias, act);
    } else {
      bias_activation_kernel<T, false><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
          static_cast<T*>(y), static_cast<int>(cols), ld, bias, act);
    }
  });
  check_launch();
}

void add_rows(float* x, const float* rows, i64 total_rows, i64 d, i64 block, cudaStream_t stream) {
  if (total_rows * d == 0) return;
  add_rows_kernel<<<static_cast<unsigned>(total_rows), kThreads, 0, stream>>>(
      x, rows, static_cast<int>(d), block);
  check_launch();
}

void transpose_last2(const void* x, DType x_type, void* y, DType y_type, i64 batch, i64 c, i64 t,
                     cudaStream_t stream) {
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned>((t + 31) / 32), static_cast<unsigned>((c + 31) / 32),
                  static_cast<unsigned>(batch));
  dispatch(x_type, [&](auto in_tag) {
    using In = decltype(in_tag);
    dispatch(y_type, [&](auto out_tag) {
      using Out = decltype(out_tag);
      transpose_kernel<In, Out>
          <<<grid, block, 0, stream>>>(static_cast<const In*>(x), static_cast<Out*>(y), c, t);
    });
  });
  check_launch();
}

void im2col3(const void* x, void* columns, DType type, i64 batch, i64 t_in, i64 c_in, i64 t_out,
             int stride, cudaStream_t stream) {
  if (batch * t_out == 0) return;
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    im2col3_kernel<T><<<static_cast<unsigned>(batch * t_out), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(columns), static_cast<int>(t_in),
        static_cast<int>(c_in), static_cast<int>(t_out), stride);
  });
  check_launch();
}

void embed(const std::int32_t* ids, const std::int32_t* pos, i64 n, const void* table,
           DType table_type, const float* positions, float* y, i64 d, cudaStream_t stream) {
  if (n == 0) return;
  dispatch(table_type, [&](auto tag) {
    using T = decltype(tag);
    embed_kernel<T><<<static_cast<unsigned>(n), 128, 0, stream>>>(
        ids, pos, static_cast<const T*>(table), positions, y, d);
  });
  check_launch();
}

void write_rows(const void* src, i64 ld_src, DType type, int batch, int rows_per_item, void* dst,
                i64 width, i64 dst_block, const int* blocks, const int* starts,
                cudaStream_t stream) {
  if (static_cast<i64>(batch) * rows_per_item * width == 0) return;
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    write_rows_kernel<T><<<static_cast<unsigned>(batch * rows_per_item), 128, 0, stream>>>(
        static_cast<const T*>(src), ld_src, rows_per_item, static_cast<T*>(dst),
        static_cast<int>(width), dst_block, blocks, starts);
  });
  check_launch();
}

void gather_rows(const void* x, DType type, i64 d, const i64* index, i64 n, void* y,
                 cudaStream_t stream) {
  if (n * d == 0) return;
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    gather_rows_kernel<T><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        static_cast<const T*>(x), d, index, static_cast<T*>(y));
  });
  check_launch();
}

void row_attention(const RowAttention& a, cudaStream_t stream) {
  if (a.head_dim < 1 || a.head_dim > kAttentionThreads) {
    throw std::invalid_argument("cuda attention: head size must be 1 to 256");
  }
  if (a.batch == 0) return;
  const int width = 16 / static_cast<int>(dtype_bytes(a.type));
  const bool vector = a.head_dim % width == 0 && a.ld_k % width == 0 && a.ld_v % width == 0 &&
                      aligned16(a.k) && aligned16(a.v);
  const std::size_t shared = (static_cast<std::size_t>(a.key_block) + a.head_dim +
                              static_cast<std::size_t>(kAttentionThreads) * (vector ? width : 1)) *
                             sizeof(float);
  const dim3 grid(static_cast<unsigned>(a.query_len), static_cast<unsigned>(a.heads),
                  static_cast<unsigned>(a.batch));
  dispatch(a.type, [&](auto tag) {
    using T = decltype(tag);
    const auto launch = [&](auto kernel) {
      if (shared > 48 * 1024) {
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared));
      }
      kernel<<<grid, kAttentionThreads, shared, stream>>>(a);
    };
    if (vector) {
      launch(row_attention_kernel<T, true>);
    } else {
      launch(row_attention_kernel<T, false>);
    }
  });
  check_launch();
}

namespace {
std::string_view decode_attention_choice() {
  return switch_value("IFW_CUDA_DECODE_ATTENTION", {"split", "split256", "rows", "mixed"});
}
}  // namespace

int split_attention_keys() {
  const std::string_view choice = decode_attention_choice();
  return choice == "rows" ? 0 : choice == "split256" ? 256 : 128;
}

bool split_self_attention() {
  return decode_attention_choice() != "mixed";
}

bool split_attention_supported(const RowAttention& a) {
  const i64 width = 16 / static_cast<i64>(dtype_bytes(a.type));
  return a.head_dim == kSplitHead && a.ld_q % width == 0 && a.ld_k % width == 0 &&
         a.ld_v % width == 0 && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
         a.query_len * a.heads <= 65535 && a.batch <= 65535 && a.key_block >= 1;
}

int split_attention_parts(const RowAttention& a, int keys) {
  return static_cast<int>((a.key_block + keys - 1) / keys);
}

// A launch of the split kernel (host code: the .cu files are C++17, so no template lambdas).
struct SplitLaunch {
  dim3 grid;
  const RowAttention& a;
  int splits;
  float* partial;
  unsigned* done;
  cudaStream_t stream;
  template <typename Kernel>
  void run(Kernel kernel) const {
    kernel<<<grid, kSplitWarps * 32, 0, stream>>>(a, splits, partial, done);
  }
  template <typename T, bool kEarly, bool kHeads>
  void run_128(bool fused) const {
    fused ? run(split_attention_kernel<T, 128, kEarly, kHeads, true>)
          : run(split_attention_kernel<T, 128, kEarly, kHeads, false>);
  }
};

void split_attention(const RowAttention& a, int keys, float* partial, unsigned* done,
                     cudaStream_t stream) {
  if (!split_attention_supported(a) || (keys != 128 && keys != 256)) {
    throw std::invalid_argument("split attention: unsupported");
  }
  if (a.batch == 0) return;
  const int splits = split_attention_parts(a, keys);
  if (splits > 1 && partial == nullptr) throw std::invalid_argument("split attention: no partials");
  // The tweaks apply to parts of 128 keys (the default).
  const SplitTweaks tweaks = keys == 128 ? split_tweaks() : SplitTweaks{};
  const bool heads_first = tweaks.heads_first && splits * a.query_len <= 65535;
  const bool fused = tweaks.fused && splits > 1 && done != nullptr &&
                     static_cast<i64>(a.batch) * a.query_len * a.heads <= kSplitCounters;
  const dim3 grid =
      heads_first
          ? dim3(static_cast<unsigned>(a.heads), static_cast<unsigned>(splits * a.query_len),
                 static_cast<unsigned>(a.batch))
          : dim3(static_cast<unsigned>(splits), static_cast<unsigned>(a.query_len * a.heads),
                 static_cast<unsigned>(a.batch));
  dispatch(a.type, [&](auto tag) {
    using T = decltype(tag);
    const SplitLaunch launch{grid, a, splits, partial, done, stream};
    if (keys == 256) {
      launch.run(split_attention_kernel<T, 256, false, false, false>);
    } else if (tweaks.early_values) {
      heads_first ? launch.run_128<T, true, true>(fused) : launch.run_128<T, true, false>(fused);
    } else {
      heads_first ? launch.run_128<T, false, true>(fused) : launch.run_128<T, false, false>(fused);
    }
    if (splits > 1 && !fused) {
      const dim3 rows(static_cast<unsigned>(a.query_len * a.heads), static_cast<unsigned>(a.batch));
      split_attention_combine_kernel<T><<<rows, 128, 0, stream>>>(a, splits, keys, partial);
    }
  });
  check_launch();
}

void masked_softmax(const float* scores, void* probs, DType type, int heads, int query_len,
                    int key_len, bool causal, const HeadSlots& slots, float* capture, i64 key_block,
                    cudaStream_t stream) {
  const std::size_t shared = static_cast<std::size_t>(key_len) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(query_len), static_cast<unsigned>(heads));
  dispatch(type, [&](auto tag) {
    using P = decltype(tag);
    if (shared > 48 * 1024) {
      cudaFuncSetAttribute(masked_softmax_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(shared));
    }
    masked_softmax_kernel<P><<<grid, 256, shared, stream>>>(
        scores, static_cast<P*>(probs), query_len, key_len, causal, slots, capture, key_block);
  });
  check_launch();
}

void choose_tokens(const float* logits, i64 rows, i64 vocab, const std::uint8_t* flags,
                   const ChoiceRules* rules, ChosenToken* out, cudaStream_t stream) {
  if (rows == 0) return;
  if (vocab < 1 || vocab > INT_MAX || rows > 65535) {
    throw std::invalid_argument("cuda choose_tokens: vocabulary or rows out of range");
  }
  choose_tokens_kernel<<<static_cast<unsigned>(rows), kChooseThreads, 0, stream>>>(
      logits, static_cast<int>(vocab), flags, rules, out);
  check_launch();
}

}  // namespace ifw::backend::cuda
