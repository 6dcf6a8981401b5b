#include "backend/cuda/lt_matmul.hpp"

#include <spdlog/spdlog.h>

#include "backend/cuda/device_context.hpp"

namespace ifw::backend::cuda {
namespace {

void lt_check(cublasStatus_t status, const char* what) {
  check(status, what);
}

// The largest power of two (at most 256) that divides the address: cuBLASLt's heuristic assumes
// 256-byte aligned matrices unless told otherwise, and column views are less aligned.
int alignment(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  int a = 256;
  while (a > 1 && address % static_cast<std::uintptr_t>(a) != 0)
    a /= 2;
  return a;
}

}  // namespace

struct LtMatmul::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;

  ~Plan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

LtMatmul::LtMatmul(void* workspace, std::size_t workspace_bytes)
    : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  lt_check(cublasLtCreate(&handle_), "starting cuBLASLt");
}

LtMatmul::~LtMatmul() {
  plans_.clear();
  if (const cublasStatus_t s = cublasLtDestroy(handle_); s != CUBLAS_STATUS_SUCCESS)
    spdlog::warn("stopping cuBLASLt: {}", cublasGetStatusString(s));
}

bool LtMatmul::run(const LtProduct& p, cudaStream_t stream) {
  const bool bias = p.bias != nullptr, accumulate = p.beta != 0.0f;
  const int align_a = alignment(p.b), align_b = alignment(p.a), align_c = alignment(p.c);
  const Key key{p.m,
                p.n,
                p.k,
                p.lda,
                p.ldb,
                p.ldc,
                static_cast<int>(p.ab_type),
                static_cast<int>(p.c_type),
                bias,
                accumulate,
                align_a,
                align_b,
                align_c};
  auto& slot = plans_[key];
  if (!slot) {
    auto plan = std::make_unique<Plan>();
    // Column-major view: c^T[n, m] = b[n, k] . a^T[k, m], i.e. op(B) = T on b stored [k, n].
    lt_check(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
             "cuBLASLt descriptor");
    const cublasOperation_t transpose = CUBLAS_OP_T, plain = CUBLAS_OP_N;
    lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                            sizeof transpose),
             "cuBLASLt transpose");
    lt_check(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &plain, sizeof plain),
        "cuBLASLt transpose");
    if (bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                              sizeof epilogue),
               "cuBLASLt epilogue");
      const cudaDataType bias_type = CUDA_R_32F;
      lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                              &bias_type, sizeof bias_type),
               "cuBLASLt bias type");
    }
    const cudaDataType ab = cuda_data_type(p.ab_type), c = cuda_data_type(p.c_type);
    lt_check(cublasLtMatrixLayoutCreate(&plan->a, ab, static_cast<std::uint64_t>(p.k),
                                        static_cast<std::uint64_t>(p.n), p.ldb),
             "cuBLASLt layout");
    lt_check(cublasLtMatrixLayoutCreate(&plan->b, ab, static_cast<std::uint64_t>(p.k),
                                        static_cast<std::uint64_t>(p.m), p.lda),
             "cuBLASLt layout");
    lt_check(cublasLtMatrixLayoutCreate(&plan->c, c, static_cast<std::uint64_t>(p.n),
                                        static_cast<std::uint64_t>(p.m), p.ldc),
             "cuBLASLt layout");
    cublasLtMatmulPreference_t preference = nullptr;
    lt_check(cublasLtMatmulPreferenceCreate(&preference), "cuBLASLt preference");
    const std::uint64_t bytes = workspace_bytes_;
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &bytes, sizeof bytes);
    const std::uint32_t aligns[] = {static_cast<std::uint32_t>(align_a),
                                    static_cast<std::uint32_t>(align_b),
                                    static_cast<std::uint32_t>(align_c)};
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                         &aligns[0], sizeof aligns[0]);
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                         &aligns[1], sizeof aligns[1]);
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                         &aligns[2], sizeof aligns[2]);
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                         &aligns[2], sizeof aligns[2]);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        handle_, plan->op, plan->a, plan->b, plan->c, plan->c, preference, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
      plan->algo = result.algo;
      plan->usable = true;
    } else {
      spdlog::debug("cuBLASLt has no algorithm for {}x{}x{} (bias {}): using cublasGemmEx", p.m,
                    p.n, p.k, bias);
    }
    slot = std::move(plan);
  }
  Plan& plan = *slot;
  if (!plan.usable) return false;
  if (bias) {
    lt_check(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias,
                                            sizeof p.bias),
             "cuBLASLt bias");
  }
  const float alpha = 1.0f;
  lt_check(cublasLtMatmul(handle_, plan.op, &alpha, p.b, plan.a, p.a, plan.b, &p.beta, p.c, plan.c,
                          p.c, plan.c, &plan.algo, workspace_, workspace_bytes_, stream),
           "cuBLASLt matrix product");
  return true;
}

}  // namespace ifw::backend::cuda
