// Absorbed cross-attention's pass over the encoder's states (backend::AbsorbedAttentionArgs): each
// thread block streams a part of one window's states through shared memory, 16 positions at a
// time, and uses every position for all of its (query, head) columns at once: scores S q'^T and
// the weighted sum P^T S on the tensor cores (mma.sync m16n8k16, float32 accumulation), softmax
// online per column. 16 warps split the states' width: warp w owns 16-wide slices w, w + 16, ...
// for both products, so its output columns stay in its registers and only the scores (summed
// over the warps) and probabilities pass through shared memory. A step of large-v3 at batch 64
// reads 246 MB of states a layer this way instead of 491 MB of keys and values.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/tensor_core.cuh"

namespace ifw::backend::cuda {
namespace {

using i64 = std::int64_t;

constexpr int kWarps = 16;
constexpr int kThreads = kWarps * 32;
constexpr int kPositions = 16;  // per chunk: one m16 tile of the scores
constexpr int kColumns = 24;    // (query, head) columns per block: three n8 tiles
constexpr int kColumnTiles = kColumns / 8;
constexpr int kMaxSlices = kAbsorbedMaxWidth / (16 * kWarps);  // 16-wide slices per warp
constexpr int kProbabilityLd = kPositions + 8;                 // padded rows of P (48 bytes)
// Rows of the warps' partial scores: 2 x an odd number of floats, so that the 16 positions a half
// warp sums for one column fall in 16 distinct even banks and the next column's in the odd ones
// (rows of 24 floats: 4-way conflicts).
constexpr int kPartialLd = 26;
constexpr float kLog2e = 1.4426950408889634f;

static_assert(kColumns * kPositions <= kThreads, "one thread per score of a chunk");

// Shared memory: `stages` chunks of states and the block's queries as [row][width + 8] (padded
// rows: the 8 rows an ldmatrix reads fall in distinct banks), the warps' partial scores, the
// probabilities [column][position] and each column's rescaling of its output so far.
struct Layout {
  i64 ld = 0;  // elements per padded row
  i64 stage_elements = 0, queries_offset = 0, partial_offset = 0, probability_offset = 0,
      alpha_offset = 0, bytes = 0;
  __host__ __device__ Layout(i64 width, int stages) {
    ld = width + 8;
    stage_elements = kPositions * ld;
    queries_offset = stages * stage_elements * 2;         // bytes
    partial_offset = queries_offset + kColumns * ld * 2;  // 16-byte aligned: ld % 8 == 0
    probability_offset = partial_offset + kWarps * kPositions * kPartialLd * 4;
    alpha_offset = probability_offset + kColumns * kProbabilityLd * 2;
    bytes = alpha_offset + kColumns * 4;
  }
};

struct Launch {
  AbsorbedAttention a;
  float* partial;  // [batch][columns][parts][width]
  float* stats;    // [batch][columns][parts][2]: maximum (log2 units), sum
  int parts = 1, part_positions = 0, stages = 3;
};

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) absorbed_attention_kernel(Launch launch) {
  extern __shared__ __align__(16) unsigned char shared[];
  const AbsorbedAttention& a = launch.a;
  const int width = a.width;
  const Layout layout(width, launch.stages);
  const int ld = static_cast<int>(layout.ld);
  T* stages = reinterpret_cast<T*>(shared);
  T* queries = reinterpret_cast<T*>(shared + layout.queries_offset);
  float* partial_scores = reinterpret_cast<float*>(shared + layout.partial_offset);
  T* probabilities = reinterpret_cast<T*>(shared + layout.probability_offset);
  float* alpha = reinterpret_cast<float*>(shared + layout.alpha_offset);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;    // fragment row group, thread in group
  const int mr = lane % 8, mj = lane / 8;  // ldmatrix: row mr of matrix mj
  const int part = blockIdx.x, b = blockIdx.z;
  const int columns = a.query_len * a.heads;
  const int c0 = blockIdx.y * kColumns;
  const int n_columns = min(kColumns, columns - c0);
  const int item = a.item_index != nullptr ? a.item_index[b] : b;
  const T* states = static_cast<const T*>(a.states) + static_cast<i64>(item) * a.positions * width;
  const int p_begin = part * launch.part_positions;
  const int p_end = min(a.positions, p_begin + launch.part_positions);
  const int chunks = (p_end - p_begin + kPositions - 1) / kPositions;
  const int slices = width / 16;
  const int active_warps = min(kWarps, slices);

  // Chunk `chunk` of the part into stage `chunk % stages`, 16 bytes per asynchronous copy (zeros
  // past the part), committed as one group even when empty, so that groups count chunks.
  const auto load_chunk = [&](int chunk) {
    if (chunk < chunks) {
      T* stage = stages + (chunk % launch.stages) * layout.stage_elements;
      const int p0 = p_begin + chunk * kPositions;
      const int per_row = width / 8;
      for (int i = threadIdx.x; i < kPositions * per_row; i += kThreads) {
        const int r = i / per_row, e = (i % per_row) * 8;
        const bool valid = p0 + r < p_end;
        copy_async16(stage + r * ld + e,
                     states + static_cast<i64>(valid ? p0 + r : p_begin) * width + e, valid);
      }
    }
    commit_copies();
  };
  for (int s = 0; s + 1 < launch.stages; ++s)
    load_chunk(s);

  // The block's queries with their key bias, rounded once into the element type (zero columns
  // past the last: their scores are never used).
  for (int i = threadIdx.x; i < kColumns * (width / 2); i += kThreads) {
    const int r = i / (width / 2), e = (i % (width / 2)) * 2;
    float x = 0.0f, y = 0.0f;
    if (r < n_columns) {
      const int c = c0 + r, h = c % a.heads;
      const float* q = a.queries + (static_cast<i64>(b) * columns + c) * width + e;
      const float* kb = a.key_bias + static_cast<i64>(h) * width + e;
      x = q[0] + kb[0];
      y = q[1] + kb[1];
    }
    *reinterpret_cast<std::uint32_t*>(queries + r * ld + e) = pack(x, y, T{});
  }

  // The softmax's threads: one column each 16 (a half warp), one position each.
  const int my_column = threadIdx.x / kPositions, my_position = threadIdx.x % kPositions;
  const bool softmax_thread = threadIdx.x < kColumns * kPositions;
  const bool my_column_valid = softmax_thread && my_column < n_columns;
  const float scale = a.scale * kLog2e;
  float running_max = -INFINITY, running_sum = 0.0f;
  int capture_slot = -1;
  float* capture_row = nullptr;
  if (my_column_valid && a.n_capture > 0) {
    const int c = c0 + my_column, i = c / a.heads, h = c % a.heads;
    capture_slot = a.slots.slot[h];
    if (capture_slot >= 0) {
      capture_row =
          a.capture +
          ((static_cast<i64>(b) * a.n_capture + capture_slot) * a.query_len + i) * a.positions;
    }
  }

  float out[kMaxSlices][kColumnTiles][4] = {};  // [slice][column tile]: width rows g, g + 8

  for (int chunk = 0; chunk < chunks; ++chunk) {
    load_chunk(chunk + launch.stages - 1);
    // Every group but the newest stages - 1 is complete: this chunk's among them.
    if (launch.stages == 3) {
      wait_copies<2>();
    } else {
      wait_copies<1>();
    }
    __syncthreads();
    const T* stage = stages + (chunk % launch.stages) * layout.stage_elements;
    const int p0 = p_begin + chunk * kPositions;

    // Scores of this warp's slices: A = states (positions x width), B = queries^T.
    if (warp < active_warps) {
      float s[kColumnTiles][4] = {};
#pragma unroll
      for (int j = 0; j < kMaxSlices; ++j) {
        const int d0 = (warp + j * kWarps) * 16;
        if (d0 >= width) break;
        std::uint32_t af[4], b01[4], b2[2];
        load_matrices(af, stage + ((mj & 1) * 8 + mr) * ld + d0 + (mj >> 1) * 8);
        load_matrices(b01, queries + ((mj >> 1) * 8 + mr) * ld + d0 + (mj & 1) * 8);
        load_two_matrices(b2, queries + (16 + mr) * ld + d0 + (mj & 1) * 8);
        mma(s[0], af, b01[0], b01[1], T{});
        mma(s[1], af, b01[2], b01[3], T{});
        mma(s[2], af, b2[0], b2[1], T{});
      }
      float* mine = partial_scores + warp * kPositions * kPartialLd;
#pragma unroll
      for (int n = 0; n < kColumnTiles; ++n) {
        *reinterpret_cast<float2*>(mine + g * kPartialLd + n * 8 + 2 * t) =
            make_float2(s[n][0], s[n][1]);
        *reinterpret_cast<float2*>(mine + (g + 8) * kPartialLd + n * 8 + 2 * t) =
            make_float2(s[n][2], s[n][3]);
      }
    }
    __syncthreads();

    // Online softmax per column over the chunk's 16 positions (log2 units).
    if (softmax_thread) {
      float score = 0.0f;
      for (int w = 0; w < active_warps; ++w)
        score += partial_scores[(w * kPositions + my_position) * kPartialLd + my_column];
      const bool valid = my_column_valid && p0 + my_position < p_end;
      const float x = valid ? score * scale : -INFINITY;
      float chunk_max = x;
      for (int o = 8; o >= 1; o >>= 1)
        chunk_max = fmaxf(chunk_max, __shfl_xor_sync(0xffffffffu, chunk_max, o));
      // A valid column has a valid position in every chunk of its part: the maximum is finite.
      const float new_max = fmaxf(running_max, chunk_max);
      const float rescale = my_column_valid ? exp2f(running_max - new_max) : 1.0f;
      // Rounded as the product reads it, so that the weights it sums are the ones divided by.
      const T p = static_cast<T>(valid ? exp2f(x - new_max) : 0.0f);
      float sum = static_cast<float>(p);
      for (int o = 8; o >= 1; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (my_column_valid) {
        running_sum = running_sum * rescale + sum;
        running_max = new_max;
      }
      probabilities[my_column * kProbabilityLd + my_position] = p;
      if (my_position == 0) alpha[my_column] = rescale;
      // Raw scores; the combining kernel turns them into weights once the column's maximum and
      // sum are known.
      if (capture_row != nullptr && valid) capture_row[p0 + my_position] = x;
    }
    __syncthreads();

    // out (width x columns) = alpha * out + S^T P: A = states^T (ldmatrix.trans), B = P.
    if (warp < active_warps) {
      std::uint32_t p01[4], p2[2];
      load_matrices(p01, probabilities + ((mj >> 1) * 8 + mr) * kProbabilityLd + (mj & 1) * 8);
      load_two_matrices(p2, probabilities + (16 + mr) * kProbabilityLd + (mj & 1) * 8);
      float2 rescale[kColumnTiles];
#pragma unroll
      for (int n = 0; n < kColumnTiles; ++n)
        rescale[n] = make_float2(alpha[n * 8 + 2 * t], alpha[n * 8 + 2 * t + 1]);
#pragma unroll
      for (int j = 0; j < kMaxSlices; ++j) {
        const int d0 = (warp + j * kWarps) * 16;
        if (d0 >= width) break;
        std::uint32_t af[4];
        load_matrices_transposed(af, stage + ((mj >> 1) * 8 + mr) * ld + d0 + (mj & 1) * 8);
#pragma unroll
        for (int n = 0; n < kColumnTiles; ++n) {
          out[j][n][0] *= rescale[n].x;
          out[j][n][1] *= rescale[n].y;
          out[j][n][2] *= rescale[n].x;
          out[j][n][3] *= rescale[n].y;
        }
        mma(out[j][0], af, p01[0], p01[1], T{});
        mma(out[j][1], af, p01[2], p01[3], T{});
        mma(out[j][2], af, p2[0], p2[1], T{});
      }
    }
    __syncthreads();  // the stage, scores and probabilities are free for the next chunks
  }

  // This part's unnormalised outputs, maxima and sums.
  const i64 first = static_cast<i64>(b) * columns + c0;  // the block's first column
  if (warp < active_warps) {
#pragma unroll
    for (int j = 0; j < kMaxSlices; ++j) {
      const int d0 = (warp + j * kWarps) * 16;
      if (d0 >= width) break;
#pragma unroll
      for (int n = 0; n < kColumnTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int column = n * 8 + 2 * t + (e & 1), dim = d0 + g + (e >> 1) * 8;
          if (column < n_columns) {
            launch.partial[((first + column) * launch.parts + part) * width + dim] = out[j][n][e];
          }
        }
      }
    }
  }
  if (my_column_valid && my_position == 0) {
    float* stats = launch.stats + ((first + my_column) * launch.parts + part) * 2;
    stats[0] = running_max;
    stats[1] = running_sum;
  }
}

// One block per column: the parts combined by their maxima and sums into z (the element type),
// and the column's captured scores into weights.
template <typename T>
__global__ void absorbed_attention_combine_kernel(Launch launch) {
  const AbsorbedAttention& a = launch.a;
  const i64 column = blockIdx.x;  // b * columns + c
  const int columns = a.query_len * a.heads;
  const int b = static_cast<int>(column / columns), c = static_cast<int>(column % columns);
  const float* stats = launch.stats + column * launch.parts * 2;
  float top = -INFINITY;
  for (int p = 0; p < launch.parts; ++p)
    top = fmaxf(top, stats[2 * p]);
  float sum = 0.0f;
  for (int p = 0; p < launch.parts; ++p)
    sum += stats[2 * p + 1] * exp2f(stats[2 * p] - top);
  const float inverse = 1.0f / sum;
  const float* partial = launch.partial + column * launch.parts * a.width;
  T* z = static_cast<T*>(a.z) + column * a.width;
  for (int e = threadIdx.x; e < a.width; e += blockDim.x) {
    float v = 0.0f;
    for (int p = 0; p < launch.parts; ++p)
      v += partial[static_cast<i64>(p) * a.width + e] * exp2f(stats[2 * p] - top);
    z[e] = static_cast<T>(v * inverse);
  }
  const int h = c % a.heads, slot = a.n_capture > 0 ? a.slots.slot[h] : -1;
  if (slot >= 0) {
    float* row =
        a.capture +
        ((static_cast<i64>(b) * a.n_capture + slot) * a.query_len + c / a.heads) * a.positions;
    for (int i = threadIdx.x; i < a.positions; i += blockDim.x)
      row[i] = exp2f(row[i] - top) * inverse;
  }
}

i64 round_up(i64 v, i64 to) {
  return (v + to - 1) / to * to;
}

// The most stages whose shared memory the device lends a block (0: not even 2).
int stages_that_fit(i64 width, i64 shared_limit) {
  for (int stages = 3; stages >= 2; --stages) {
    if (Layout(width, stages).bytes <= shared_limit) return stages;
  }
  return 0;
}

void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

}  // namespace

