// Encoder self-attention in one pass over the keys (FlashAttention-2's scheme): per block 64
// queries of one head of one item (16 per warp), key tiles of 64 staged in shared memory, scores
// and probabilities kept in registers as the tensor cores' fragments (mma.sync m16n8k16, float32
// accumulation), softmax online per row, so the 1500 x 1500 scores never reach device memory.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/kernels.hpp"

namespace ifw::backend::cuda {
namespace {

using i64 = std::int64_t;

constexpr int kHead = 64;       // head size
constexpr int kKeys = 64;       // keys per tile
constexpr int kWarps = 4;       // 16 query rows each
constexpr int kLd = kHead + 8;  // padded shared rows: fragment reads hit 32 distinct banks

__device__ __forceinline__ std::uint32_t pack(float lo, float hi, __half) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}
__device__ __forceinline__ std::uint32_t pack(float lo, float hi, __nv_bfloat16) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// d += a . b for one 16x8 tile (a: 16x16 row-major fragment, b: 16x8 column fragment).
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                    std::uint32_t b1, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                    std::uint32_t b1, __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename T>
__device__ __forceinline__ std::uint32_t load_pair(const T* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) flash_attention_kernel(FlashAttention a) {
  __shared__ __align__(16) T keys[kKeys * kLd];    // [key][dim]
  __shared__ __align__(16) T values[kHead * kLd];  // transposed: [dim][key]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // fragment row group, thread in group
  const int h = blockIdx.y, b = blockIdx.z;
  const int row0 = blockIdx.x * (kWarps * 16) + warp * 16;  // this warp's first query
  const T* q = static_cast<const T*>(a.q) + static_cast<i64>(b) * a.query_len * a.ld_q + h * kHead;
  const T* k = static_cast<const T*>(a.k) + static_cast<i64>(b) * a.key_block * a.ld_k + h * kHead;
  const T* v = static_cast<const T*>(a.v) + static_cast<i64>(b) * a.key_block * a.ld_v + h * kHead;

  // Q as A fragments for the four 16-wide slices of the head: rows g and g + 8.
  std::uint32_t qa[4][4];
  {
    const bool r0 = row0 + g < a.query_len, r1 = row0 + g + 8 < a.query_len;
    const T* q0 = q + static_cast<i64>(row0 + g) * a.ld_q;
    const T* q1 = q + static_cast<i64>(row0 + g + 8) * a.ld_q;
    for (int kc = 0; kc < 4; ++kc) {
      const int c = kc * 16 + 2 * t;
      qa[kc][0] = r0 ? load_pair(q0 + c) : 0u;
      qa[kc][1] = r1 ? load_pair(q1 + c) : 0u;
      qa[kc][2] = r0 ? load_pair(q0 + c + 8) : 0u;
      qa[kc][3] = r1 ? load_pair(q1 + c + 8) : 0u;
    }
  }

  float o[8][4] = {};  // output: 8 tiles of 8 dims; [0..1] row g, [2..3] row g + 8
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const float scale = a.scale * 1.4426950408889634f;  // exp(x) = exp2(x * log2 e)

  for (int k0 = 0; k0 < a.key_len; k0 += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    for (int i = threadIdx.x; i < kKeys * kHead / 8; i += blockDim.x) {
      const int r = i / 8, c = (i % 8) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (k0 + r < a.key_len) {
        kv = *reinterpret_cast<const uint4*>(k + static_cast<i64>(k0 + r) * a.ld_k + c);
        vv = *reinterpret_cast<const uint4*>(v + static_cast<i64>(k0 + r) * a.ld_v + c);
      }
      *reinterpret_cast<uint4*>(keys + r * kLd + c) = kv;
      const T* vs = reinterpret_cast<const T*>(&vv);
      for (int e = 0; e < 8; ++e)
        values[(c + e) * kLd + r] = vs[e];
    }
    __syncthreads();

    // Scores of 64 keys: 8 tiles of 8 keys.
    float s[8][4];
    for (int n = 0; n < 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const T* kr = keys + (n * 8 + g) * kLd + 2 * t;
      for (int kc = 0; kc < 4; ++kc)
        mma(s[n], qa[kc], load_pair(kr + kc * 16), load_pair(kr + kc * 16 + 8), T{});
    }
    float mx0 = -INFINITY, mx1 = -INFINITY;
    for (int n = 0; n < 8; ++n) {
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + n * 8 + 2 * t + (e & 1);
        s[n][e] = key < a.key_len ? s[n][e] * scale : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
      mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
    }
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
    }
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);  // finite: each tile holds a key
    const float alpha0 = exp2f(m0 - n0), alpha1 = exp2f(m1 - n1);
    m0 = n0;
    m1 = n1;
    float sum0 = 0.0f, sum1 = 0.0f;
    for (int n = 0; n < 8; ++n) {
      s[n][0] = exp2f(s[n][0] - n0);
      s[n][1] = exp2f(s[n][1] - n0);
      s[n][2] = exp2f(s[n][2] - n1);
      s[n][3] = exp2f(s[n][3] - n1);
      sum0 += s[n][0] + s[n][1];
      sum1 += s[n][2] + s[n][3];
    }
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      sum0 += __shfl_xor_sync(0xffffffffu, sum0, o2);
      sum1 += __shfl_xor_sync(0xffffffffu, sum1, o2);
    }
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
    for (int n = 0; n < 8; ++n) {
      o[n][0] *= alpha0;
      o[n][1] *= alpha0;
      o[n][2] *= alpha1;
      o[n][3] *= alpha1;
    }
    // P . V: the score tiles are already laid out as A fragments of 16 keys each.
    for (int kc = 0; kc < 4; ++kc) {
      const std::uint32_t pa[4] = {pack(s[2 * kc][0], s[2 * kc][1], T{}),
                                   pack(s[2 * kc][2], s[2 * kc][3], T{}),
                                   pack(s[2 * kc + 1][0], s[2 * kc + 1][1], T{}),
                                   pack(s[2 * kc + 1][2], s[2 * kc + 1][3], T{})};
      for (int n = 0; n < 8; ++n) {
        const T* vr = values + (n * 8 + g) * kLd + kc * 16 + 2 * t;
        mma(o[n], pa, load_pair(vr), load_pair(vr + 8), T{});
      }
    }
  }

  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  T* out = static_cast<T*>(a.out) + static_cast<i64>(b) * a.query_len * a.ld_out + h * kHead;
  for (int n = 0; n < 8; ++n) {
    const int c = n * 8 + 2 * t;
    if (row0 + g < a.query_len) {
      *reinterpret_cast<std::uint32_t*>(out + static_cast<i64>(row0 + g) * a.ld_out + c) =
          pack(o[n][0] * inv0, o[n][1] * inv0, T{});
    }
    if (row0 + g + 8 < a.query_len) {
      *reinterpret_cast<std::uint32_t*>(out + static_cast<i64>(row0 + g + 8) * a.ld_out + c) =
          pack(o[n][2] * inv1, o[n][3] * inv1, T{});
    }
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool flash_attention_supported(const FlashAttention& a) {
  return (a.type == DType::kF16 || a.type == DType::kBF16) && a.head_dim == kHead &&
         a.key_len >= 1 && a.ld_q % 8 == 0 && a.ld_k % 8 == 0 && a.ld_v % 8 == 0 &&
         a.ld_out % 2 == 0 && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
         aligned16(a.out);
}

void flash_attention(const FlashAttention& a, cudaStream_t stream) {
  if (!flash_attention_supported(a)) throw std::invalid_argument("flash attention: unsupported");
  const dim3 grid(static_cast<unsigned>((a.query_len + kWarps * 16 - 1) / (kWarps * 16)),
                  static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  if (a.type == DType::kF16) {
    flash_attention_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(a);
  } else {
    flash_attention_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(a);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("flash attention launch failed: ") +
                             cudaGetErrorString(err));
  }
}

}  // namespace ifw::backend::cuda
