// Encoder self-attention on Hopper's warpgroup tensor-core instructions (wgmma, which exist only
// as sm_90a code; version 6 the default where they exist, 7 and 8 with IFW_CUDA_FLASH). The scheme
// is flash attention v2's (online softmax, scores never leave registers); what changes is who does
// the products: a warpgroup (4 warps, 64 queries) issues one asynchronous instruction per 16-wide
// slice that reads its operands from shared memory itself - queries and keys for the scores, the
// values for the output, the probabilities from registers - where mma.sync needs each warp to fetch
// every fragment with ldmatrix first (version 2's ldmatrix traffic is about 1.3 times its
// tensor-core time by arithmetic). Tiles in shared memory use the 128-byte swizzle the
// instructions' descriptors name: a head's row of 64 elements is 128 bytes, and 16-byte chunk c
// of row r sits at chunk c ^ (r % 8), so the eight rows of a core matrix hit distinct banks.
// Built only for sm_90a (src/CMakeLists.txt: ifw_cuda_hopper); on other devices no image exists
// and flash_attention_hopper says so.
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/flash_softmax.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/tensor_core.cuh"

namespace ifw::backend::cuda {
namespace {

using namespace flash;

constexpr int kGroups = 2;                         // warpgroups per block
constexpr int kThreads = kGroups * 128;            // a warpgroup is 4 warps
constexpr int kQueries = kGroups * 64;             // 64 query rows per warpgroup
constexpr int kRowBytes = kHead * 2;               // one swizzled row
constexpr int kQueryBytes = kQueries * kRowBytes;  // 16 KiB

// The kernels' tiles: version 6 takes 128 keys a tile in two stages (scores 64 x 128 per group,
// 64 registers a thread); versions 7 and 8 64 keys in three, so that a tile's scores, the last
// tile's probabilities (read by a product still running) and the output fit in 128 registers.
template <int kVersion>
struct Tiling {
  static constexpr int kKeys = kVersion == 6 ? 128 : 64;
  static constexpr int kStages = kVersion == 6 ? 2 : 3;
  static constexpr int kTileBytes = kKeys * kRowBytes;  // for K or V
  // Queries, then the stages' K, then their V, from a 1024-byte boundary (the swizzle is a
  // function of address bits 4-9, so each tile must start at one); the slack finds it.
  static constexpr int kSharedBytes = kQueryBytes + 2 * kStages * kTileBytes + 1024;
};

// Byte offset of 16-byte chunk c of row r in a tile with the 128-byte swizzle.
__device__ __forceinline__ std::uint32_t swizzled(int r, int c) {
  return static_cast<std::uint32_t>(r * kRowBytes + ((c ^ (r & 7)) << 4));
}

// A shared-memory matrix descriptor for a tile of 128-byte rows with the 128-byte swizzle,
// starting at shared address `address`: start address in 16-byte units (bits 0-13), leading byte
// offset 1 (unused by the 128-byte swizzle: a row holds a whole instruction's slice along it),
// stride byte offset 1024 bytes (from one group of 8 rows to the next, bits 32-45), swizzle mode 1
// (128 bytes, bits 62-63). Keys and queries are "K-major" (a row is one key's or query's 64
// dimensions, the products' reduction axis), values "MN-major" (a row is one key's 64
// dimensions, the output's columns, the reduction running down the rows): the same bytes, read
// transposed by the instruction. Adding n to the descriptor moves its start by 16 n bytes.
__device__ __forceinline__ std::uint64_t descriptor(std::uint32_t address) {
  return static_cast<std::uint64_t>((address & 0x3FFFFu) >> 4) | (1ull << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (1ull << 62);
}

// Orders this thread's writes to shared memory (stores and completed cp.async copies: the
// generic proxy) before the tensor cores' reads of it (the async proxy), once a barrier follows.
__device__ __forceinline__ void fence_shared_for_tensor_cores() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Before a warpgroup's first product of a batch: registers written since (accumulators rescaled,
// probabilities packed) are seen by the asynchronous products.
__device__ __forceinline__ void warpgroup_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void warpgroup_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// Until at most kPending of the warpgroup's most recently committed groups of products are
// still running (the others, committed earlier, are done).
template <int kPending>
__device__ __forceinline__ void warpgroup_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// The compiler sees a product's registers written (or read) where the instruction is issued;
// the tensor cores write (read) them until the wait. An empty asm that "writes" each register
// after the wait keeps every use of the results after it and every reuse of the operands'
// registers after it; before the fence, it keeps every earlier access before the fence (PTX
// requires wgmma.fence between any access to a product's registers and the product: the
// compiler was seen to sink the output's rescaling below it).
template <int kN>
__device__ __forceinline__ void hold(float (&r)[kN][4]) {
  for (int n = 0; n < kN; ++n) {
    asm volatile("" : "+f"(r[n][0]), "+f"(r[n][1]), "+f"(r[n][2]), "+f"(r[n][3])::"memory");
  }
}

template <int kN>
__device__ __forceinline__ void hold(std::uint32_t (&r)[kN][4]) {
  for (int n = 0; n < kN; ++n) {
    asm volatile("" : "+r"(r[n][0]), "+r"(r[n][1]), "+r"(r[n][2]), "+r"(r[n][3])::"memory");
  }
}

#define IFW_ACCUMULATORS_8(d, n)                                                 \
  "+f"(d[n][0]), "+f"(d[n][1]), "+f"(d[n][2]), "+f"(d[n][3]), "+f"(d[n + 1][0]), \
      "+f"(d[n + 1][1]), "+f"(d[n + 1][2]), "+f"(d[n + 1][3])
#define IFW_ACCUMULATORS_32(d)                                                  \
  IFW_ACCUMULATORS_8(d, 0), IFW_ACCUMULATORS_8(d, 2), IFW_ACCUMULATORS_8(d, 4), \
      IFW_ACCUMULATORS_8(d, 6)
#define IFW_ACCUMULATORS_64(d)                                                       \
  IFW_ACCUMULATORS_8(d, 0), IFW_ACCUMULATORS_8(d, 2), IFW_ACCUMULATORS_8(d, 4),      \
      IFW_ACCUMULATORS_8(d, 6), IFW_ACCUMULATORS_8(d, 8), IFW_ACCUMULATORS_8(d, 10), \
      IFW_ACCUMULATORS_8(d, 12), IFW_ACCUMULATORS_8(d, 14)

// s (64 queries x 128 keys of the warpgroup; s[n][2i + e] is row 16 w + g + 8 i, key 8 n + 2 t + e
// for warp w of the group, lane 4 g + t) = A B^T over one 16-wide slice of the head, plus s when
// `accumulate`: A (queries) and B (keys) both from shared memory, K-major.
#define IFW_SCORES_128(TYPE)                                                                       \
  asm volatile(                                                                                    \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                 \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE                                 \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "    \
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
      "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, " \
      "%55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"                \
      : IFW_ACCUMULATORS_64(s)                                                                     \
      : "l"(queries), "l"(keys), "r"(accumulate))

// The same for 64 keys.
#define IFW_SCORES_64(TYPE)                                                                      \
  asm volatile(                                                                                  \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                               \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE                                \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "  \
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, " \
      "0;\n}\n"                                                                                  \
      : IFW_ACCUMULATORS_32(s)                                                                   \
      : "l"(queries), "l"(keys), "r"(accumulate))

__device__ __forceinline__ void scores(float (&s)[16][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __half) {
  IFW_SCORES_128("f16");
}

__device__ __forceinline__ void scores(float (&s)[16][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __nv_bfloat16) {
  IFW_SCORES_128("bf16");
}

__device__ __forceinline__ void scores(float (&s)[8][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __half) {
  IFW_SCORES_64("f16");
}

__device__ __forceinline__ void scores(float (&s)[8][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __nv_bfloat16) {
  IFW_SCORES_64("bf16");
}

// o (64 queries x 64 dimensions, laid out as s) += P V over 16 keys: P (the group's
// probabilities for those keys, as A fragments: p[0..3] as mma.sync's) from registers, V from
// shared memory, MN-major (transposed: the instruction's last immediate).
#define IFW_VALUES(TYPE)                                                                         \
  asm volatile(                                                                                  \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                               \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE                                \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "  \
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, " \
      "%36, p, 1, 1, 1;\n}\n"                                                                    \
      : IFW_ACCUMULATORS_32(o)                                                                   \
      : "r"(p[0]), "r"(p[1]), "r"(p[2]), "r"(p[3]), "l"(values), "r"(1))

__device__ __forceinline__ void add_values(float (&o)[8][4], const std::uint32_t (&p)[4],
                                           std::uint64_t values, __half) {
  IFW_VALUES("f16");
}

__device__ __forceinline__ void add_values(float (&o)[8][4], const std::uint32_t (&p)[4],
                                           std::uint64_t values, __nv_bfloat16) {
  IFW_VALUES("bf16");
}

#undef IFW_SCORES_128
#undef IFW_SCORES_64
#undef IFW_VALUES
#undef IFW_ACCUMULATORS_64
#undef IFW_ACCUMULATORS_32
#undef IFW_ACCUMULATORS_8

// The block's queries (their bias added and rounded once, as the bias kernel after a product
// rounds; zero rows past query_len) into shared memory, by all threads.
template <typename T>
__device__ __forceinline__ void store_queries(const FlashAttention& a, const T* q,
                                              const float* bias, int row0, unsigned char* shared) {
  for (int i = threadIdx.x; i < kQueries * 8; i += kThreads) {
    const int r = i / 8, c = i % 8;
    uint4 chunk = make_uint4(0, 0, 0, 0);
    if (row0 + r < a.query_len) {
      chunk = *reinterpret_cast<const uint4*>(q + static_cast<i64>(row0 + r) * a.ld_q + c * 8);
      if (bias != nullptr) {
        std::uint32_t* pairs = reinterpret_cast<std::uint32_t*>(&chunk);
        for (int e = 0; e < 4; ++e)
          pairs[e] = biased_pair(pairs[e], bias + c * 8 + 2 * e, T{});
      }
    }
    *reinterpret_cast<uint4*>(shared + swizzled(r, c)) = chunk;
  }
}

// Keys [k0, k0 + kKeys) of K and V into keys and values (zeros past key_len), by all threads (8
// consecutive threads copy one row's 128 bytes); committed as one group of copies.
template <int kKeys, typename T>
__device__ __forceinline__ void load_keys(const FlashAttention& a, const T* k, const T* v, int k0,
                                          unsigned char* keys, unsigned char* values) {
  for (int i = threadIdx.x; i < kKeys * 8; i += kThreads) {
    const int r = i / 8, c = i % 8;
    const bool valid = k0 + r < a.key_len;
    const i64 row = valid ? k0 + r : 0;
    copy_async16(keys + swizzled(r, c), k + row * a.ld_k + c * 8, valid);
    copy_async16(values + swizzled(r, c), v + row * a.ld_v + c * 8, valid);
  }
  commit_copies();
}

// The scores of a tile (kFragments x 8 keys): four 16-wide slices of the head, 32 bytes further
// along the rows each; one group of products (not waited for).
template <typename T, int kFragments>
__device__ __forceinline__ void issue_scores(float (&s)[kFragments][4], std::uint64_t queries,
                                             std::uint64_t keys) {
  hold(s);  // every access to the accumulators before the fence (the compiler may not sink any)
  warpgroup_fence();
  for (int kc = 0; kc < 4; ++kc)
    scores(s, queries + 2 * kc, keys + 2 * kc, kc > 0 ? 1 : 0, T{});
  warpgroup_commit();
}

// Probabilities (kFragments x 8 keys of fp32 score fragments) as the A fragments of 16 keys each:
// wgmma's register operand has mma.sync's layout, which the scores' fragments already have.
template <typename T, int kFragments>
__device__ __forceinline__ void pack_probabilities(const float (&s)[kFragments][4],
                                                   std::uint32_t (&p)[kFragments / 2][4]) {
  for (int kc = 0; kc < kFragments / 2; ++kc) {
    p[kc][0] = pack(s[2 * kc][0], s[2 * kc][1], T{});
    p[kc][1] = pack(s[2 * kc][2], s[2 * kc][3], T{});
    p[kc][2] = pack(s[2 * kc + 1][0], s[2 * kc + 1][1], T{});
    p[kc][3] = pack(s[2 * kc + 1][2], s[2 * kc + 1][3], T{});
  }
}

// o += P V over a tile: 16 keys are 2048 bytes further down the values; one group of products.
template <typename T, int kSlices>
__device__ __forceinline__ void issue_values(float (&o)[8][4], std::uint32_t (&p)[kSlices][4],
                                             std::uint64_t values) {
  hold(o);  // the rescaled output and the packed probabilities written before the fence
  hold(p);
  warpgroup_fence();
  for (int kc = 0; kc < kSlices; ++kc)
    add_values(o, p[kc], values + kc * (16 * kRowBytes / 16), T{});
  warpgroup_commit();
}

// Version 8's softmax (FlashAttention-4's): a row's running maximum moves only when a tile's
// exceeds it by more than 8 in log2 units. Until then its probabilities stay below 2^8 (far
// below the 16-bit types' limit; rounded to them as any probability is) and its output and sum
// need no rescaling, which after the first tiles is nearly always: 16 multiplies a row and tile
// fewer. The row sums stay this lane's part until the end (the lanes of a row share maxima, so
// their parts rescale alike): two shuffles a row and tile fewer.
template <bool kMask, int kFragments>
__device__ __forceinline__ TileWeights exponentiate_lazy(float (&s)[kFragments][4],
                                                         SoftmaxState& st, int k0, int key_len,
                                                         float scale, int t) {
  float mx0, mx1;
  tile_max<kMask>(s, k0, key_len, t, mx0, mx1);  // finite: each tile holds a key
  TileWeights w{1.0f, 1.0f, 0.0f, 0.0f};
  // The first tile's st.m is -inf: the difference is infinite, alpha 0 (o and l are still 0).
  // Selects, not branches: the lanes of a warp hold different rows, and the products that follow
  // need the warp converged.
  const bool move0 = (mx0 - st.m0) * scale > 8.0f, move1 = (mx1 - st.m1) * scale > 8.0f;
  const float alpha0 = exp2_flushed((st.m0 - mx0) * scale);
  const float alpha1 = exp2_flushed((st.m1 - mx1) * scale);
  w.alpha0 = move0 ? alpha0 : 1.0f;
  w.alpha1 = move1 ? alpha1 : 1.0f;
  st.m0 = move0 ? mx0 : st.m0;
  st.m1 = move1 ? mx1 : st.m1;
  exponentiate_rows(s, scale, st.m0 * scale, st.m1 * scale, w);
  return w;
}

// This lane's part of the row sums, and the output rescaled where a maximum moved.
__device__ __forceinline__ void add_tile_lazy(float (&o)[8][4], SoftmaxState& st,
                                              const TileWeights& w) {
  st.l0 = st.l0 * w.alpha0 + w.sum0;
  st.l1 = st.l1 * w.alpha1 + w.sum1;
  // Decided for the whole warp (a lane whose rows did not move multiplies by 1, exactly), so that
  // the warp stays converged for the products that follow.
  if (__any_sync(0xffffffffu, w.alpha0 != 1.0f || w.alpha1 != 1.0f)) {
    for (int n = 0; n < 8; ++n) {
      o[n][0] *= w.alpha0;
      o[n][1] *= w.alpha0;
      o[n][2] *= w.alpha1;
      o[n][3] *= w.alpha1;
    }
  }
}

// The lanes' parts of the row sums added (each lane of a row gets the whole sum).
__device__ __forceinline__ void sum_lanes(SoftmaxState& st) {
  for (int o2 = 1; o2 < 4; o2 <<= 1) {
    st.l0 += __shfl_xor_sync(0xffffffffu, st.l0, o2);
    st.l1 += __shfl_xor_sync(0xffffffffu, st.l1, o2);
  }
}

// Where a block's pieces are, and who this thread is.
template <int kVersion>
struct BlockLayout {
  unsigned char* shared;  // generic address of the aligned start (the queries)
  std::uint32_t base;     // its shared address
  int group, warp, g, t;  // warpgroup, warp in it, fragment row group and thread in group

  __device__ static BlockLayout make(unsigned char* raw_start) {
    const std::uint32_t raw = shared_address(raw_start);
    const std::uint32_t base = (raw + 1023u) & ~1023u;
    const int lane = threadIdx.x % 32;
    return {raw_start + (base - raw),
            base,
            static_cast<int>(threadIdx.x / 128),
            static_cast<int>(threadIdx.x / 32 % 4),
            lane / 4,
            lane % 4};
  }
  __device__ unsigned char* keys(int stage) const {
    return shared + kQueryBytes + stage * Tiling<kVersion>::kTileBytes;
  }
  __device__ unsigned char* values(int stage) const {
    return keys(stage) + Tiling<kVersion>::kStages * Tiling<kVersion>::kTileBytes;
  }
  __device__ std::uint64_t key_descriptor(int stage) const {
    return descriptor(base + static_cast<std::uint32_t>(keys(stage) - shared));
  }
  __device__ std::uint64_t value_descriptor(int stage) const {
    return descriptor(base + static_cast<std::uint32_t>(values(stage) - shared));
  }
  __device__ std::uint64_t query_descriptor() const {
    return descriptor(base + static_cast<std::uint32_t>(group * 64 * kRowBytes));
  }
};

// The item's and head's queries, keys and values.
template <typename T>
struct HeadOperands {
  const T *q, *k, *v;
  __device__ static HeadOperands make(const FlashAttention& a, int b, int h) {
    return {static_cast<const T*>(a.q) + static_cast<i64>(b) * a.query_len * a.ld_q + h * kHead,
            static_cast<const T*>(a.k) + static_cast<i64>(b) * a.key_block * a.ld_k + h * kHead,
            static_cast<const T*>(a.v) + static_cast<i64>(b) * a.key_block * a.ld_v + h * kHead};
  }
};

// Version 6: per tile, the scores, the softmax, then the output's product, each waited for; the
// two warpgroups of a block (and the other block on the SM) overlap one's softmax with another's
// products as the scheduler finds them.
// Version 7: FlashAttention-3's overlap within a warpgroup. The scores of tile j are issued
// before the output's product of tile j - 1, and the softmax of tile j runs while that product
// does: the tensor cores and the exponentials (the bottleneck at head size 64: one instruction
// per score at a sixteenth of the FMA rate) work at once within each group, not only across
// groups. The output is rescaled to tile j's maxima once the product is done. Tiles of 64 keys in
// three stages: while tile j's scores and tile j - 1's values are read, tile j + 1 loads.
// Version 8: version 7 with FlashAttention-4's softmax (exponentiate_lazy).
template <typename T, int kVersion>
__global__ void __launch_bounds__(kThreads, 2) flash_attention_hopper_kernel(FlashAttention a) {
  using Tiles = Tiling<kVersion>;
  extern __shared__ __align__(1024) unsigned char shared_raw[];
  const auto layout = BlockLayout<kVersion>::make(shared_raw);
  const int h = blockIdx.y, b = blockIdx.z;
  const int block_row0 = blockIdx.x * kQueries;
  const auto in = HeadOperands<T>::make(a, b, h);
  store_queries(a, in.q, head_bias(a, h), block_row0, layout.shared);

  float s[Tiles::kKeys / 8][4] = {};
  float o[8][4] = {};
  std::uint32_t p[Tiles::kKeys / 16][4] = {};  // versions 7, 8: the previous tile's probabilities
  SoftmaxState state;
  const float scale = a.scale * 1.4426950408889634f;  // exp(x) = exp2(x * log2 e)
  const std::uint64_t queries = layout.query_descriptor();

  const int tiles = (a.key_len + Tiles::kKeys - 1) / Tiles::kKeys;
  load_keys<Tiles::kKeys>(a, in.k, in.v, 0, layout.keys(0), layout.values(0));
  if constexpr (kVersion == 6) {
    for (int tile = 0; tile < tiles; ++tile) {
      const int stage = tile & 1;
      if (tile + 1 < tiles) {
        load_keys<Tiles::kKeys>(a, in.k, in.v, (tile + 1) * Tiles::kKeys, layout.keys(stage ^ 1),
                                layout.values(stage ^ 1));
        wait_copies<1>();  // this tile's copies are done, the next one's may not be
      } else {
        wait_copies<0>();
      }
      fence_shared_for_tensor_cores();
      __syncthreads();

      issue_scores<T>(s, queries, layout.key_descriptor(stage));
      warpgroup_wait<0>();
      hold(s);
      const int k0 = tile * Tiles::kKeys;
      if (k0 + Tiles::kKeys <= a.key_len) {
        online_softmax_folded<false>(s, o, state, k0, a.key_len, scale, layout.t);
      } else {
        online_softmax_folded<true>(s, o, state, k0, a.key_len, scale, layout.t);
      }
      pack_probabilities<T>(s, p);
      issue_values<T>(o, p, layout.value_descriptor(stage));
      warpgroup_wait<0>();
      hold(o);
      hold(p);
      __syncthreads();  // both groups are done with the stage before the tile after next fills it
    }
  } else {
    for (int tile = 0; tile < tiles; ++tile) {
      const int stage = tile % Tiles::kStages;
      // Tile `tile` is in (its copies, the only ones pending); after the barrier every group is
      // past the previous iteration, whose wait finished the product that read tile - 2's stage.
      wait_copies<0>();
      fence_shared_for_tensor_cores();
      __syncthreads();
      if (tile + 1 < tiles) {
        const int next = (tile + 1) % Tiles::kStages;
        load_keys<Tiles::kKeys>(a, in.k, in.v, (tile + 1) * Tiles::kKeys, layout.keys(next),
                                layout.values(next));
      }

      issue_scores<T>(s, queries, layout.key_descriptor(stage));
      if (tile > 0) {
        const int previous = (tile + Tiles::kStages - 1) % Tiles::kStages;
        issue_values<T>(o, p, layout.value_descriptor(previous));
        warpgroup_wait<1>();  // the scores (committed first) are done; the product may not be
      } else {
        warpgroup_wait<0>();
      }
      hold(s);
      const int k0 = tile * Tiles::kKeys;
      const bool whole = k0 + Tiles::kKeys <= a.key_len;
      TileWeights w;
      if constexpr (kVersion == 8) {
        w = whole ? exponentiate_lazy<false>(s, state, k0, a.key_len, scale, layout.t)
                  : exponentiate_lazy<true>(s, state, k0, a.key_len, scale, layout.t);
      } else {
        w = whole ? exponentiate_folded<false>(s, state, k0, a.key_len, scale, layout.t)
                  : exponentiate_folded<true>(s, state, k0, a.key_len, scale, layout.t);
      }
      warpgroup_wait<0>();  // the output's product of the previous tile
      hold(o);
      hold(p);
      if constexpr (kVersion == 8) {
        add_tile_lazy(o, state, w);
      } else {
        add_tile(o, state, w.alpha0, w.alpha1, w.sum0, w.sum1);
      }
      pack_probabilities<T>(s, p);
    }
    // The last tile's product.
    issue_values<T>(o, p, layout.value_descriptor((tiles - 1) % Tiles::kStages));
    warpgroup_wait<0>();
    hold(o);
    hold(p);
    if constexpr (kVersion == 8) sum_lanes(state);
  }
  store_rows(a, o, state, b, h, block_row0 + layout.group * 64 + layout.warp * 16, layout.g,
             layout.t, T{});
}

// Whether the current device can run `kernel` (an sm_90a image exists for it), with its shared
// memory asked for where it can: once per kernel and device. Only "no image for this device"
// means no (its error taken back so that the next launch check does not see it); any other
// error (a fault of an earlier launch among them) is thrown, not taken for a missing image.
bool prepare(const void* kernel, int shared_bytes) {
  int device = 0;
  check(cudaGetDevice(&device), "flash attention (wgmma)");
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, bool> known;
  const std::lock_guard lock(mutex);
  if (const auto it = known.find({kernel, device}); it != known.end()) return it->second;
  cudaFuncAttributes attributes{};
  const cudaError_t err = cudaFuncGetAttributes(&attributes, kernel);
  if (err == cudaErrorInvalidDeviceFunction || err == cudaErrorNoKernelImageForDevice) {
    (void)cudaGetLastError();
    known[{kernel, device}] = false;
    return false;
  }
  check(err, "flash attention (wgmma)");
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes),
        "flash attention (wgmma): shared memory");
  known[{kernel, device}] = true;
  return true;
}

}  // namespace

bool flash_attention_hopper(const FlashAttention& a, int version, cudaStream_t stream) {
  const auto run = [&](auto kernel, int shared_bytes) {
    if (!prepare(reinterpret_cast<const void*>(kernel), shared_bytes)) return false;
    const dim3 grid(static_cast<unsigned>((a.query_len + kQueries - 1) / kQueries),
                    static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
    kernel<<<grid, kThreads, static_cast<std::size_t>(shared_bytes), stream>>>(a);
    return true;
  };
  const bool half = a.type == DType::kF16;
  if (version == 8) {
    return half ? run(flash_attention_hopper_kernel<__half, 8>, Tiling<8>::kSharedBytes)
                : run(flash_attention_hopper_kernel<__nv_bfloat16, 8>, Tiling<8>::kSharedBytes);
  }
  if (version == 7) {
    return half ? run(flash_attention_hopper_kernel<__half, 7>, Tiling<7>::kSharedBytes)
                : run(flash_attention_hopper_kernel<__nv_bfloat16, 7>, Tiling<7>::kSharedBytes);
  }
  return half ? run(flash_attention_hopper_kernel<__half, 6>, Tiling<6>::kSharedBytes)
              : run(flash_attention_hopper_kernel<__nv_bfloat16, 6>, Tiling<6>::kSharedBytes);
}

}  // namespace ifw::backend::cuda
