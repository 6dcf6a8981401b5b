// The CPU backend's operations against straightforward double-precision references.
#include <cmath>
#include <numbers>
#include <random>

#include <gtest/gtest.h>

#include "backend/backend.hpp"
#include "backend/cpu/kernels.hpp"
#include "support/expect_error.hpp"
#include "support/sanitizers.hpp"
#include "support/test_backend.hpp"

namespace ifw::test {
namespace {

using backend::Activation;
using backend::MatrixRef;
using backend::Tensor;

std::vector<float> random_values(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v)
    x = dist(rng);
  return v;
}

double gelu_reference(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::numbers::sqrt2));
}

// Memory lent by a backend goes back once, when the last buffer it moved to goes; plain memory
// is its own.
TEST(HostBuffer, GivesItsMemoryBackOnceWhereverItMoved) {
  std::vector<float> lent(8, 1.0f);
  int given_back = 0;
  {
    backend::HostBuffer a(lent.data(), lent.size(), [&] { ++given_back; });
    EXPECT_EQ(a.values().data(), lent.data());
    EXPECT_EQ(a.values().size(), 8u);
    backend::HostBuffer b(std::move(a));
    EXPECT_TRUE(a.values().empty());  // NOLINT(bugprone-use-after-move): moved from, empty
    EXPECT_EQ(b.values().data(), lent.data());
    backend::HostBuffer c(4);
    c.values()[3] = 2.0f;
    c = std::move(b);  // c's own memory goes, the lent memory moves in
    EXPECT_EQ(given_back, 0);
    EXPECT_EQ(c.values().data(), lent.data());
    backend::HostBuffer d(lent.data(), 2, [&] { given_back += 10; });
    d = std::move(c);  // d gives its first memory back
    EXPECT_EQ(given_back, 10);
  }
  EXPECT_EQ(given_back, 11);
  backend::HostBuffer plain = backend::make_cpu_backend(1)->host_buffer(5);
  EXPECT_EQ(plain.values().size(), 5u);
  plain.values()[4] = 3.0f;  // writable: under AddressSanitizer, in bounds
}

// Under AddressSanitizer the product's dot products are checked a row at a time (kernels.cpp):
// a read past a row must still end the process with ASan's description of the address.
TEST(CpuKernels, ProductRowsAreStillCheckedUnderAddressSanitizer) {
  if (!kSanitized) GTEST_SKIP() << "checks what AddressSanitizer reports";
  const std::vector<float> x(8, 1.0f), w(3 * 8, 1.0f);
  std::vector<float> y(3, 0.0f);
  const auto multiply = [&](std::int64_t k) {
    backend::cpu::small_rows_times_transposed(x.data(), 8, 1, w.data(), k, 0, 3, y.data(), 3,
                                              false);
  };
  multiply(8);
  EXPECT_EQ(y, std::vector<float>(3, 8.0f));
  // k = 9 reads a float past x's only row (and past the end of w for its last row).
  EXPECT_DEATH(multiply(9), "a CPU kernel would read 9 floats.*not addressable");
}

TEST(CpuKernels, GeluMatchesTheErfDefinition) {
  std::vector<float> x;
  for (float v = -10.0f; v <= 10.0f; v += 0.001f)
    x.push_back(v);
  auto y = x;
  backend::cpu::gelu(y.data(), static_cast<std::int64_t>(y.size()));
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    worst = std::max(worst, std::fabs(y[i] - gelu_reference(x[i])) /
                                std::max(1.0, std::fabs(static_cast<double>(x[i]))));
  }
  EXPECT_LT(worst, 5e-7);
}

