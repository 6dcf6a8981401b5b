#include "backend/cpu/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

// Compiled once per listed instruction set; the loader picks the best the CPU supports. Not
// under AddressSanitizer or ThreadSanitizer: the loader runs the picking functions before the
// sanitizer's runtime is ready (a ThreadSanitizer build crashed at start).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define IFW_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define IFW_VECTOR_CLONES
#endif

namespace ifw::backend::cpu {
namespace {

// e^x without branches or library calls, so that loops over it vectorise: x = n ln2 + r with
// |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n put into the exponent bits.
inline float exp_approx(float x) {
  x = std::clamp(x, -87.0f, 88.0f);                              // keeps 2^n a normal float
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // round to nearest integer
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;  // ln2 hi/lo
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto bits = static_cast<std::int32_t>(n + 127.0f) << 23;
  float scale;
  static_assert(sizeof(scale) == sizeof(bits));
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// erf(x) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), odd-extended.
inline float erf_approx(float x) {
  const float a = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.0f - p * t * exp_approx(-a * a);
  return std::copysign(y, x);
}

// Under AddressSanitizer the dot product below is checked a row at a time instead of a float at a
// time: per-element checks kept its loop scalar, and it was most of the sanitizer tests' time (the
// decoder's products). The whole of both rows must be addressable, or the report is ASan's own.
#if defined(__SANITIZE_ADDRESS__)
#define IFW_ROW_CHECKED __attribute__((no_sanitize("address", "undefined"), noinline))
void require_addressable(const float* p, std::int64_t n) {
  if (n <= 0) return;
  void* bad =
      __asan_region_is_poisoned(const_cast<float*>(p), static_cast<std::size_t>(n) * sizeof(float));
  if (bad != nullptr) {
    std::fprintf(stderr,
                 "ifw: a CPU kernel would read %lld floats from %p: %p is not addressable\n",
                 static_cast<long long>(n), static_cast<const void*>(p), bad);
    __asan_describe_address(bad);
    std::abort();
  }
}
#else
#define IFW_ROW_CHECKED
inline void require_addressable(const float*, std::int64_t) {}
#endif

IFW_ROW_CHECKED float dot(const float* a, const float* b, std::int64_t k) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t j = 0; j < k; ++j)
    sum += a[j] * b[j];
  return sum;
}

}  // namespace

IFW_VECTOR_CLONES void gelu(float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
  }
}

IFW_VECTOR_CLONES void add_bias(float* x, std::int64_t rows, std::int64_t width, std::int64_t ld,
                                const float* bias, Activation then) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * ld;
    if (bias != nullptr) {
      for (std::int64_t i = 0; i < width; ++i)
        row[i] += bias[i];
    }
    if (then == Activation::kGelu) {
      for (std::int64_t i = 0; i < width; ++i) {
        const float v = row[i];
        row[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
      }
    }
  }
}

IFW_VECTOR_CLONES void layer_norm(const float* x, const float* shift, float* y, std::int64_t rows,
                                  std::int64_t d, const float* gamma, const float* beta,
                                  float eps) {
  thread_local std::vector<float> shifted;
  if (shift != nullptr && shifted.size() < static_cast<std::size_t>(d))
    shifted.resize(static_cast<std::size_t>(d));
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * d;
    if (shift != nullptr) {
      for (std::int64_t i = 0; i < d; ++i)
        shifted[static_cast<std::size_t>(i)] = in[i] + shift[i];
      in = shifted.data();
    }
    float* out = y + r * d;
    float sum = 0.0f;
    for (std::int64_t i = 0; i < d; ++i)
      sum += in[i];
    const float mean = sum / static_cast<float>(d);
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (std::int64_t i = 0; i < d; ++i) {
      const float c = in[i] - mean;
      sq += c * c;
    }
    const float inv = 1.0f / std::sqrt(sq / static_cast<float>(d) + eps);
    for (std::int64_t i = 0; i < d; ++i)
      out[i] = (in[i] - mean) * inv * gamma[i] + beta[i];
  }
}

IFW_VECTOR_CLONES float exp_shifted(float* row, std::int64_t n, std::int64_t valid, float scale) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (std::int64_t i = 0; i < valid; ++i)
    max = std::max(max, row[i]);
  const float shift = max * scale;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t i = 0; i < valid; ++i) {
    const float e = exp_approx(row[i] * scale - shift);
    row[i] = e;
    sum += e;
  }
  for (std::int64_t i = valid; i < n; ++i)
    row[i] = 0.0f;
  return sum;
}

IFW_VECTOR_CLONES void scale(float* x, std::int64_t n, float factor) {
  for (std::int64_t i = 0; i < n; ++i)
    x[i] *= factor;
}

void softmax(float* row, std::int64_t n, std::int64_t valid, float scale_by) {
  const float sum = exp_shifted(row, n, valid, scale_by);
  scale(row, valid, 1.0f / sum);
}

IFW_VECTOR_CLONES void add(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    y[i] += x[i];
}

IFW_VECTOR_CLONES void small_rows_times_transposed(const float* x, std::int64_t ldx, std::int64_t m,
                                                   const float* w, std::int64_t k,
                                                   std::int64_t n_begin, std::int64_t n_end,
                                                   float* y, std::int64_t ldy, bool accumulate) {
  for (std::int64_t i = 0; i < m; ++i)
    require_addressable(x + i * ldx, k);
  for (std::int64_t n = n_begin; n < n_end; ++n) {
    const float* wn = w + n * k;
    require_addressable(wn, k);
    for (std::int64_t i = 0; i < m; ++i) {
      const float sum = dot(x + i * ldx, wn, k);
      float& out = y[i * ldy + n];
      out = accumulate ? out + sum : sum;
    }
  }
}

IFW_VECTOR_CLONES void exp_inplace(float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    x[i] = exp_approx(x[i]);
}

}  // namespace ifw::backend::cpu
