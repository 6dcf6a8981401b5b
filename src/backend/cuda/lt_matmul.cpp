#include "backend/cuda/lt_matmul.hpp"

#include <limits>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/cuda/device_context.hpp"
#include "backend/dtype.hpp"

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

LtMatmul::LtMatmul(DeviceContext& context, bool tune)
    : context_(context),
      tune_(tune),
      workspace_(context.workspace()),
      workspace_bytes_(DeviceContext::kWorkspaceBytes) {
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
  const int align_bias = bias ? alignment(p.bias) : 0;
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
                align_c,
                align_bias};
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
      // The heuristic reads the bias's address for its alignment (each product sets its own).
      lt_check(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias,
                                              sizeof p.bias),
               "cuBLASLt bias");
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
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t results[kCandidates]{};
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c,
                                       preference, tune_ ? kCandidates : 1, results, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
      // Timing waits for the GPU, which a step being captured into a graph cannot.
      const std::optional<cublasLtMatmulAlgo_t> algo =
          found > 1 && !context_.recording() ? fastest(*plan, p, results, found, stream)
                                             : std::optional(results[0].algo);
      plan->usable = algo.has_value();  // none worked: cublasGemmEx
      if (algo) plan->algo = *algo;
    } else {
      spdlog::debug("cuBLASLt has no algorithm for {}x{}x{} (bias {}): using cublasGemmEx", p.m,
                    p.n, p.k, bias);
    }
    slot = std::move(plan);
  }
  Plan& plan = *slot;
  if (!plan.usable) return false;
  multiply(plan, plan.algo, p, stream);
  return true;
}

void LtMatmul::multiply(const Plan& plan, const cublasLtMatmulAlgo_t& algo, const LtProduct& p,
                        cudaStream_t stream) {
  if (p.bias != nullptr) {
    lt_check(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias,
                                            sizeof p.bias),
             "cuBLASLt bias");
  }
  const float alpha = 1.0f;
  lt_check(cublasLtMatmul(handle_, plan.op, &alpha, p.b, plan.a, p.a, plan.b, &p.beta, p.c, plan.c,
                          p.c, plan.c, &algo, workspace_, workspace_bytes_, stream),
           "cuBLASLt matrix product");
}

namespace {

// Events and a saved copy of an output, given back however tuning ends.
struct TuningResources {
  explicit TuningResources(DeviceContext& c) : context(c) {}
  ~TuningResources() {
    if (saved != nullptr) context.free(saved);
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  }
  TuningResources(const TuningResources&) = delete;
  TuningResources& operator=(const TuningResources&) = delete;
  DeviceContext& context;
  void* saved = nullptr;
  bool saved_valid = false;  // the copy finished being issued
  cudaEvent_t start = nullptr, stop = nullptr;
};

}  // namespace

std::optional<cublasLtMatmulAlgo_t> LtMatmul::fastest(
    const Plan& plan, const LtProduct& p, const cublasLtMatmulHeuristicResult_t* results, int found,
    cudaStream_t stream) {
  // A product that accumulates changes its output each run: the output is copied first and put
  // back before each timed run and at the end. Products that overwrite theirs run as they are.
  const bool accumulate = p.beta != 0.0f;
  const std::size_t element = dtype_size(p.c_type);
  const std::size_t width = static_cast<std::size_t>(p.n) * element;
  const std::size_t pitch = static_cast<std::size_t>(p.ldc) * element;
  const auto rows = static_cast<std::size_t>(p.m);
  TuningResources r(context_);
  const auto restore = [&] {
    check(cudaMemcpy2DAsync(p.c, pitch, r.saved, width, width, rows, cudaMemcpyDeviceToDevice,
                            stream),
          "cuBLASLt tuning: restoring the output");
  };
  std::optional<cublasLtMatmulAlgo_t> best;
  float best_ms = std::numeric_limits<float>::infinity();
  try {
    if (accumulate) {
      r.saved = context_.allocate(width * rows);
      check(cudaMemcpy2DAsync(r.saved, width, p.c, pitch, width, rows, cudaMemcpyDeviceToDevice,
                              stream),
            "cuBLASLt tuning: saving the output");
      r.saved_valid = true;
    }
    check(cudaEventCreate(&r.start), "cuBLASLt tuning: an event");
    check(cudaEventCreate(&r.stop), "cuBLASLt tuning: an event");
  } catch (const Error& e) {  // e.g. no memory for the copy: the heuristic's first, untimed
    if (e.kind() == ErrorKind::kDeviceFailure) throw;
    spdlog::debug("cuBLASLt: not tuning {}x{}x{}: {}", p.m, p.n, p.k, e.what());
    return results[0].algo;
  }
  for (int i = 0; i < found; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    float total = 0.0f;
    try {
      for (int run = 0; run < 3; ++run) {
        if (accumulate) restore();
        check(cudaEventRecord(r.start, stream), "cuBLASLt tuning: an event");
        multiply(plan, results[i].algo, p, stream);
        check(cudaEventRecord(r.stop, stream), "cuBLASLt tuning: an event");
        check(cudaEventSynchronize(r.stop), "cuBLASLt tuning: waiting");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, r.start, r.stop), "cuBLASLt tuning: timing");
        if (run > 0) total += ms;  // the first run warms up
      }
    } catch (const Error& e) {  // this algorithm refused the product: the others may not
      if (e.kind() == ErrorKind::kDeviceFailure) throw;
      const cudaError_t pending = cudaGetLastError();  // not to be blamed on the next launch
      spdlog::debug("cuBLASLt: algorithm {} of {}x{}x{} failed: {} ({})", i, p.m, p.n, p.k,
                    e.what(), cudaGetErrorString(pending));
      // A broken context (an illegal address) fails everything after: stop here.
      if (const cudaError_t state = cudaStreamQuery(stream);
          state != cudaSuccess && state != cudaErrorNotReady) {
        check(state, "cuBLASLt tuning: the GPU failed");
      }
      continue;
    }
    // In the heuristic's order, a later algorithm only where clearly faster: timing noise does
    // not then pick a different algorithm (and rounding) from run to run.
    if (!best || total < 0.95f * best_ms) {
      best_ms = total;
      best = results[i].algo;
    }
  }
  // The output as it was before tuning; if that cannot be ensured, the product must not go on.
  if (accumulate && r.saved_valid) restore();
  if (best) {
    spdlog::debug(
        "cuBLASLt: {}x{}x{} (accumulate {}, bias {}): the fastest of {} algorithms, {:.3f} ms", p.m,
        p.n, p.k, accumulate, p.bias != nullptr, found, best_ms / 2.0f);
  }
  return best;
}

}  // namespace ifw::backend::cuda