TEST(CpuKernels, ExpIsAccurateOverFloatRange) {
  std::vector<float> x;
  for (float v = -80.0f; v <= 80.0f; v += 0.01f)
    x.push_back(v);
  auto y = x;
  backend::cpu::exp_inplace(y.data(), static_cast<std::int64_t>(y.size()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double expected = std::exp(static_cast<double>(x[i]));
    ASSERT_NEAR(y[i] / expected, 1.0, 3e-7) << "x = " << x[i];
  }
}

TEST(CpuKernels, SoftmaxRowsSumToOneAndIgnorePastValid) {
  auto row = random_values(100, 1, 20.0f);
  const auto original = row;
  backend::cpu::softmax(row.data(), 100, 60, 0.5f);
  double sum = 0.0, max = -1e30;
  for (int i = 0; i < 60; ++i)
    max = std::max(max, 0.5 * original[static_cast<std::size_t>(i)]);
  double denom = 0.0;
  for (int i = 0; i < 60; ++i)
    denom += std::exp(0.5 * original[static_cast<std::size_t>(i)] - max);
  for (int i = 0; i < 60; ++i) {
    const double expected = std::exp(0.5 * original[static_cast<std::size_t>(i)] - max) / denom;
    EXPECT_NEAR(row[static_cast<std::size_t>(i)], expected, 1e-6);
    sum += row[static_cast<std::size_t>(i)];
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
  for (int i = 60; i < 100; ++i)
    EXPECT_EQ(row[static_cast<std::size_t>(i)], 0.0f);
}

// Without and with a shift, at widths that grow and shrink on one thread (the shifted rows go
// through a buffer the thread keeps).
TEST(CpuKernels, LayerNormMatchesDoublePrecision) {
  for (const int d : {384, 24, 1280, 384}) {
    for (const bool shifted : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "width " << d << (shifted ? ", shifted" : ""));
      const int rows = 3;
      const auto x = random_values(static_cast<std::size_t>(rows * d), 2, 3.0f);
      const auto gamma = random_values(static_cast<std::size_t>(d), 3);
      const auto beta = random_values(static_cast<std::size_t>(d), 4);
      const auto shift = random_values(static_cast<std::size_t>(d), 5, 2.0f);
      std::vector<float> y(x.size());
      backend::cpu::layer_norm(x.data(), shifted ? shift.data() : nullptr, y.data(), rows, d,
                               gamma.data(), beta.data(), 1e-5f);
      const auto in = [&](int r, int i) {
        return static_cast<double>(x[static_cast<std::size_t>(r * d + i)]) +
               (shifted ? shift[static_cast<std::size_t>(i)] : 0.0);
      };
      for (int r = 0; r < rows; ++r) {
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < d; ++i)
          mean += in(r, i);
        mean /= d;
        for (int i = 0; i < d; ++i)
          var += std::pow(in(r, i) - mean, 2);
        var /= d;
        for (int i = 0; i < d; ++i) {
          const double expected =
              (in(r, i) - mean) / std::sqrt(var + 1e-5) * gamma[static_cast<std::size_t>(i)] +
              beta[static_cast<std::size_t>(i)];
          ASSERT_NEAR(y[static_cast<std::size_t>(r * d + i)], expected, 1e-5);
        }
      }
    }
  }
}

class CpuBackendTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { be_ = backend::make_cpu_backend(GetParam()); }
  std::unique_ptr<backend::Backend> be_;
};

