// Encoder self-attention in one pass over the keys (FlashAttention-2's scheme on WMMA tensor
// cores): per block 64 queries of one head of one item, key tiles of 64 streamed through shared
// memory, softmax kept online per row, so the 1500 x 1500 scores never reach device memory.
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "backend/cuda/kernels.hpp"

namespace ifw::backend::cuda {
namespace {

using namespace nvcuda;
using i64 = std::int64_t;

constexpr int kTile = 64;            // queries per block, keys per tile, head size
constexpr int kWarps = 4;            // each warp owns 16 query rows
constexpr int kHalfLd = kTile + 8;   // padded rows of 16-bit tiles (ldm multiple of 8)
constexpr int kFloatLd = kTile + 4;  // padded rows of float tiles (ldm multiple of 4)
constexpr std::size_t kSharedBytes =
    3 * kTile * kHalfLd * 2 +         // Q, K, V tiles
    kWarps * 16 * kFloatLd * 4 * 2 +  // per warp: scores (then P.V), output
    kWarps * 16 * kHalfLd * 2;        // per warp: probabilities

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Rows [row0, row0 + 64) of a head's 64 columns into a padded shared tile; rows past `rows`
// are zeros. 16-byte loads: the host checked the alignment.
template <typename T>
__device__ void load_tile(const T* src, i64 ld, int row0, int rows, T* tile) {
  for (int i = threadIdx.x; i < kTile * kTile / 8; i += blockDim.x) {
    const int r = i / 8, c = (i % 8) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < rows) value = *reinterpret_cast<const uint4*>(src + (row0 + r) * ld + c);
    *reinterpret_cast<uint4*>(tile + r * kHalfLd + c) = value;
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) flash_attention_kernel(FlashAttention a) {
  extern __shared__ __align__(128) unsigned char shared[];
  T* qs = reinterpret_cast<T*>(shared);
  T* ks = qs + kTile * kHalfLd;
  T* vs = ks + kTile * kHalfLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* scores = reinterpret_cast<float*>(vs + kTile * kHalfLd) + warp * 16 * kFloatLd;
  float* output = reinterpret_cast<float*>(vs + kTile * kHalfLd) + (kWarps + warp) * 16 * kFloatLd;
  T* probs = reinterpret_cast<T*>(reinterpret_cast<float*>(vs + kTile * kHalfLd) +
                                  2 * kWarps * 16 * kFloatLd) +
             warp * 16 * kHalfLd;

  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z;
  const T* q = static_cast<const T*>(a.q) + static_cast<i64>(b) * a.query_len * a.ld_q + h * kTile;
  const T* k = static_cast<const T*>(a.k) + static_cast<i64>(b) * a.key_block * a.ld_k + h * kTile;
  const T* v = static_cast<const T*>(a.v) + static_cast<i64>(b) * a.key_block * a.ld_v + h * kTile;
  load_tile(q + static_cast<i64>(q0) * a.ld_q, a.ld_q, 0, a.query_len - q0, qs);

  // Lane pairs share a row: row `r`, columns [c0, c0 + 32).
  const int r = lane / 2, c0 = (lane % 2) * 32;
  for (int c = c0; c < c0 + 32; ++c)
    output[r * kFloatLd + c] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (int k0 = 0; k0 < a.key_len; k0 += kTile) {
    __syncthreads();  // the previous tiles are no longer read
    load_tile(k, a.ld_k, k0, a.key_len, ks);
    load_tile(v, a.ld_v, k0, a.key_len, vs);
    __syncthreads();

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s[4];
    for (int n = 0; n < 4; ++n)
      wmma::fill_fragment(s[n], 0.0f);
    for (int kk = 0; kk < 4; ++kk) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa;
      wmma::load_matrix_sync(qa, qs + warp * 16 * kHalfLd + kk * 16, kHalfLd);
      for (int n = 0; n < 4; ++n) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kb;  // K^T
        wmma::load_matrix_sync(kb, ks + n * 16 * kHalfLd + kk * 16, kHalfLd);
        wmma::mma_sync(s[n], qa, kb, s[n]);
      }
    }
    for (int n = 0; n < 4; ++n)
      wmma::store_matrix_sync(scores + n * 16, s[n], kFloatLd, wmma::mem_row_major);
    __syncwarp();

    float* row = scores + r * kFloatLd;
    float tile_max = -INFINITY;
    for (int c = c0; c < c0 + 32; ++c) {
      const float x = k0 + c < a.key_len ? row[c] * a.scale : -INFINITY;
      row[c] = x;
      tile_max = fmaxf(tile_max, x);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);  // finite: every tile holds a key
    float sum = 0.0f;
    for (int c = c0; c < c0 + 32; ++c) {
      const float p = __expf(row[c] - m_new);
      probs[r * kHalfLd + c] = from_float<T>(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    const float alpha = __expf(m - m_new);
    m = m_new;
    l = l * alpha + sum;
    __syncwarp();

    // P . V into the scores' space, then output = output * alpha + P . V.
    for (int n = 0; n < 4; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::fill_fragment(o, 0.0f);
      for (int kk = 0; kk < 4; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
        wmma::load_matrix_sync(pa, probs + kk * 16, kHalfLd);
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vb;
        wmma::load_matrix_sync(vb, vs + kk * 16 * kHalfLd + n * 16, kHalfLd);
        wmma::mma_sync(o, pa, vb, o);
      }
      wmma::store_matrix_sync(scores + n * 16, o, kFloatLd, wmma::mem_row_major);
    }
    __syncwarp();
    for (int c = c0; c < c0 + 32; ++c)
      output[r * kFloatLd + c] = output[r * kFloatLd + c] * alpha + row[c];
    __syncwarp();
  }

  const int query = q0 + warp * 16 + r;
  if (query < a.query_len) {
    T* out =
        static_cast<T*>(a.out) + (static_cast<i64>(b) * a.query_len + query) * a.ld_out + h * kTile;
    const float inv = 1.0f / l;
    for (int c = c0; c < c0 + 32; ++c)
      out[c] = from_float<T>(output[r * kFloatLd + c] * inv);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool flash_attention_supported(const FlashAttention& a) {
  return (a.type == DType::kF16 || a.type == DType::kBF16) && a.head_dim == kTile &&
         a.key_len >= 1 && a.ld_q % 8 == 0 && a.ld_k % 8 == 0 && a.ld_v % 8 == 0 &&
         aligned16(a.q) && aligned16(a.k) && aligned16(a.v);
}

void flash_attention(const FlashAttention& a, cudaStream_t stream) {
  if (!flash_attention_supported(a)) throw std::invalid_argument("flash attention: unsupported");
  const dim3 grid(static_cast<unsigned>((a.query_len + kTile - 1) / kTile),
                  static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  const auto launch = [&](auto kernel) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(kSharedBytes));
    kernel<<<grid, kWarps * 32, kSharedBytes, stream>>>(a);
  };
  if (a.type == DType::kF16) {
    launch(flash_attention_kernel<__half>);
  } else {
    launch(flash_attention_kernel<__nv_bfloat16>);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("flash attention launch failed: ") +
                             cudaGetErrorString(err));
  }
}

}  // namespace ifw::backend::cuda