bool absorbed_attention_supported(DType type, std::int64_t width, const DeviceLimits& limits) {
  return (type == DType::kF16 || type == DType::kBF16) && width >= 16 && width % 16 == 0 &&
         width <= kAbsorbedMaxWidth && stages_that_fit(width, limits.shared_per_block) > 0;
}

AbsorbedAttentionPlan plan_absorbed_attention(const AbsorbedAttention& a,
                                              const DeviceLimits& limits) {
  AbsorbedAttentionPlan plan;
  const i64 columns = static_cast<i64>(a.query_len) * a.heads;
  const i64 blocks = static_cast<i64>(a.batch) * ((columns + kColumns - 1) / kColumns);
  // Parts of each window so that the blocks fill the GPU's multiprocessors once (one block
  // each), in whole chunks.
  const i64 wanted = std::max<i64>(1, limits.multiprocessors / std::max<i64>(blocks, 1));
  plan.part_positions = static_cast<int>(round_up((a.positions + wanted - 1) / wanted, kPositions));
  plan.parts = static_cast<int>((a.positions + plan.part_positions - 1) / plan.part_positions);
  const i64 per_column = static_cast<i64>(plan.parts) * (a.width + 2);
  plan.scratch_floats = static_cast<i64>(a.batch) * columns * per_column;
  return plan;
}

