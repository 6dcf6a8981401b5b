// Element-wise and row-wise float kernels of the CPU backend. Each is compiled for AVX-512, AVX2
// and baseline x86-64 and picked at run time (GCC target clones), so one binary runs anywhere
// and uses the widest vectors the CPU has.
#pragma once

#include <cstdint>

#include "backend/activation.hpp"

namespace ifw::backend::cpu {

// y = x * Phi(x), the exact (erf) GELU as Whisper uses it; |error| < 2e-7 * |x|.
void gelu(float* x, std::int64_t n);
// x[i] += bias[i % width] for a row-major [n / width][width] block (bias may be null), then
// `then` (none or the exact GELU).
void add_bias(float* x, std::int64_t rows, std::int64_t width, std::int64_t ld, const float* bias,
              Activation then);
// y[r] = (v - mean) / sqrt(var + eps) * gamma + beta for each row of width d, where v = x[r] +
// shift (v = x[r] where shift is null).
void layer_norm(const float* x, const float* shift, float* y, std::int64_t rows, std::int64_t d,
                const float* gamma, const float* beta, float eps);
// In place: row = softmax(row * scale) over its first `valid` entries; the rest become 0.
void softmax(float* row, std::int64_t n, std::int64_t valid, float scale);
// The unnormalised part of softmax: row = e^(row * scale - max) over the first `valid` entries
// (the rest 0); returns their sum. Attention divides its (much smaller) output by the sum instead.
float exp_shifted(float* row, std::int64_t n, std::int64_t valid, float scale);
// x *= factor
void scale(float* x, std::int64_t n, float factor);
// y[i] += x[i]
void add(float* y, const float* x, std::int64_t n);
// y[i][n] (+)= sum_k x[i][k] * w[n][k] for rows i < m and outputs n in [n_begin, n_end): the
// matrix product of a decoder step, where m is small. Streams each weight row once for all m
// rows (a general GEMM would first copy the whole weight matrix into its packed layout).
void small_rows_times_transposed(const float* x, std::int64_t ldx, std::int64_t m, const float* w,
                                 std::int64_t k, std::int64_t n_begin, std::int64_t n_end, float* y,
                                 std::int64_t ldy, bool accumulate);

// e^x for a whole array, relative error < 3e-7 (used by softmax; exposed for tests).
void exp_inplace(float* x, std::int64_t n);

}  // namespace ifw::backend::cpu
