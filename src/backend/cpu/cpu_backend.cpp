// The CPU backend: OpenBLAS (single-threaded) for matrix products, ifw's thread pool to split
// every operation across the cores, vectorised kernels for the element-wise work.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/cpu/attention.hpp"
#include "backend/cpu/blas.hpp"
#include "backend/cpu/kernels.hpp"
#include "util/cores.hpp"
#include "util/thread_pool.hpp"

namespace ifw::backend {
namespace {

// 64-byte aligned host memory (a cache line; what AVX-512 loads like best).
class HostStorage final : public Storage {
 public:
  explicit HostStorage(std::size_t bytes)
      : bytes_(bytes),
        data_(static_cast<std::byte*>(::operator new(std::max<std::size_t>(bytes, 1), kAlign))) {}
  ~HostStorage() override { ::operator delete(data_, kAlign); }
  HostStorage(const HostStorage&) = delete;
  HostStorage& operator=(const HostStorage&) = delete;
  void* data() override { return data_; }
  std::size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::kCpu; }

 private:
  static constexpr std::align_val_t kAlign{64};
  std::size_t bytes_;
  std::byte* data_;
};

void require_f32(DType dtype) {
  if (dtype != DType::kF32) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("the CPU backend computes in float32, not {}", dtype_name(dtype)));
  }
}

float* ptr(const MatrixRef& m) {
  return m.tensor.data<float>() + m.column;
}