// y = act(x w^T + b) (+ y) for every way the backend splits the work.
TEST_P(CpuBackendTest, LinearAllShapes) {
  for (const std::int64_t rows : {1, 3, 8, 9, 50, 700}) {
    for (const bool accumulate : {false, true}) {
      for (const Activation act : {Activation::kNone, Activation::kGelu}) {
        if (accumulate && act != Activation::kNone) continue;
        const std::int64_t k = 40, n = 300;
        const auto xv = random_values(static_cast<std::size_t>(rows * k), 5);
        const auto wv = random_values(static_cast<std::size_t>(n * k), 6, 0.3f);
        const auto bv = random_values(static_cast<std::size_t>(n), 7);
        const auto yv = random_values(static_cast<std::size_t>(rows * n), 8);
        const Tensor x = be_->upload(xv, {rows, k}), w = be_->upload(wv, {n, k}),
                     b = be_->upload(bv, {n});
        Tensor y = be_->upload(yv, {rows, n});
        be_->linear({x, 0, k}, w, &b, act, {y, 0, n}, rows, accumulate);
        const auto out = to_host(*be_, y);
        for (std::int64_t r = 0; r < rows; ++r) {
          for (std::int64_t c = 0; c < n; ++c) {
            double s = bv[static_cast<std::size_t>(c)];
            for (std::int64_t i = 0; i < k; ++i)
              s += static_cast<double>(xv[static_cast<std::size_t>(r * k + i)]) *
                   wv[static_cast<std::size_t>(c * k + i)];
            if (act == Activation::kGelu) s = gelu_reference(s);
            if (accumulate) s += yv[static_cast<std::size_t>(r * n + c)];
            ASSERT_NEAR(out[static_cast<std::size_t>(r * n + c)], s, 1e-4)
                << "rows " << rows << " r " << r << " c " << c;
          }
        }
      }
    }
  }
}

// Attention of q against k/v blocks, with a causal mask, per-row key lengths, a subset of cache
// items and captured weights, against a direct computation.
TEST_P(CpuBackendTest, AttentionMatchesDirectComputation) {
  const int heads = 2, hd = 8, d = heads * hd, tq = 3, block = 10;
  const std::vector<int> items = {2, 0};  // rows use cache items 2 and 0
  const std::vector<int> lengths = {7, 5};
  const auto qv = random_values(static_cast<std::size_t>(2 * tq * d), 9);
  const auto kv = random_values(static_cast<std::size_t>(3 * block * d), 10);
  const auto vv = random_values(static_cast<std::size_t>(3 * block * d), 11);
  const Tensor q = be_->upload(qv, {2 * tq, d});
  const Tensor k = be_->upload(kv, {3 * block, d}), v = be_->upload(vv, {3 * block, d});
  // Without, then with a query bias (added to every query row before its scores).
  const auto bias = random_values(static_cast<std::size_t>(d), 12);
  const Tensor bias_t = be_->upload(bias, {d});
  for (const bool biased : {false, true}) {
    SCOPED_TRACE(biased ? "with a query bias" : "without a query bias");
    Tensor out = be_->empty({2 * tq, d});
    std::vector<float> capture(static_cast<std::size_t>(2 * 1 * tq * block));
    backend::AttentionArgs a;
    a.q = {q, 0, d};
    a.k = {k, 0, d};
    a.v = {v, 0, d};
    a.out = {out, 0, d};
    a.batch = 2;
    a.heads = heads;
    a.head_dim = hd;
    a.query_len = tq;
    a.key_block = block;
    a.key_lengths = lengths;
    a.item_index = items;
    a.causal = true;
    a.scale = 0.35f;
    a.capture_heads = {1};
    a.capture = capture;
    if (biased) a.q_bias = &bias_t;
    be_->attention(a);
    const auto o = to_host(*be_, out);
    for (int b = 0; b < 2; ++b) {
      for (int h = 0; h < heads; ++h) {
        for (int i = 0; i < tq; ++i) {
          const int valid = lengths[static_cast<std::size_t>(b)] - tq + i + 1;
          std::vector<double> p(static_cast<std::size_t>(valid));
          double max = -1e30, sum = 0.0;
          for (int j = 0; j < valid; ++j) {
            double s = 0.0;
            for (int e = 0; e < hd; ++e) {
              const double qe =
                  static_cast<double>(qv[static_cast<std::size_t>((b * tq + i) * d + h * hd + e)]) +
                  (biased ? bias[static_cast<std::size_t>(h * hd + e)] : 0.0);
              s += qe * kv[static_cast<std::size_t>(
                            (items[static_cast<std::size_t>(b)] * block + j) * d + h * hd + e)];
            }
            p[static_cast<std::size_t>(j)] = s * a.scale;
            max = std::max(max, p[static_cast<std::size_t>(j)]);
          }
          for (double& x : p)
            sum += (x = std::exp(x - max));
          for (double& x : p)
            x /= sum;
          for (int e = 0; e < hd; ++e) {
            double expected = 0.0;
            for (int j = 0; j < valid; ++j) {
              expected += p[static_cast<std::size_t>(j)] *
                          vv[static_cast<std::size_t>(
                              (items[static_cast<std::size_t>(b)] * block + j) * d + h * hd + e)];
            }
            ASSERT_NEAR(o[static_cast<std::size_t>((b * tq + i) * d + h * hd + e)], expected, 1e-5);
          }
          if (h == 1) {
            for (int j = 0; j < block; ++j) {
              const float got = capture[static_cast<std::size_t>((b * tq + i) * block + j)];
              ASSERT_NEAR(got, j < valid ? p[static_cast<std::size_t>(j)] : 0.0, 1e-6);
            }
          }
        }
      }
    }
  }
  backend::AttentionArgs wrong;
  wrong.q = {q, 0, d};
  wrong.k = wrong.v = {k, 0, d};
  Tensor out = be_->empty({2 * tq, d});
  wrong.out = {out, 0, d};
  wrong.batch = 1;
  wrong.heads = heads;
  wrong.head_dim = hd;
  wrong.query_len = 1;
  wrong.key_block = block;
  wrong.key_lengths = {1};
  const Tensor short_bias = be_->upload(std::vector<float>(3, 0.0f), {3});
  wrong.q_bias = &short_bias;
  EXPECT_IFW_ERROR(be_->attention(wrong),
                   "attention: a query bias of 3 for 2 heads of 8 (float32 on the CPU)");
}