void absorbed_attention(const AbsorbedAttention& a, const AbsorbedAttentionPlan& plan,
                        const DeviceLimits& limits, float* scratch, cudaStream_t stream) {
  if (!absorbed_attention_supported(a.type, a.width, limits) || a.batch < 1 || a.heads < 1 ||
      a.query_len < 1 || a.positions < 1) {
    throw std::invalid_argument("absorbed attention: unsupported");
  }
  Launch launch;
  launch.a = a;
  launch.parts = plan.parts;
  launch.part_positions = plan.part_positions;
  launch.stages = stages_that_fit(a.width, limits.shared_per_block);
  const i64 columns = static_cast<i64>(a.query_len) * a.heads;
  launch.partial = scratch;
  launch.stats = scratch + static_cast<i64>(a.batch) * columns * plan.parts * a.width;
  const i64 bytes = Layout(a.width, launch.stages).bytes;
  const dim3 grid(static_cast<unsigned>(plan.parts),
                  static_cast<unsigned>((columns + kColumns - 1) / kColumns),
                  static_cast<unsigned>(a.batch));
  const auto run = [&](auto kernel, auto combine) {
    // Above 48 KiB a block's dynamic shared memory must be asked for (once per kernel would do;
    // the call is cheap and not recorded in a graph).
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(bytes)),
          "absorbed attention: shared memory");
    kernel<<<grid, kThreads, static_cast<std::size_t>(bytes), stream>>>(launch);
    check_launch("absorbed attention");
    combine<<<static_cast<unsigned>(a.batch * columns), 256, 0, stream>>>(launch);
    check_launch("absorbed attention's combination");
  };
  if (a.type == DType::kF16) {
    run(absorbed_attention_kernel<__half>, absorbed_attention_combine_kernel<__half>);
  } else {
    run(absorbed_attention_kernel<__nv_bfloat16>, absorbed_attention_combine_kernel<__nv_bfloat16>);
  }
}

}  // namespace ifw::backend::cuda
