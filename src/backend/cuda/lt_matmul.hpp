// Products through cuBLASLt: one plan per shape (descriptors and an algorithm), made once and
// reused, so that a decoding step's dozens of small products cost little host time; the bias is
// added in the product's epilogue instead of by another kernel. The algorithm is the heuristic's
// first, or with `tune` the fastest of its first eight (a later one only where 5 % faster than
// an earlier), timed on the shape's first product (its operands: a product that accumulates is
// timed from a copy of its output, put back after).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "backend/element_type.hpp"

namespace ifw::backend::cuda {

// Row-major c[m, n] (ldc) = a[m, k] (lda) . b[n, k]^T (ldb) + beta * c (+ bias[n] when given).
struct LtProduct {
  const void* a = nullptr;
  std::int64_t lda = 0;
  const void* b = nullptr;
  std::int64_t ldb = 0;
  void* c = nullptr;
  std::int64_t ldc = 0;
  DType ab_type = DType::kF32;  // a and b
  DType c_type = DType::kF32;
  std::int64_t m = 0, n = 0, k = 0;
  float beta = 0.0f;
  const float* bias = nullptr;  // float32
};

class DeviceContext;

class LtMatmul {
 public:
  LtMatmul(DeviceContext& context, bool tune);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // False when cuBLASLt has no algorithm for this product (the caller uses cublasGemmEx).
  bool run(const LtProduct& p, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                         std::int64_t, int, int, bool, bool, int, int, int, int>;
  // The fastest of `results` for `p` (timed; waits for the GPU; an accumulating output is put
  // back as it was): the first when timing cannot start, none when every algorithm failed.
  std::optional<cublasLtMatmulAlgo_t> fastest(const Plan& plan, const LtProduct& p,
                                              const cublasLtMatmulHeuristicResult_t* results,
                                              int found, cudaStream_t stream);
  void multiply(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const LtProduct& p,
                cudaStream_t stream);

  DeviceContext& context_;
  bool tune_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  std::size_t workspace_bytes_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace ifw::backend::cuda
