// Products through cuBLASLt: one plan per shape (descriptors and the algorithm the heuristic
// chose), made once and reused, so that a decoding step's dozens of small products cost little
// host time; the bias is added in the product's epilogue instead of by another kernel.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
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

class LtMatmul {
 public:
  LtMatmul(void* workspace, std::size_t workspace_bytes);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // False when cuBLASLt has no algorithm for this product (the caller uses cublasGemmEx).
  bool run(const LtProduct& p, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                         std::int64_t, int, int, bool, bool, int, int, int>;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  std::size_t workspace_bytes_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace ifw::backend::cuda