TEST_P(CpuBackendTest, ConvolutionMatchesDirectComputation) {
  const int batch = 2, t_in = 9, c_in = 3, c_out = 4;
  for (const int stride : {1, 2}) {
    const int t_out = (t_in + stride - 1) / stride;
    const auto xv = random_values(static_cast<std::size_t>(batch * t_in * c_in), 12);
    const auto wv = random_values(static_cast<std::size_t>(c_out * c_in * 3), 13);
    const auto bv = random_values(static_cast<std::size_t>(c_out), 14);
    const Tensor x = be_->upload(xv, {batch, t_in, c_in}), w = be_->upload(wv, {c_out, c_in, 3}),
                 b = be_->upload(bv, {c_out});
    Tensor y = be_->empty({batch, t_out, c_out});
    be_->conv1d_gelu(x, w, b, stride, y);
    const auto out = to_host(*be_, y);
    for (int n = 0; n < batch; ++n) {
      for (int t = 0; t < t_out; ++t) {
        for (int o = 0; o < c_out; ++o) {
          double s = bv[static_cast<std::size_t>(o)];
          for (int c = 0; c < c_in; ++c) {
            for (int kk = 0; kk < 3; ++kk) {
              const int src = t * stride + kk - 1;
              if (src < 0 || src >= t_in) continue;
              s += static_cast<double>(wv[static_cast<std::size_t>((o * c_in + c) * 3 + kk)]) *
                   xv[static_cast<std::size_t>((n * t_in + src) * c_in + c)];
            }
          }
          ASSERT_NEAR(out[static_cast<std::size_t>((n * t_out + t) * c_out + o)], gelu_reference(s),
                      1e-5);
        }
      }
    }
  }
}

