// Encoder self-attention in one pass over the keys (FlashAttention-2's scheme): per block 64
// queries of one head of one item (16 per warp), key tiles of 64 staged in shared memory, scores
// and probabilities kept in registers as the tensor cores' fragments (mma.sync m16n8k16, float32
// accumulation), softmax online per row, so the 1500 x 1500 scores never reach device memory.
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/environment.hpp"
#include "backend/cuda/flash_softmax.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/tensor_core.cuh"

namespace ifw::backend::cuda {
namespace {

using namespace flash;

constexpr int kKeys = 64;       // keys per tile
constexpr int kWarps = 4;       // 16 query rows each
constexpr int kLd = kHead + 8;  // padded shared rows: fragment reads hit 32 distinct banks

// One tile of 64 keys' scores s (8 fragments of 8 keys) into probabilities, with the running
// maximum, sum and output rescaled: FlashAttention-2's online softmax. Keys from key_len on are
// masked.
__device__ __forceinline__ void online_softmax(float (&s)[8][4], float (&o)[8][4], SoftmaxState& st,
                                               int k0, int key_len, float scale, int t) {
  float mx0 = -INFINITY, mx1 = -INFINITY;
  for (int n = 0; n < 8; ++n) {
    for (int e = 0; e < 4; ++e) {
      const int key = k0 + n * 8 + 2 * t + (e & 1);
      s[n][e] = key < key_len ? s[n][e] * scale : -INFINITY;
    }
    mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
    mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
  }
  row_max(mx0, mx1);
  const float n0 = fmaxf(st.m0, mx0), n1 = fmaxf(st.m1, mx1);  // finite: each tile holds a key
  const float alpha0 = exp2f(st.m0 - n0), alpha1 = exp2f(st.m1 - n1);
  st.m0 = n0;
  st.m1 = n1;
  float sum0 = 0.0f, sum1 = 0.0f;
  for (int n = 0; n < 8; ++n) {
    s[n][0] = exp2f(s[n][0] - n0);
    s[n][1] = exp2f(s[n][1] - n0);
    s[n][2] = exp2f(s[n][2] - n1);
    s[n][3] = exp2f(s[n][3] - n1);
    sum0 += s[n][0] + s[n][1];
    sum1 += s[n][2] + s[n][3];
  }
  add_tile(o, st, alpha0, alpha1, sum0, sum1);
}

// The warp's Q rows as A fragments for the head's four 16-wide slices (zeros past query_len),
// with the head's part of the query bias added where there is one (rounded once, as the bias
// kernel after a product rounds).
template <typename T>
__device__ __forceinline__ void load_queries(std::uint32_t (&qa)[4][4], const T* q, i64 ld_q,
                                             const float* bias, int row0, int query_len, int g,
                                             int t) {
  const bool r0 = row0 + g < query_len, r1 = row0 + g + 8 < query_len;
  const T* q0 = q + static_cast<i64>(row0 + g) * ld_q;
  const T* q1 = q + static_cast<i64>(row0 + g + 8) * ld_q;
  const auto load = [&](const T* row, int c) {
    return biased_pair(load_pair(row + c), bias != nullptr ? bias + c : nullptr, T{});
  };
  for (int kc = 0; kc < 4; ++kc) {
    const int c = kc * 16 + 2 * t;
    qa[kc][0] = r0 ? load(q0, c) : 0u;
    qa[kc][1] = r1 ? load(q1, c) : 0u;
    qa[kc][2] = r0 ? load(q0, c + 8) : 0u;
    qa[kc][3] = r1 ? load(q1, c + 8) : 0u;
  }
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
  load_queries(qa, q, a.ld_q, head_bias(a, h), row0, a.query_len, g, t);

  float o[8][4] = {};  // output: 8 tiles of 8 dims; [0..1] row g, [2..3] row g + 8
  SoftmaxState state;
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
    online_softmax(s, o, state, k0, a.key_len, scale, t);
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

  store_rows(a, o, state, b, h, row0, g, t, T{});
}

// --- Version 2 (the default where there is no sm_90a code; IFW_CUDA_FLASH=1 selects version 1
// above) ---
// 8 warps (128 queries) share each key tile, tiles are double-buffered with cp.async (the next
// tile loads while this one is computed), K and V stay [key][dim] in shared memory and the
// tensor cores' B fragments come from ldmatrix (.trans for V), with no transposing stores.
constexpr int kWarps2 = 8;

// Keys [k0, k0 + 64) of K and V into one stage of shared memory (64 keys x 128 bytes each, 16
// bytes per asynchronous copy, zeros past key_len), by all of the block's threads; committed as
// one group of copies.
template <typename T>
__device__ __forceinline__ void load_key_tile(const FlashAttention& a, const T* k, const T* v,
                                              int k0, T* keys, T* values) {
  for (int i = threadIdx.x; i < kKeys * kHead / 8; i += blockDim.x) {
    const int r = i / 8, c = (i % 8) * 8;
    const bool valid = k0 + r < a.key_len;
    const i64 row = valid ? k0 + r : 0;
    copy_async16(&keys[r * kLd + c], k + row * a.ld_k + c, valid);
    copy_async16(&values[r * kLd + c], v + row * a.ld_v + c, valid);
  }
  commit_copies();
}

template <typename T>
__global__ void __launch_bounds__(kWarps2 * 32, 2) flash_attention_v2_kernel(FlashAttention a) {
  // Two stages of a 64-key tile of K and of V, [key][dim] with padded rows (ldmatrix reads 8
  // rows of 16 bytes: 144-byte rows put them in distinct banks).
  __shared__ __align__(16) T keys[2][kKeys * kLd];
  __shared__ __align__(16) T values[2][kKeys * kLd];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  const int row0 = blockIdx.x * (kWarps2 * 16) + warp * 16;
  const T* q = static_cast<const T*>(a.q) + static_cast<i64>(b) * a.query_len * a.ld_q + h * kHead;
  const T* k = static_cast<const T*>(a.k) + static_cast<i64>(b) * a.key_block * a.ld_k + h * kHead;
  const T* v = static_cast<const T*>(a.v) + static_cast<i64>(b) * a.key_block * a.ld_v + h * kHead;

  // Tile `tile` into stage `stage`.
  const auto load_tile = [&](int tile, int stage) {
    load_key_tile(a, k, v, tile * kKeys, keys[stage], values[stage]);
  };

  std::uint32_t qa[4][4];
  load_queries(qa, q, a.ld_q, head_bias(a, h), row0, a.query_len, g, t);
  float o[8][4] = {};
  SoftmaxState state;
  const float scale = a.scale * 1.4426950408889634f;

  const int tiles = (a.key_len + kKeys - 1) / kKeys;
  load_tile(0, 0);
  // Lane l addresses row l % 8 of matrix l / 8.
  const int mr = lane % 8, mj = lane / 8;
  for (int tile = 0; tile < tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < tiles) {
      load_tile(tile + 1, stage ^ 1);
      wait_copies<1>();  // this tile's copies are done, the next one's may not be
    } else {
      wait_copies<0>();
    }
    __syncthreads();
    const T* ks = keys[stage];
    const T* vs = values[stage];

    // Scores: for 8 keys n*8.., matrices (keys, dims mj*8..) then (keys, dims 32 + mj*8..) give
    // B fragments of the four 16-dim slices.
    float s[8][4];
    for (int n = 0; n < 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      std::uint32_t lo[4], hi[4];
      load_matrices(lo, ks + (n * 8 + mr) * kLd + mj * 8);
      load_matrices(hi, ks + (n * 8 + mr) * kLd + 32 + mj * 8);
      mma(s[n], qa[0], lo[0], lo[1], T{});
      mma(s[n], qa[1], lo[2], lo[3], T{});
      mma(s[n], qa[2], hi[0], hi[1], T{});
      mma(s[n], qa[3], hi[2], hi[3], T{});
    }
    online_softmax(s, o, state, tile * kKeys, a.key_len, scale, t);

    // P . V: for 16 keys kc*16.. and 16 dims n*8.., transposed matrices (keys kc*16 + (mj&1)*8..,
    // dims (n + mj/2)*8..) give B fragments of dims n and n + 1.
    for (int kc = 0; kc < 4; ++kc) {
      const std::uint32_t pa[4] = {pack(s[2 * kc][0], s[2 * kc][1], T{}),
                                   pack(s[2 * kc][2], s[2 * kc][3], T{}),
                                   pack(s[2 * kc + 1][0], s[2 * kc + 1][1], T{}),
                                   pack(s[2 * kc + 1][2], s[2 * kc + 1][3], T{})};
      for (int n = 0; n < 8; n += 2) {
        std::uint32_t vb[4];
        load_matrices_transposed(vb, vs + (kc * 16 + (mj & 1) * 8 + mr) * kLd + (n + mj / 2) * 8);
        mma(o[n], pa, vb[0], vb[1], T{});
        mma(o[n + 1], pa, vb[2], vb[3], T{});
      }
    }
    __syncthreads();  // the stage is free for the tile after next
  }
  store_rows(a, o, state, b, h, row0, g, t, T{});
}

void check_flash_launch() {
  check(cudaGetLastError(), "flash attention launch");
}

// IFW_CUDA_FLASH=6, 7 or 8 where this build or device has no sm_90a code: said once, version 2
// runs.
void report_no_hopper_kernel() {
  static std::once_flag once;
  std::call_once(once, [] {
    log_warning(
        "IFW_CUDA_FLASH=6, 7 or 8: no sm_90a code for this device in this build (Hopper's "
        "wgmma kernels need compute capability 9.0 and a CUDA 12 or newer toolkit); version 2 "
        "runs instead");
  });
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool flash_attention_supported(const FlashAttention& a) {
  // scale > 0: versions 6 to 8 keep maxima of unscaled scores.
  return (a.type == DType::kF16 || a.type == DType::kBF16) && a.head_dim == kHead &&
         a.key_len >= 1 && a.scale > 0.0f && a.ld_q % 8 == 0 && a.ld_k % 8 == 0 &&
         a.ld_v % 8 == 0 && a.ld_out % 2 == 0 && aligned16(a.q) && aligned16(a.k) &&
         aligned16(a.v) && aligned16(a.out);
}

void flash_attention(const FlashAttention& a, cudaStream_t stream) {
  if (!flash_attention_supported(a)) throw std::invalid_argument("flash attention: unsupported");
  // The version asked for, or the default (environment.hpp): version 6 where the device has sm_90a
  // code (Hopper), version 2 in its place elsewhere, silently unless asked for by name.
  int version = flash_version();
  if (version >= 6) {
#if IFW_CUDA_HOPPER_KERNELS
    if (flash_attention_hopper(a, version, stream)) {
      check_flash_launch();
      return;
    }
#endif
    // Asked for by name: said once. As the default: version 2 is the default elsewhere.
    if (named_flash_version() != 0) report_no_hopper_kernel();
    version = 2;
  }
  if (version == 2) {
    const dim3 grid(static_cast<unsigned>((a.query_len + kWarps2 * 16 - 1) / (kWarps2 * 16)),
                    static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
    if (a.type == DType::kF16) {
      flash_attention_v2_kernel<__half><<<grid, kWarps2 * 32, 0, stream>>>(a);
    } else {
      flash_attention_v2_kernel<__nv_bfloat16><<<grid, kWarps2 * 32, 0, stream>>>(a);
    }
  } else {
    const dim3 grid(static_cast<unsigned>((a.query_len + kWarps * 16 - 1) / (kWarps * 16)),
                    static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
    if (a.type == DType::kF16) {
      flash_attention_kernel<__half><<<grid, kWarps * 32, 0, stream>>>(a);
    } else {
      flash_attention_kernel<__nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(a);
    }
  }
  check_flash_launch();
}

}  // namespace ifw::backend::cuda