// Up to this many rows, a product streams the weights once (see small_rows_times_transposed).
constexpr std::int64_t kSmallRows = 8;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads)
      : blas_(cpu::blas()), pool_(threads > 0 ? threads : util::usable_cores()) {}

  Device device() const override { return Device::kCpu; }
  std::string description() const override {
    return fmt::format("cpu ({} threads, OpenBLAS {} kernels)", pool_.size(), blas_.core);
  }
  int threads() const override { return pool_.size(); }

  Tensor empty(const Shape& shape, DType dtype = DType::kF32) override {
    require_f32(dtype);
    const auto n = element_count(shape);
    return Tensor(std::make_shared<HostStorage>(static_cast<std::size_t>(n) * sizeof(float)), shape,
                  DType::kF32);
  }

  Tensor upload(std::span<const float> values, const Shape& shape,
                DType dtype = DType::kF32) override {
    require_f32(dtype);
    if (static_cast<std::int64_t>(values.size()) != element_count(shape)) {
      throw Error(ErrorKind::kInvalidArgument, fmt::format("upload: {} values for shape {}",
                                                           values.size(), shape_string(shape)));
    }
    Tensor t = empty(shape);
    std::memcpy(t.raw(), values.data(), values.size_bytes());
    return t;
  }

  void download(const Tensor& t, std::span<float> out) override {
    if (static_cast<std::int64_t>(out.size()) != t.numel()) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("download: {} values into a buffer of {}", t.numel(), out.size()));
    }
    std::memcpy(out.data(), t.raw(), out.size_bytes());
  }

  void linear(const MatrixRef& x, const Tensor& w, const Tensor* bias, Activation act,
              const MatrixRef& y, std::int64_t rows, bool accumulate) override {
    const std::int64_t n = w.dim(0), k = w.dim(1);
    const float* a = ptr(x);
    const float* b = w.data<float>();
    float* c = ptr(y);
    const float* bias_data = bias != nullptr ? bias->data<float>() : nullptr;
    const float beta = accumulate ? 1.0f : 0.0f;
    const bool activate = act != Activation::kNone;
    const auto gemm = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
      blas_.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r1 - r0),
                  static_cast<int>(c1 - c0), static_cast<int>(k), 1.0f, a + r0 * x.ld,
                  static_cast<int>(x.ld), b + c0 * k, static_cast<int>(k), beta, c + r0 * y.ld + c0,
                  static_cast<int>(y.ld));
      if (bias_data != nullptr || activate) {
        cpu::add_bias(c + r0 * y.ld + c0, r1 - r0, c1 - c0, y.ld,
                      bias_data != nullptr ? bias_data + c0 : nullptr, act);
      }
    };
    // A decoder step (a few rows): stream the weights once, split over the outputs.
    if (rows <= kSmallRows) {
      pool_.parallel_for(n, 256, [&](std::int64_t c0, std::int64_t c1) {
        cpu::small_rows_times_transposed(a, x.ld, rows, b, k, c0, c1, c, y.ld, accumulate);
        if (bias_data != nullptr || activate) {
          cpu::add_bias(c + c0, rows, c1 - c0, y.ld,
                        bias_data != nullptr ? bias_data + c0 : nullptr, act);
        }
      });
      return;
    }
    // Many rows (encoder): split the rows. Few rows (a decoder step): split the outputs, so that
    // each core streams its own part of the weight matrix.
    if (rows >= 64 * pool_.size()) {
      pool_.parallel_for(rows, 32, [&](std::int64_t r0, std::int64_t r1) { gemm(r0, r1, 0, n); });
    } else {
      pool_.parallel_for(n, 128, [&](std::int64_t c0, std::int64_t c1) { gemm(0, rows, c0, c1); });
    }
  }

  void layer_norm(const Tensor& x, const Tensor* shift, const Tensor& gamma, const Tensor& beta,
                  float eps, Tensor& y) override {
    const std::int64_t d = x.shape().back();
    const std::int64_t rows = x.numel() / d;
    if (shift != nullptr && shift->numel() != d) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("layer_norm: a shift of {} for rows of {}", shift->numel(), d));
    }
    pool_.parallel_for(rows, 16, [&](std::int64_t r0, std::int64_t r1) {
      cpu::layer_norm(x.data<float>() + r0 * d, shift != nullptr ? shift->data<float>() : nullptr,
                      y.data<float>() + r0 * d, r1 - r0, d, gamma.data<float>(), beta.data<float>(),
                      eps);
    });
  }

  void add_rows(Tensor& x, const Tensor& rows, std::int64_t block) override {
    const std::int64_t d = x.shape().back();
    const std::int64_t total = x.numel() / d;
    pool_.parallel_for(total, 64, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        cpu::add(x.data<float>() + r * d, rows.data<float>() + (r % block) * d, d);
      }
    });
  }

  void transpose_last2(const Tensor& x, Tensor& y) override {
    const std::int64_t batch = x.dim(0), c = x.dim(1), t = x.dim(2);
    constexpr std::int64_t kTile = 32;
    pool_.parallel_for(batch * ((t + kTile - 1) / kTile), 1, [&](std::int64_t j0, std::int64_t j1) {
      for (std::int64_t j = j0; j < j1; ++j) {
        const std::int64_t b = j / ((t + kTile - 1) / kTile);
        const std::int64_t t0 = (j % ((t + kTile - 1) / kTile)) * kTile;
        const float* in = x.data<float>() + b * c * t;
        float* out = y.data<float>() + b * c * t;
        for (std::int64_t ci = 0; ci < c; ++ci) {
          for (std::int64_t ti = t0; ti < std::min(t, t0 + kTile); ++ti)
            out[ti * c + ci] = in[ci * t + ti];
        }
      }
    });
  }

  void conv1d_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, int stride,
                   Tensor& y) override {
    const std::int64_t batch = x.dim(0), t_in = x.dim(1), c_in = x.dim(2);
    const std::int64_t c_out = w.dim(0), t_out = y.dim(1);
    // im2col: row t holds x[t * stride + k - 1, c] at column c * 3 + k (the weight's layout).
    Tensor columns = empty({t_out, c_in * 3});
    const Tensor w2 = w.reshape({c_out, c_in * 3});
    for (std::int64_t b = 0; b < batch; ++b) {
      const float* in = x.data<float>() + b * t_in * c_in;
      float* col = columns.data<float>();
      pool_.parallel_for(t_out, 64, [&](std::int64_t t0, std::int64_t t1) {
        for (std::int64_t t = t0; t < t1; ++t) {
          float* row = col + t * c_in * 3;
          for (int k = 0; k < 3; ++k) {
            const std::int64_t src = t * stride + k - 1;
            for (std::int64_t ci = 0; ci < c_in; ++ci) {
              row[ci * 3 + k] = src >= 0 && src < t_in ? in[src * c_in + ci] : 0.0f;
            }
          }
        }
      });
      linear({columns, 0, c_in * 3}, w2, &bias, Activation::kGelu,
             {y.rows(b, 1).reshape({t_out, c_out}), 0, c_out}, t_out, false);
    }
  }

  void attention(const AttentionArgs& args) override { cpu::attention(args, pool_, blas_); }

  void embed(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
             const Tensor& table, const Tensor& positions, Tensor& y) override {
    const std::int64_t d = table.dim(1);
    check_embedding_inputs(ids, pos, table.dim(0), positions.dim(0));
    for (std::size_t i = 0; i < ids.size(); ++i) {
      float* out = y.data<float>() + static_cast<std::int64_t>(i) * d;
      std::memcpy(out, table.data<float>() + ids[i] * d,
                  static_cast<std::size_t>(d) * sizeof(float));
      cpu::add(out, positions.data<float>() + pos[i] * d, d);
    }
  }

  void write_rows(const MatrixRef& src, int batch, int rows_per_item, Tensor& dst,
                  std::int64_t dst_block, std::span<const int> blocks,
                  std::span<const int> starts) override {
    const std::int64_t width = dst.shape().back();
    for (int b = 0; b < batch; ++b) {
      const auto i = static_cast<std::size_t>(b);
      for (int t = 0; t < rows_per_item; ++t) {
        const float* from = ptr(src) + (static_cast<std::int64_t>(b) * rows_per_item + t) * src.ld;
        float* to = dst.data<float>() + (blocks[i] * dst_block + starts[i] + t) * width;
        std::memcpy(to, from, static_cast<std::size_t>(width) * sizeof(float));
      }
    }
  }

  void gather_rows(const Tensor& x, std::span<const std::int64_t> index, Tensor& y) override {
    const std::int64_t d = x.shape().back();
    for (std::size_t i = 0; i < index.size(); ++i) {
      std::memcpy(y.data<float>() + static_cast<std::int64_t>(i) * d,
                  x.data<float>() + index[i] * d, static_cast<std::size_t>(d) * sizeof(float));
    }
  }

 private:
  const cpu::Blas& blas_;
  util::ThreadPool pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace ifw::backend