TEST_P(CpuBackendTest, TransposeRowsAndEmbeddings) {
  const auto xv = random_values(2 * 3 * 70, 15);
  const Tensor x = be_->upload(xv, {2, 3, 70});
  Tensor y = be_->empty({2, 70, 3});
  be_->transpose_last2(x, y);
  const auto t = to_host(*be_, y);
  for (int b = 0; b < 2; ++b) {
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < 70; ++i)
        ASSERT_EQ(t[static_cast<std::size_t>((b * 70 + i) * 3 + c)],
                  xv[static_cast<std::size_t>((b * 3 + c) * 70 + i)]);
    }
  }
  const auto table = random_values(5 * 4, 16), positions = random_values(3 * 4, 17);
  const Tensor tt = be_->upload(table, {5, 4}), pt = be_->upload(positions, {3, 4});
  Tensor e = be_->empty({2, 4});
  const std::int32_t ids[] = {4, 1}, pos[] = {0, 2};
  be_->embed(ids, pos, tt, pt, e);
  const auto ev = to_host(*be_, e);
  EXPECT_FLOAT_EQ(ev[5], table[1 * 4 + 1] + positions[2 * 4 + 1]);
  const std::int32_t bad_id[] = {5}, bad_pos[] = {3}, zero[] = {0};
  Tensor one = be_->empty({1, 4});
  EXPECT_IFW_ERROR(be_->embed(bad_id, zero, tt, pt, one),
                   "token id 5 is outside the vocabulary of 5");
  EXPECT_IFW_ERROR(be_->embed(zero, bad_pos, tt, pt, one),
                   "position 3 is past the decoder's 3 positions");
  EXPECT_IFW_ERROR(be_->upload(table, {3, 3}), "upload: 20 values for shape [3, 3]");
}

// With a shift (the residual stream's biases, summed), x + shift is what gets normalised; x is
// left as it was either way.
TEST_P(CpuBackendTest, LayerNormNormalisesTheRowsPlusTheShift) {
  const std::int64_t rows = 37, d = 24;
  const auto xv = random_values(static_cast<std::size_t>(rows * d), 18, 3.0f);
  const auto add = random_values(static_cast<std::size_t>(d), 19, 2.0f);
  const auto gamma = random_values(static_cast<std::size_t>(d), 20);
  const auto beta = random_values(static_cast<std::size_t>(d), 21);
  const Tensor x = be_->upload(xv, {rows, d});
  const Tensor a = be_->upload(add, {d}), g = be_->upload(gamma, {d}), b = be_->upload(beta, {d});
  const auto expect_normalised = [&](const std::vector<float>& in, const Tensor& y) {
    const auto out = to_host(*be_, y);
    for (std::int64_t r = 0; r < rows; ++r) {
      double mean = 0.0, var = 0.0;
      for (std::int64_t i = 0; i < d; ++i)
        mean += in[static_cast<std::size_t>(r * d + i)];
      mean /= static_cast<double>(d);
      for (std::int64_t i = 0; i < d; ++i)
        var += std::pow(in[static_cast<std::size_t>(r * d + i)] - mean, 2);
      const double inv = 1.0 / std::sqrt(var / static_cast<double>(d) + 1e-5);
      for (std::int64_t i = 0; i < d; ++i) {
        const auto k = static_cast<std::size_t>(r * d + i);
        const double want = (in[k] - mean) * inv * gamma[static_cast<std::size_t>(i)] +
                            beta[static_cast<std::size_t>(i)];
        ASSERT_NEAR(out[k], want, 1e-5 * (1.0 + std::fabs(want))) << "row " << r << " column " << i;
      }
    }
  };
  Tensor y = be_->empty({rows, d});
  be_->layer_norm(x, nullptr, g, b, 1e-5f, y);
  EXPECT_EQ(to_host(*be_, x), xv);
  expect_normalised(xv, y);

  auto sum = xv;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t i = 0; i < d; ++i)
      sum[static_cast<std::size_t>(r * d + i)] += add[static_cast<std::size_t>(i)];
  }
  be_->layer_norm(x, &a, g, b, 1e-5f, y);
  EXPECT_EQ(to_host(*be_, x), xv);
  expect_normalised(sum, y);

  const Tensor short_row = be_->upload(std::vector<float>(5, 0.0f), {5});
  EXPECT_IFW_ERROR(be_->layer_norm(x, &short_row, g, b, 1e-5f, y),
                   "layer_norm: a shift of 5 for rows of 24");
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuBackendTest, ::testing::Values(1, 2, 3),
                         [](const auto& param_info) {
                           return "threads" + std::to_string(param_info.param);
                         });

}  // namespace
}  // namespace ifw::test
