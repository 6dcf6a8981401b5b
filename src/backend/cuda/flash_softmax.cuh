// What the encoder's flash-attention kernels share (flash_attention.cu, flash_attention_hopper.cu):
// the online softmax over a tile of scores held as tensor-core accumulator fragments (a warp's
// rows g and g + 8, columns 2t and 2t + 1 of each 8-key fragment: mma.sync's layout, which
// wgmma's repeats per warp) and the output rows' normalised store.
#pragma once

#include <cstdint>

#include "backend/cuda/kernels.hpp"
#include "backend/cuda/tensor_core.cuh"

namespace ifw::backend::cuda::flash {

using i64 = std::int64_t;

constexpr int kHead = 64;  // head size

// Running maximum and sum of a warp's two fragment rows (g and g + 8).
struct SoftmaxState {
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
};

// A fragment row's values are spread over the 4 lanes of a group: their maximum in each lane.
__device__ __forceinline__ void row_max(float& mx0, float& mx1) {
  for (int o2 = 1; o2 < 4; o2 <<= 1) {
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
  }
}

// A tile's row sums (per lane) into the running sums, and the output so far rescaled to the new
// maxima (alpha: exp of the old maximum less the new).
__device__ __forceinline__ void add_tile(float (&o)[8][4], SoftmaxState& st, float alpha0,
                                         float alpha1, float sum0, float sum1) {
  for (int o2 = 1; o2 < 4; o2 <<= 1) {
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, o2);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, o2);
  }
  st.l0 = st.l0 * alpha0 + sum0;
  st.l1 = st.l1 * alpha1 + sum1;
  for (int n = 0; n < 8; ++n) {
    o[n][0] *= alpha0;
    o[n][1] *= alpha0;
    o[n][2] *= alpha1;
    o[n][3] *= alpha1;
  }
}

// 2^x in one instruction (MUFU.EX2): exp2f without fast math also rescales inputs and outputs
// around the denormal range, three more instructions per score; results below 2^-126 (a weight
// that small is lost against the row's sum of at least 1 anyway) become zero.
__device__ __forceinline__ float exp2_flushed(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// What a tile's softmax leaves for the output: the factors that take the rows' output so far to
// the new maxima, and this lane's part of the tile's row sums.
struct TileWeights {
  float alpha0, alpha1, sum0, sum1;
};

// One tile's scores s (kFragments fragments of 8 keys from key k0) into probabilities against the
// running maxima (FlashAttention-2's online softmax; the output and sums are rescaled by
// add_tile with what this returns); maxima kept in units of raw scores, so that scaling and
// subtracting the maximum are one fused multiply-add per score; keys are checked against
// key_len only in a tile that reaches past it (kMask).
// The rows' maxima of a tile's raw scores (each lane gets its rows' whole maxima); with kMask,
// keys from key_len on are set to -inf first.
template <bool kMask, int kFragments>
__device__ __forceinline__ void tile_max(float (&s)[kFragments][4], int k0, int key_len, int t,
                                         float& mx0, float& mx1) {
  mx0 = -INFINITY;
  mx1 = -INFINITY;
  for (int n = 0; n < kFragments; ++n) {
    if constexpr (kMask) {
      for (int e = 0; e < 4; ++e) {
        if (k0 + n * 8 + 2 * t + (e & 1) >= key_len) s[n][e] = -INFINITY;
      }
    }
    mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
    mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
  }
  row_max(mx0, mx1);
}

// s = 2^(s * scale - shift) for each row's scores (scale and subtraction one fused multiply-add),
// their sums into this lane's part of w's.
template <int kFragments>
__device__ __forceinline__ void exponentiate_rows(float (&s)[kFragments][4], float scale,
                                                  float shift0, float shift1, TileWeights& w) {
  for (int n = 0; n < kFragments; ++n) {
    s[n][0] = exp2_flushed(fmaf(s[n][0], scale, -shift0));
    s[n][1] = exp2_flushed(fmaf(s[n][1], scale, -shift0));
    s[n][2] = exp2_flushed(fmaf(s[n][2], scale, -shift1));
    s[n][3] = exp2_flushed(fmaf(s[n][3], scale, -shift1));
    w.sum0 += s[n][0] + s[n][1];
    w.sum1 += s[n][2] + s[n][3];
  }
}

template <bool kMask, int kFragments>
__device__ __forceinline__ TileWeights exponentiate_folded(float (&s)[kFragments][4],
                                                           SoftmaxState& st, int k0, int key_len,
                                                           float scale, int t) {
  float mx0, mx1;
  tile_max<kMask>(s, k0, key_len, t, mx0, mx1);
  const float n0 = fmaxf(st.m0, mx0), n1 = fmaxf(st.m1, mx1);  // finite: each tile holds a key
  // The first tile's st.m is -inf: alpha is 0 (and o and l are still 0).
  TileWeights w{exp2_flushed((st.m0 - n0) * scale), exp2_flushed((st.m1 - n1) * scale), 0.0f, 0.0f};
  st.m0 = n0;
  st.m1 = n1;
  exponentiate_rows(s, scale, n0 * scale, n1 * scale, w);
  return w;
}

// exponentiate_folded, then the output and sums rescaled at once.
template <bool kMask, int kFragments>
__device__ __forceinline__ void online_softmax_folded(float (&s)[kFragments][4], float (&o)[8][4],
                                                      SoftmaxState& st, int k0, int key_len,
                                                      float scale, int t) {
  const TileWeights w = exponentiate_folded<kMask>(s, st, k0, key_len, scale, t);
  add_tile(o, st, w.alpha0, w.alpha1, w.sum0, w.sum1);
}

// The warp's 16 output rows (those below query_len), normalised.
template <typename T>
__device__ __forceinline__ void store_rows(const FlashAttention& a, const float (&o)[8][4],
                                           const SoftmaxState& st, int b, int h, int row0, int g,
                                           int t, T tag) {
  const float inv0 = 1.0f / st.l0, inv1 = 1.0f / st.l1;
  T* out = static_cast<T*>(a.out) + static_cast<i64>(b) * a.query_len * a.ld_out + h * kHead;
  for (int n = 0; n < 8; ++n) {
    const int c = n * 8 + 2 * t;
    if (row0 + g < a.query_len) {
      *reinterpret_cast<std::uint32_t*>(out + static_cast<i64>(row0 + g) * a.ld_out + c) =
          pack(o[n][0] * inv0, o[n][1] * inv0, tag);
    }
    if (row0 + g + 8 < a.query_len) {
      *reinterpret_cast<std::uint32_t*>(out + static_cast<i64>(row0 + g + 8) * a.ld_out + c) =
          pack(o[n][2] * inv1, o[n][3] * inv1, tag);
    }
  }
}

// A pair of query elements with their bias added (bias[0], bias[1]; none when null), rounded
// once into the element type, as the bias kernel after a product rounds.
template <typename T>
__device__ __forceinline__ std::uint32_t biased_pair(std::uint32_t pair, const float* bias, T tag) {
  if (bias == nullptr) return pair;
  const float2 f = unpack(pair, tag);
  return pack(f.x + bias[0], f.y + bias[1], tag);
}

// The query bias of head h (null where there is none).
__device__ __forceinline__ const float* head_bias(const FlashAttention& a, int h) {
  return a.q_bias != nullptr ? a.q_bias + h * kHead : nullptr;
}

}  // namespace ifw::backend::cuda::flash
