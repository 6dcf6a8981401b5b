#include "backend/cpu/attention.hpp"

#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "backend/cpu/kernels.hpp"

namespace ifw::backend::cpu {
namespace {

// Queries per task: big enough for an efficient matrix product, small enough that the score
// block of one task stays in cache-friendly size and every core gets work.
constexpr std::int64_t kQueryBlock = 128;

const float* cptr(const MatrixRef& m) {
  return m.tensor.data<float>() + m.column;
}
float* mptr(const MatrixRef& m) {
  return m.tensor.data<float>() + m.column;
}

// Scores of one block of queries against one head's keys, reused across calls of a thread.
std::vector<float>& scratch(std::size_t size) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

std::vector<float>& row_sums(std::size_t size) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

std::vector<float>& biased_queries(std::size_t size) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

// Captured probabilities of one head's rows: the unnormalised exponentials `s` (rows of `keys`)
// divided by their sums, zeros past `keys` up to `key_block`.
void capture_rows(std::span<float> capture, std::span<const int> capture_heads, int head,
                  std::int64_t b, std::int64_t query_len, std::int64_t q0, std::int64_t nq,
                  const float* s, std::int64_t keys, const float* sums, std::int64_t key_block) {
  const auto found = std::find(capture_heads.begin(), capture_heads.end(), head);
  if (capture.empty() || found == capture_heads.end()) return;
  const auto slot = static_cast<std::int64_t>(found - capture_heads.begin());
  const auto n_capture = static_cast<std::int64_t>(capture_heads.size());
  for (std::int64_t i = 0; i < nq; ++i) {
    float* dst = capture.data() + ((b * n_capture + slot) * query_len + q0 + i) * key_block;
    std::memcpy(dst, s + i * keys, static_cast<std::size_t>(keys) * sizeof(float));
    scale(dst, keys, 1.0f / sums[i]);
    std::fill(dst + keys, dst + key_block, 0.0f);
  }
}

}  // namespace

void attention(const AttentionArgs& a, util::ThreadPool& pool, const Blas& blas) {
  if (static_cast<int>(a.key_lengths.size()) != a.batch) {
    throw Error(ErrorKind::kInvalidArgument, "attention: one key length per batch item is needed");
  }
  if (!a.item_index.empty() && static_cast<int>(a.item_index.size()) != a.batch) {
    throw Error(ErrorKind::kInvalidArgument, "attention: item_index needs one entry per batch row");
  }
  if (!a.capture.empty() && a.capture.size() != static_cast<std::size_t>(a.batch) *
                                                    a.capture_heads.size() *
                                                    static_cast<std::size_t>(a.query_len) *
                                                    static_cast<std::size_t>(a.key_block)) {
    throw Error(ErrorKind::kInvalidArgument, "attention: capture buffer has the wrong size");
  }
  if (a.q_bias != nullptr &&
      (a.q_bias->dtype() != DType::kF32 || a.q_bias->device() != Device::kCpu ||
       a.q_bias->numel() != static_cast<std::int64_t>(a.heads) * a.head_dim)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("attention: a query bias of {} for {} heads of {} (float32 on the CPU)",
                            a.q_bias->numel(), a.heads, a.head_dim));
  }
  const std::int64_t blocks = (a.query_len + kQueryBlock - 1) / kQueryBlock;
  const std::int64_t tasks = static_cast<std::int64_t>(a.batch) * a.heads * blocks;
  const std::int64_t kb = a.key_block;

  pool.run(static_cast<int>(tasks), [&](int task) {
    const int block = static_cast<int>(task % blocks);
    const int head = static_cast<int>((task / blocks) % a.heads);
    const int b = static_cast<int>(task / blocks / a.heads);
    const std::int64_t q0 = block * kQueryBlock;
    const std::int64_t nq = std::min<std::int64_t>(kQueryBlock, a.query_len - q0);
    const std::int64_t keys = a.key_lengths[static_cast<std::size_t>(b)];
    const std::int64_t hd = a.head_dim;

    const float* q = cptr(a.q) + (b * a.query_len + q0) * a.q.ld + head * hd;
    std::int64_t ld_q = a.q.ld;
    if (a.q_bias != nullptr) {  // this block's queries with their bias
      std::vector<float>& biased = biased_queries(static_cast<std::size_t>(nq * hd));
      const float* bias = a.q_bias->data<float>() + head * hd;
      for (std::int64_t i = 0; i < nq; ++i) {
        for (std::int64_t e = 0; e < hd; ++e)
          biased[static_cast<std::size_t>(i * hd + e)] = q[i * a.q.ld + e] + bias[e];
      }
      q = biased.data();
      ld_q = hd;
    }
    const std::int64_t item = a.item_index.empty() ? b : a.item_index[static_cast<std::size_t>(b)];
    const float* k = cptr(a.k) + item * kb * a.k.ld + head * hd;
    const float* v = cptr(a.v) + item * kb * a.v.ld + head * hd;
    float* out = mptr(a.out) + (b * a.query_len + q0) * a.out.ld + head * hd;

    std::vector<float>& s = scratch(static_cast<std::size_t>(nq * keys));
    // S = Q K^T
    blas.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq),
               static_cast<int>(keys), static_cast<int>(hd), 1.0f, q, static_cast<int>(ld_q), k,
               static_cast<int>(a.k.ld), 0.0f, s.data(), static_cast<int>(keys));
    // Softmax without its division: exp(S - max) and each row's sum.
    std::vector<float>& sums = row_sums(static_cast<std::size_t>(nq));
    for (std::int64_t i = 0; i < nq; ++i) {
      // With a causal mask, query i (absolute i + keys - query_len) sees keys up to itself.
      const std::int64_t valid = a.causal ? keys - a.query_len + q0 + i + 1 : keys;
      sums[static_cast<std::size_t>(i)] =
          exp_shifted(s.data() + i * keys, keys, std::clamp<std::int64_t>(valid, 1, keys), a.scale);
    }
    // O = P V, each output row then divided by its sum (head_dim values rather than `keys`).
    blas.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nq),
               static_cast<int>(hd), static_cast<int>(keys), 1.0f, s.data(), static_cast<int>(keys),
               v, static_cast<int>(a.v.ld), 0.0f, out, static_cast<int>(a.out.ld));
    for (std::int64_t i = 0; i < nq; ++i) {
      scale(out + i * a.out.ld, hd, 1.0f / sums[static_cast<std::size_t>(i)]);
    }

    capture_rows(a.capture, a.capture_heads, head, b, a.query_len, q0, nq, s.data(), keys,
                 sums.data(), kb);
  });
}

}  // namespace ifw::backend::cpu
