// Encoder self-attention on Hopper's warpgroup tensor-core instructions (wgmma, which exist only
// as sm_90a code; IFW_CUDA_FLASH=6, until measured on a GPU). The scheme is flash attention v2's
// (online softmax, scores never leave registers); what changes is who does the products: a
// warpgroup (4 warps, 64 queries) issues one asynchronous instruction per 16-wide slice that
// reads its operands from shared memory itself - queries and keys for the scores, the values
// for the output, the probabilities from registers - where mma.sync needs each warp to fetch
// every fragment with ldmatrix first (version 2's ldmatrix traffic is about 1.3 times its
// tensor-core time by arithmetic). Tiles in shared memory use the 128-byte swizzle the
// instructions' descriptors name: a head's row of 64 elements is 128 bytes, and 16-byte chunk c
// of row r sits at chunk c ^ (r % 8), so the eight rows of a core matrix hit distinct banks.
// Built only for sm_90a (src/CMakeLists.txt: ifw_cuda_hopper); on other devices no image exists
// and flash_attention_hopper says so.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/flash_softmax.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/tensor_core.cuh"

namespace ifw::backend::cuda {
namespace {

using namespace flash;

constexpr int kGroups = 2;                         // warpgroups per block
constexpr int kThreads = kGroups * 128;            //
constexpr int kQueries = kGroups * 64;             // 64 query rows per warpgroup
constexpr int kTileKeys = 128;                     // keys per tile: scores are 64 x 128 per group
constexpr int kRowBytes = kHead * 2;               // one swizzled row
constexpr int kQueryBytes = kQueries * kRowBytes;  // 16 KiB
constexpr int kTileBytes = kTileKeys * kRowBytes;  // 16 KiB for K or V
// Queries, then K and V in two stages each, from a 1024-byte boundary (the swizzle is a function
// of address bits 4-9, so each tile must start at one); the slack finds it.
constexpr int kSharedBytes = kQueryBytes + 4 * kTileBytes + 1024;

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

__device__ __forceinline__ void warpgroup_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

// The compiler sees a product's registers written (or read) where the instruction is issued;
// the tensor cores write (read) them until the wait. An empty asm that "writes" each register
// after the wait keeps every use of the results after it and every reuse of the operands'
// registers after it.
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
#define IFW_SCORES(TYPE)                                                                           \
  asm volatile(                                                                                    \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                 \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE                                 \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "    \
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
      "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, " \
      "%55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"                \
      : IFW_ACCUMULATORS_64(s)                                                                     \
      : "l"(queries), "l"(keys), "r"(accumulate))

__device__ __forceinline__ void scores(float (&s)[16][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __half) {
  IFW_SCORES("f16");
}

__device__ __forceinline__ void scores(float (&s)[16][4], std::uint64_t queries, std::uint64_t keys,
                                       int accumulate, __nv_bfloat16) {
  IFW_SCORES("bf16");
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

#undef IFW_SCORES
#undef IFW_VALUES
#undef IFW_ACCUMULATORS_64
#undef IFW_ACCUMULATORS_32
#undef IFW_ACCUMULATORS_8

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) flash_attention_hopper_kernel(FlashAttention a) {
  extern __shared__ __align__(1024) unsigned char shared_raw[];
  const std::uint32_t raw = shared_address(shared_raw);
  const std::uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* const shared = shared_raw + (base - raw);
  const std::uint32_t key_tiles = base + kQueryBytes;  // shared addresses of stage 0's K and V
  const std::uint32_t value_tiles = key_tiles + 2 * kTileBytes;

  const int group = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  const int block_row0 = blockIdx.x * kQueries;
  const T* q = static_cast<const T*>(a.q) + static_cast<i64>(b) * a.query_len * a.ld_q + h * kHead;
  const T* k = static_cast<const T*>(a.k) + static_cast<i64>(b) * a.key_block * a.ld_k + h * kHead;
  const T* v = static_cast<const T*>(a.v) + static_cast<i64>(b) * a.key_block * a.ld_v + h * kHead;

  // The block's queries (their bias added and rounded once, as the bias kernel after a product
  // rounds; zero rows past query_len), by all threads.
  const float* bias = head_bias(a, h);
  for (int i = threadIdx.x; i < kQueries * 8; i += kThreads) {
    const int r = i / 8, c = i % 8;
    uint4 chunk = make_uint4(0, 0, 0, 0);
    if (block_row0 + r < a.query_len) {
      chunk =
          *reinterpret_cast<const uint4*>(q + static_cast<i64>(block_row0 + r) * a.ld_q + c * 8);
      if (bias != nullptr) {
        std::uint32_t* pairs = reinterpret_cast<std::uint32_t*>(&chunk);
        for (int e = 0; e < 4; ++e) {
          const float2 f = unpack(pairs[e], T{});
          pairs[e] = pack(f.x + bias[c * 8 + 2 * e], f.y + bias[c * 8 + 2 * e + 1], T{});
        }
      }
    }
    *reinterpret_cast<uint4*>(shared + swizzled(r, c)) = chunk;
  }

  // Keys [tile * 128, +128) of K and V into stage `stage` (zeros past key_len), by all threads:
  // 8 consecutive threads copy one row's 128 bytes.
  const auto load_tile = [&](int tile, int stage) {
    unsigned char* const ks = shared + kQueryBytes + stage * kTileBytes;
    unsigned char* const vs = ks + 2 * kTileBytes;
    for (int i = threadIdx.x; i < kTileKeys * 8; i += kThreads) {
      const int r = i / 8, c = i % 8;
      const bool valid = tile * kTileKeys + r < a.key_len;
      const i64 row = valid ? tile * kTileKeys + r : 0;
      copy_async16(ks + swizzled(r, c), k + row * a.ld_k + c * 8, valid);
      copy_async16(vs + swizzled(r, c), v + row * a.ld_v + c * 8, valid);
    }
    commit_copies();
  };

  float s[16][4] = {};
  float o[8][4] = {};
  SoftmaxState state;
  const float scale = a.scale * 1.4426950408889634f;  // exp(x) = exp2(x * log2 e)
  const std::uint64_t queries = descriptor(base + group * 64 * kRowBytes);

  const int tiles = (a.key_len + kTileKeys - 1) / kTileKeys;
  load_tile(0, 0);
  for (int tile = 0; tile < tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < tiles) {
      load_tile(tile + 1, stage ^ 1);
      wait_copies<1>();  // this tile's copies are done, the next one's may not be
    } else {
      wait_copies<0>();
    }
    fence_shared_for_tensor_cores();
    __syncthreads();
    const std::uint64_t keys = descriptor(key_tiles + stage * kTileBytes);
    const std::uint64_t values = descriptor(value_tiles + stage * kTileBytes);

    // Scores: four 16-wide slices of the head (32 bytes further along the rows each).
    warpgroup_fence();
    for (int kc = 0; kc < 4; ++kc)
      scores(s, queries + 2 * kc, keys + 2 * kc, kc > 0 ? 1 : 0, T{});
    warpgroup_commit();
    warpgroup_wait_all();
    hold(s);

    if ((tile + 1) * kTileKeys <= a.key_len) {
      online_softmax_folded<false>(s, o, state, tile * kTileKeys, a.key_len, scale, t);
    } else {
      online_softmax_folded<true>(s, o, state, tile * kTileKeys, a.key_len, scale, t);
    }

    // P V: the score fragments of 16 keys are A fragments as they are (wgmma's register operand
    // has mma.sync's layout); 16 keys are 2048 bytes further down the values.
    std::uint32_t p[8][4];
    for (int kc = 0; kc < 8; ++kc) {
      p[kc][0] = pack(s[2 * kc][0], s[2 * kc][1], T{});
      p[kc][1] = pack(s[2 * kc][2], s[2 * kc][3], T{});
      p[kc][2] = pack(s[2 * kc + 1][0], s[2 * kc + 1][1], T{});
      p[kc][3] = pack(s[2 * kc + 1][2], s[2 * kc + 1][3], T{});
    }
    warpgroup_fence();
    for (int kc = 0; kc < 8; ++kc)
      add_values(o, p[kc], values + kc * (16 * kRowBytes / 16), T{});
    warpgroup_commit();
    warpgroup_wait_all();
    hold(o);
    hold(p);
    __syncthreads();  // both groups are done with the stage before the tile after next fills it
  }
  store_rows(a, o, state, b, h, block_row0 + group * 64 + warp * 16, g, t, T{});
}

// Whether this process's current device can run `kernel` (an sm_90a image exists for it); a
// failed query's error is taken back so that the next launch check does not see it.
bool runnable(const void* kernel) {
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess) return true;
  (void)cudaGetLastError();
  return false;
}

}  // namespace

bool flash_attention_hopper(const FlashAttention& a, cudaStream_t stream) {
  const auto run = [&](auto kernel) {
    if (!runnable(reinterpret_cast<const void*>(kernel))) return false;
    if (const cudaError_t err =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
        err != cudaSuccess) {
      throw std::runtime_error(std::string("flash attention (wgmma): shared memory: ") +
                               cudaGetErrorString(err));
    }
    const dim3 grid(static_cast<unsigned>((a.query_len + kQueries - 1) / kQueries),
                    static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
    kernel<<<grid, kThreads, kSharedBytes, stream>>>(a);
    return true;
  };
  return a.type == DType::kF16 ? run(flash_attention_hopper_kernel<__half>)
                               : run(flash_attention_hopper_kernel<__nv_bfloat16>);
}

}  // namespace ifw::backend::cuda
