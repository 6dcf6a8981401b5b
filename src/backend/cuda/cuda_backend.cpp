// The CUDA backend: weights and activations resident on one GPU in float32, float16 or bfloat16;
// products on cuBLAS (float32 accumulation; pure float32 in float32 mode, so that results stay
// within the CPU's tolerances), everything else in kernels.cu. Every operation is issued on one
// stream; the host waits only when it downloads.
#include "backend/cuda/cuda_backend.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/cuda/device_context.hpp"
#include "backend/cuda/environment.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/lt_matmul.hpp"
#include "backend/cuda/step_recording.hpp"

namespace ifw::backend {
namespace {

using cuda::check;
using cuda::cuda_data_type;
using cuda::DeviceArray;
using cuda::DeviceContext;
using i64 = std::int64_t;

int to_int(i64 v, const char* what) {
  if (v < 0 || v > INT_MAX) {
    throw Error(ErrorKind::kUnsupported, fmt::format("cuda: {} {} is too large", what, v));
  }
  return static_cast<int>(v);
}

// The message is formatted only when the check fails: operations are issued thousands of times
// a second, and a step graph's replay is mostly these checks.
template <typename... Args>
void require(bool ok, fmt::format_string<Args...> message, Args&&... args) {
  if (!ok) {
    throw Error(ErrorKind::kInvalidArgument,
                "cuda backend: " + fmt::format(message, std::forward<Args>(args)...));
  }
}

// Address of element (row, column) of a row-major matrix.
const void* at(const Tensor& t, i64 row, i64 ld, i64 column) {
  return static_cast<const std::byte*>(t.raw()) +
         static_cast<std::size_t>(row * ld + column) * dtype_size(t.dtype());
}
void* at_mut(const Tensor& t, i64 row, i64 ld, i64 column) {
  return static_cast<std::byte*>(t.raw()) +
         static_cast<std::size_t>(row * ld + column) * dtype_size(t.dtype());
}

// Capture slot of each head (-1: not captured; a head asked for twice fills its first slot, as
// on the CPU, and the other stays zero).
cuda::HeadSlots capture_slots(const std::vector<int>& capture_heads, int heads) {
  cuda::HeadSlots slots{};
  std::fill(std::begin(slots.slot), std::end(slots.slot), -1);
  for (std::size_t s = 0; s < capture_heads.size(); ++s) {
    const int h = capture_heads[s];
    require(h >= 0 && h < heads, "attention: no head {} to capture", h);
    if (slots.slot[h] < 0) slots.slot[h] = static_cast<int>(s);
  }
  return slots;
}

// Up to this many query rows, attention runs one query per thread block (decoding); longer
// queries (the encoder, prompts) go through cuBLAS.
constexpr int kRowAttentionMaxQueries = 8;
// IFW_CUDA_ATTENTION=gemm turns the flash-attention kernel off (cuBLAS products and a softmax
// kernel instead), for comparisons.
bool use_flash_attention() {
  static const bool use = [] {
    return cuda::switch_value("IFW_CUDA_ATTENTION", {"flash", "gemm"}) != "gemm";
  }();
  return use;
}

// Bytes of im2col columns a convolution builds at once.
constexpr i64 kConvolutionChunkBytes = i64{256} << 20;

// IFW_CUDA_PROFILE=1: every operation waits for the GPU before and after, so that the time to
// issue it (host) and to run it (device) are told apart; totals per operation are printed at the
// end of each section (Backend::profile_section) and when the backend goes. Slows everything
// down (a tiny kernel's device time includes a launch and a wait): for finding where the time
// goes, never for figures.
class OpProfile {
 public:
  explicit OpProfile(cudaStream_t stream) : stream_(stream) {
    enabled_ = cuda::switch_value("IFW_CUDA_PROFILE", {"0", "1"}) == "1";
  }
  ~OpProfile() { section("the rest"); }
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  bool enabled() const { return enabled_; }

  // Prints the totals since the last section (to standard error) and starts anew.
  void section(std::string_view title) {
    if (!enabled_ || totals_.empty()) return;
    std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
    totals_.clear();
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.device > b.second.device; });
    double all = 0.0;
    for (const auto& r : rows)
      all += r.second.device + r.second.host;
    std::string table = fmt::format(
        "cuda profile, {} (ms: issuing on the host, running on the GPU; us per call on the "
        "GPU):\n",
        title);
    for (const auto& [name, t] : rows) {
      table += fmt::format(
          "  {:<18} {:>9} calls {:>10.1f} host {:>10.1f} device {:>8.1f} us {:>5.1f}%\n", name,
          t.calls, t.host, t.device, 1000.0 * t.device / static_cast<double>(t.calls),
          100.0 * (t.host + t.device) / all);
    }
    std::fputs(table.c_str(), stderr);
  }

  template <typename F>
  void run(const char* name, F&& f) {
    if (!enabled_) {
      f();
      return;
    }
    using Clock = std::chrono::steady_clock;
    cudaStreamSynchronize(stream_);
    const auto t0 = Clock::now();
    f();
    const auto t1 = Clock::now();
    cudaStreamSynchronize(stream_);
    const auto t2 = Clock::now();
    Total& t = totals_[name];
    ++t.calls;
    t.host += std::chrono::duration<double, std::milli>(t1 - t0).count();
    t.device += std::chrono::duration<double, std::milli>(t2 - t1).count();
  }

 private:
  struct Total {
    long calls = 0;
    double host = 0.0, device = 0.0;
  };
  cudaStream_t stream_;
  bool enabled_ = false;
  std::map<std::string, Total> totals_;
};

// The kernels read the host's rules and write its choices as they are.
static_assert(sizeof(cuda::ChoiceRules) == sizeof(RowRules) &&
              offsetof(cuda::ChoiceRules, first) == offsetof(RowRules, first) &&
              offsetof(cuda::ChoiceRules, timestamp_vote) == offsetof(RowRules, timestamp_vote) &&
              offsetof(cuda::ChoiceRules, timestamp_begin) == offsetof(RowRules, timestamp_begin) &&
              offsetof(cuda::ChoiceRules, ranges) == offsetof(RowRules, ranges) &&
              offsetof(cuda::ChoiceRules, forbidden) == offsetof(RowRules, forbidden) &&
              std::is_trivially_copyable_v<RowRules>);
static_assert(sizeof(cuda::ChosenToken) == sizeof(TokenChoice) && sizeof(TokenChoice) == 16 &&
              offsetof(cuda::ChosenToken, token) == offsetof(TokenChoice, token) &&
              offsetof(cuda::ChosenToken, logprob) == offsetof(TokenChoice, logprob) &&
              std::is_trivially_copyable_v<TokenChoice>);

class CudaBackend final : public Backend {
 public:
  CudaBackend(int index, DType dtype)
      : context_(std::make_shared<DeviceContext>(index)),
        dtype_(dtype),
        profile_(context_->stream()) {
    // Opt-in: on an H100 the heuristic's first algorithms measured +1 % against cublasGemmEx with
    // a bias kernel; IFW_CUDA_LT=tune, which times each shape's algorithm among the heuristic's
    // first eight, was mixed on an H200 (some products faster, fc1 and fc2 slower:
    // docs/PERFORMANCE.md). Unset or 0, no cuBLASLt.
    if (const std::string_view v = cuda::switch_value("IFW_CUDA_LT", {"0", "1", "tune"});
        v == "1" || v == "tune") {
      lt_ = std::make_unique<cuda::LtMatmul>(*context_, v == "tune");
    }
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, index), "reading the GPU's properties");
    name_ = prop.name;
    // The kernels are built for compute 8.0 and newer (tensor-core instructions of Ampere);
    // older GPUs are refused here, so that `auto` falls back to the CPU.
    if (prop.major < 8) {
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("cuda:{}: {} (compute {}.{}) is older than the Ampere generation "
                              "(compute 8.0) this build supports",
                              index, name_, prop.major, prop.minor));
    }
    split_counters_ = empty({cuda::kSplitCounters}, DType::kF32);  // 4-byte counters
    check(cudaMemsetAsync(split_counters_.raw(), 0, split_counters_.bytes(), stream()),
          "clearing the split attention's counters");
  }

  Device device() const override { return Device::kCuda; }
  std::string description() const override {
    return fmt::format("cuda:{} ({}, {})", context_->index(), name_, dtype_name(dtype_));
  }
  int threads() const override { return 1; }
  DType weight_dtype() const override { return dtype_; }
  DType activation_dtype() const override { return dtype_; }

  Tensor empty(const Shape& shape, DType dtype = DType::kF32) override {
    context_->activate();
    const auto bytes = static_cast<std::size_t>(element_count(shape)) * dtype_size(dtype);
    std::shared_ptr<cuda::DeviceStorage> storage;
    profile_.run("allocate",
                 [&] { storage = std::make_shared<cuda::DeviceStorage>(context_, bytes); });
    return Tensor(std::move(storage), shape, dtype);
  }

  // A float32 tensor for one operation's intermediate results, dead once its kernels have run
  // (DeviceContext::allocate_scratch).
  Tensor scratch(const Shape& shape) {
    context_->activate();
    const auto bytes = static_cast<std::size_t>(element_count(shape)) * sizeof(float);
    return Tensor(
        std::make_shared<cuda::DeviceStorage>(context_, bytes, cuda::DeviceStorage::Scratch{}),
        shape, DType::kF32);
  }

  HostBuffer host_buffer(std::size_t count) override {
    if (count == 0 || !cuda::page_locked_uploads()) return HostBuffer(count);
    try {
      context_->activate();
      const cuda::PinnedBlock block = context_->take_pinned(count * sizeof(float));
      return HostBuffer(static_cast<float*>(block.data), count,
                        [context = context_, block] { context->give_pinned(block); });
    } catch (const Error& e) {
      // A failed device: plain memory, said where the work fails. Otherwise said once: a host
      // short of lockable memory would say it every batch.
      if (e.kind() == ErrorKind::kDeviceFailure) return HostBuffer(count);
      static std::once_flag said;
      std::call_once(said, [&] {
        spdlog::warn(
            "cuda:{}: no page-locked host memory for {} values ({}); plain memory "
            "instead (uploads are slower)",
            context_->index(), count, e.what());
      });
      return HostBuffer(count);
    }
  }

  Tensor upload(std::span<const float> values, const Shape& shape,
                DType dtype = DType::kF32) override {
    require(static_cast<i64>(values.size()) == element_count(shape),
            "upload: {} values for shape {}", values.size(), shape_string(shape));
    // A pageable copy cannot be part of a recorded step (nor does a step upload).
    if (context_->recording())
      throw Error(ErrorKind::kUnsupported, "cuda: an upload inside a recorded step");
    Tensor t = empty(shape, dtype);
    if (values.empty()) return t;
    const Tensor staging = dtype == DType::kF32 ? t : empty(shape, DType::kF32);
    check(cudaMemcpyAsync(staging.raw(), values.data(), values.size_bytes(), cudaMemcpyHostToDevice,
                          stream()),
          "copying to the GPU");
    // From page-locked memory the copy runs on after this returns (from pageable memory the
    // driver has staged the values by then): wait for it, so that the caller may reuse them.
    if (cuda::is_page_locked(values.data()))
      check(cudaStreamSynchronize(stream()), "copying to the GPU");
    if (dtype != DType::kF32)
      cuda::convert(staging.raw(), DType::kF32, t.raw(), dtype, t.numel(), stream());
    return t;
  }

  void download(const Tensor& t, std::span<float> out) override {
    require(static_cast<i64>(out.size()) == t.numel(), "download: {} values into a buffer of {}",
            t.numel(), out.size());
    context_->activate();
    if (out.empty()) return;
    Tensor source = t;
    if (t.dtype() != DType::kF32) {
      source = empty(t.shape(), DType::kF32);
      issue("convert", [&] {
        cuda::convert(t.raw(), t.dtype(), source.raw(), DType::kF32, t.numel(), stream());
      });
    }
    profile_.run("download",
                 [&] { context_->copy_to_host(source.raw(), out.data(), out.size_bytes()); });
  }

  void synchronize() override {
    context_->activate();
    check(cudaStreamSynchronize(stream()), "waiting for the GPU");
  }
  void release_cached_memory() override { context_->release_cached(); }
  void profile_section(std::string_view name) override { profile_.section(name); }
  std::unique_ptr<StepGraph> make_step_graph() override {
    // Profiling waits for the GPU around every operation, which a capture cannot.
    if (!cuda::step_graphs_enabled() || profile_.enabled()) return nullptr;
    return cuda::make_step_graph(context_);
  }

  void linear(const MatrixRef& x, const Tensor& w, const Tensor* bias, Activation act,
              const MatrixRef& y, std::int64_t rows, bool accumulate) override {
    context_->activate();
    require(x.tensor.dtype() == w.dtype(), "linear: {} input with {} weights",
            dtype_name(x.tensor.dtype()), dtype_name(w.dtype()));
    require(y.tensor.dtype() == DType::kF32 || y.tensor.dtype() == w.dtype(),
            "linear: {} output of {} weights", dtype_name(y.tensor.dtype()), dtype_name(w.dtype()));
    require(!accumulate || act == Activation::kNone, "linear: accumulate with an activation");
    const i64 n = w.dim(0), k = w.dim(1);
    if (rows == 0) return;
    if (bias != nullptr) require(bias->dtype() == DType::kF32, "linear: the bias is not float32");
    // cuBLASLt adds the bias in the product (with IFW_CUDA_LT); GELU (exact, erf) stays a kernel
    // of ours.
    if (lt_ != nullptr) {
      cuda::LtProduct p;
      p.a = at(x.tensor, 0, x.ld, x.column);
      p.lda = x.ld;
      p.b = w.raw();
      p.ldb = k;
      p.c = at_mut(y.tensor, 0, y.ld, y.column);
      p.ldc = y.ld;
      p.ab_type = w.dtype();
      p.c_type = y.tensor.dtype();
      p.m = rows;
      p.n = n;
      p.k = k;
      p.beta = accumulate ? 1.0f : 0.0f;
      p.bias = bias != nullptr ? static_cast<const float*>(bias->raw()) : nullptr;
      bool done = false;
      issue("linear", [&] { done = lt_->run(p, stream()); });
      if (done) {
        if (act == Activation::kGelu) {
          issue("gelu", [&] {
            cuda::bias_activation(p.c, y.tensor.dtype(), rows, n, y.ld, nullptr, act, stream());
          });
        }
        return;
      }
    }
    issue("linear", [&] {
      gemm_abt(at(x.tensor, 0, x.ld, x.column), x.tensor.dtype(), x.ld, w.raw(), w.dtype(), k,
               at_mut(y.tensor, 0, y.ld, y.column), y.tensor.dtype(), y.ld, rows, n, k, 1.0f,
               accumulate ? 1.0f : 0.0f);
    });
    issue("bias/gelu", [&] {
      cuda::bias_activation(at_mut(y.tensor, 0, y.ld, y.column), y.tensor.dtype(), rows, n, y.ld,
                            bias != nullptr ? static_cast<const float*>(bias->raw()) : nullptr, act,
                            stream());
    });
  }

  void layer_norm(const Tensor& x, const Tensor* shift, const Tensor& gamma, const Tensor& beta,
                  float eps, Tensor& y) override {
    context_->activate();
    require(x.dtype() == DType::kF32, "layer_norm: the input is not float32");
    const i64 d = x.shape().back();
    if (shift != nullptr) {
      require(shift->dtype() == DType::kF32 && shift->numel() == d,
              "layer_norm: a {} shift of {} for rows of {}", dtype_name(shift->dtype()),
              shift->numel(), d);
    }
    issue("layer_norm", [&] {
      cuda::layer_norm(static_cast<const float*>(x.raw()),
                       shift != nullptr ? static_cast<const float*>(shift->raw()) : nullptr,
                       y.raw(), y.dtype(), x.numel() / d, d, static_cast<const float*>(gamma.raw()),
                       static_cast<const float*>(beta.raw()), eps, stream());
    });
  }

  void add_rows(Tensor& x, const Tensor& rows, std::int64_t block) override {
    context_->activate();
    require(x.dtype() == DType::kF32 && rows.dtype() == DType::kF32,
            "add_rows: tensors are not float32");
    const i64 d = x.shape().back();
    issue("add_rows", [&] {
      cuda::add_rows(static_cast<float*>(x.raw()), static_cast<const float*>(rows.raw()),
                     x.numel() / d, d, block, stream());
    });
  }

  void transpose_last2(const Tensor& x, Tensor& y) override {
    context_->activate();
    issue("transpose", [&] {
      cuda::transpose_last2(x.raw(), x.dtype(), y.raw(), y.dtype(), x.dim(0), x.dim(1), x.dim(2),
                            stream());
    });
  }

  void conv1d_gelu(const Tensor& x, const Tensor& w, const Tensor& bias, int stride,
                   Tensor& y) override {
    context_->activate();
    require(x.dtype() == w.dtype(), "conv1d: input and weights differ in type");
    const i64 batch = x.dim(0), t_in = x.dim(1), c_in = x.dim(2);
    const i64 c_out = w.dim(0), t_out = y.dim(1);
    const i64 width = c_in * 3;
    const i64 per_item = t_out * width * static_cast<i64>(dtype_size(x.dtype()));
    const i64 chunk =
        std::clamp<i64>(kConvolutionChunkBytes / std::max<i64>(per_item, 1), 1, batch);
    const Tensor columns = empty({chunk * t_out, width}, x.dtype());
    issue("conv1d", [&] {
      for (i64 b0 = 0; b0 < batch; b0 += chunk) {
        const i64 n = std::min(chunk, batch - b0);
        cuda::im2col3(at(x, b0 * t_in, c_in, 0), columns.raw(), x.dtype(), n, t_in, c_in, t_out,
                      stride, stream());
        void* out = at_mut(y, b0 * t_out, c_out, 0);
        gemm_abt(columns.raw(), x.dtype(), width, w.raw(), w.dtype(), width, out, y.dtype(), c_out,
                 n * t_out, c_out, width, 1.0f, 0.0f);
        cuda::bias_activation(out, y.dtype(), n * t_out, c_out, c_out,
                              static_cast<const float*>(bias.raw()), Activation::kGelu, stream());
      }
    });
  }

  void attention(const AttentionArgs& a) override;

  void embed(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
             const Tensor& table, const Tensor& positions, Tensor& y) override {
    context_->activate();
    require(y.dtype() == DType::kF32 && positions.dtype() == DType::kF32,
            "embed: output or positions not float32");
    check_embedding_inputs(ids, pos, table.dim(0), positions.dim(0));
    const DeviceArray<std::int32_t> d_ids(*context_, ids), d_pos(*context_, pos);
    issue("embed", [&] {
      cuda::embed(d_ids.get(), d_pos.get(), static_cast<i64>(ids.size()), table.raw(),
                  table.dtype(), static_cast<const float*>(positions.raw()),
                  static_cast<float*>(y.raw()), table.dim(1), stream());
    });
  }

  void write_rows(const MatrixRef& src, int batch, int rows_per_item, Tensor& dst,
                  std::int64_t dst_block, std::span<const int> blocks,
                  std::span<const int> starts) override {
    context_->activate();
    require(src.tensor.dtype() == dst.dtype(), "write_rows: source and cache differ in type");
    const DeviceArray<int> d_blocks(*context_, blocks.first(static_cast<std::size_t>(batch)));
    const DeviceArray<int> d_starts(*context_, starts.first(static_cast<std::size_t>(batch)));
    issue("write_rows", [&] {
      cuda::write_rows(at(src.tensor, 0, src.ld, src.column), src.ld, dst.dtype(), batch,
                       rows_per_item, dst.raw(), dst.shape().back(), dst_block, d_blocks.get(),
                       d_starts.get(), stream());
    });
  }

  void gather_rows(const Tensor& x, std::span<const std::int64_t> index, Tensor& y) override {
    context_->activate();
    require(x.dtype() == y.dtype(), "gather_rows: source and destination differ in type");
    for (const i64 i : index) {
      require(i >= 0 && i < x.numel() / x.shape().back(), "gather_rows: no row {}", i);
    }
    const DeviceArray<i64> d_index(*context_, index);
    issue("gather_rows", [&] {
      cuda::gather_rows(x.raw(), x.dtype(), x.shape().back(), d_index.get(),
                        static_cast<i64>(index.size()), y.raw(), stream());
    });
  }

  void choose_tokens(const Tensor& logits, std::span<const std::uint8_t> flags,
                     std::span<const RowRules> rules, std::span<TokenChoice> out) override {
    context_->activate();
    require(logits.rank() == 2 && logits.dtype() == DType::kF32,
            "choose_tokens: logits are not a float32 matrix");
    const i64 rows = logits.dim(0), vocab = logits.dim(1);
    require(static_cast<i64>(rules.size()) == rows && out.size() == rules.size(),
            "choose_tokens: {} rows with {} rules and {} choices", rows, rules.size(), out.size());
    require(flags.empty() || static_cast<i64>(flags.size()) == vocab,
            "choose_tokens: {} flags for {} tokens", flags.size(), vocab);
    if (rows == 0) return;
    const DeviceArray<std::uint8_t> d_flags(*context_, flags);
    const DeviceArray<RowRules> d_rules(*context_, rules);
    // 16 bytes per row: a cuda::ChosenToken each.
    const Tensor chosen = empty({rows, 4}, DType::kF32);
    issue("choose tokens", [&] {
      cuda::choose_tokens(static_cast<const float*>(logits.raw()), rows, vocab, d_flags.get(),
                          reinterpret_cast<const cuda::ChoiceRules*>(d_rules.get()),
                          static_cast<cuda::ChosenToken*>(chosen.raw()), stream());
    });
    context_->copy_to_host(chosen.raw(), out.data(), out.size_bytes());
  }

 private:
  cudaStream_t stream() const { return context_->stream(); }

  // Issues (and profiles) the launches in `f`; a replayed step graph issues nothing: its
  // operations only stage their host values.
  template <typename F>
  void issue(const char* name, F&& f) {
    if (context_->replaying()) return;
    profile_.run(name, std::forward<F>(f));
  }
  // The operations a step graph may record: their launch parameters must not depend on host
  // values that change from step to step.
  void require_recordable(bool ok, const char* what) {
    if (!ok && context_->recording()) {
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("cuda: {} cannot be part of a recorded step", what));
    }
  }

  // Row-major c[m, n] (ldc) = alpha * a[m, k] (lda) . b[n, k]^T (ldb) + beta * c: cuBLAS is
  // column-major, so it computes c^T = b . a^T.
  void gemm_abt(const void* a, DType a_type, i64 lda, const void* b, DType b_type, i64 ldb, void* c,
                DType c_type, i64 ldc, i64 m, i64 n, i64 k, float alpha, float beta) {
    check(cublasGemmEx(context_->cublas(), CUBLAS_OP_T, CUBLAS_OP_N, to_int(n, "columns"),
                       to_int(m, "rows"), to_int(k, "inner size"), &alpha, b,
                       cuda_data_type(b_type), to_int(ldb, "stride"), a, cuda_data_type(a_type),
                       to_int(lda, "stride"), &beta, c, cuda_data_type(c_type),
                       to_int(ldc, "stride"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cuBLAS matrix product");
  }

  std::shared_ptr<DeviceContext> context_;
  DType dtype_;
  std::string name_;
  OpProfile profile_;
  // IFW_CUDA_LT=1 or tune; null: cublasGemmEx and a bias kernel for every product.
  std::unique_ptr<cuda::LtMatmul> lt_;
  // cuda::kSplitCounters counters for the split attention's fused tweak: zero between launches.
  Tensor split_counters_;
};

void CudaBackend::attention(const AttentionArgs& a) {
  context_->activate();
  const DType type = a.q.tensor.dtype();
  require(a.k.tensor.dtype() == type && a.v.tensor.dtype() == type && a.out.tensor.dtype() == type,
          "attention: q, k, v and out differ in type");
  require(a.heads >= 1 && a.heads <= cuda::kMaxHeads, "attention: {} heads (at most {})", a.heads,
          cuda::kMaxHeads);
  require(a.head_dim >= 1 && a.head_dim <= 128, "attention: head size {} (at most 128)",
          a.head_dim);
  require(a.key_lengths.size() == static_cast<std::size_t>(a.batch),
          "attention: one key length per batch row");
  require(a.item_index.empty() || a.item_index.size() == static_cast<std::size_t>(a.batch),
          "attention: one cache block per batch row");
  int max_key = 0;
  for (const int len : a.key_lengths) {
    require(len >= 1 && len <= a.key_block, "attention: key length {}", len);
    require(!a.causal || len >= a.query_len, "attention: {} causal queries over {} keys",
            a.query_len, len);
    max_key = std::max(max_key, len);
  }
  const i64 width = static_cast<i64>(a.heads) * a.head_dim;
  if (a.q_bias != nullptr) {
    require(a.q_bias->dtype() == DType::kF32 && a.q_bias->numel() == width,
            "attention: a {} query bias of {} for {} heads of {}", dtype_name(a.q_bias->dtype()),
            a.q_bias->numel(), a.heads, a.head_dim);
  }
  if (a.batch == 0) return;

  const cuda::HeadSlots slots = capture_slots(a.capture_heads, a.heads);
  const int n_capture = static_cast<int>(a.capture_heads.size());
  const i64 capture_count = static_cast<i64>(a.batch) * n_capture * a.query_len * a.key_block;
  require(n_capture == 0 || static_cast<i64>(a.capture.size()) == capture_count,
          "attention: capture buffer of the wrong size");

  cuda::FlashAttention flash;
  flash.q = at(a.q.tensor, 0, a.q.ld, a.q.column);
  flash.ld_q = a.q.ld;
  flash.q_bias = a.q_bias != nullptr ? static_cast<const float*>(a.q_bias->raw()) : nullptr;
  flash.k = at(a.k.tensor, 0, a.k.ld, a.k.column);
  flash.ld_k = a.k.ld;
  flash.v = at(a.v.tensor, 0, a.v.ld, a.v.column);
  flash.ld_v = a.v.ld;
  flash.out = at_mut(a.out.tensor, 0, a.out.ld, a.out.column);
  flash.ld_out = a.out.ld;
  flash.type = type;
  flash.batch = a.batch;
  flash.heads = a.heads;
  flash.head_dim = a.head_dim;
  flash.query_len = a.query_len;
  flash.key_len = max_key;
  flash.key_block = a.key_block;
  flash.scale = a.scale;
  const bool same_lengths =
      std::all_of(a.key_lengths.begin(), a.key_lengths.end(), [&](int l) { return l == max_key; });
  const bool flash_path = use_flash_attention() && a.query_len > kRowAttentionMaxQueries &&
                          !a.causal && n_capture == 0 && a.item_index.empty() && same_lengths &&
                          cuda::flash_attention_supported(flash);
  if (a.q_bias != nullptr && !flash_path && a.query_len > kRowAttentionMaxQueries) {
    // The products read the queries as they are: a biased copy first.
    const i64 rows = static_cast<i64>(a.batch) * a.query_len;
    const Tensor biased = empty({rows, width}, type);
    const std::size_t element = dtype_size(type);
    issue("attention query bias", [&] {
      check(cudaMemcpy2DAsync(biased.raw(), static_cast<std::size_t>(width) * element,
                              at(a.q.tensor, 0, a.q.ld, a.q.column),
                              static_cast<std::size_t>(a.q.ld) * element,
                              static_cast<std::size_t>(width) * element,
                              static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, stream()),
            "copying queries");
      cuda::bias_activation(biased.raw(), type, rows, width, width,
                            static_cast<const float*>(a.q_bias->raw()), Activation::kNone,
                            stream());
    });
    AttentionArgs with_bias = a;
    with_bias.q = {biased, 0, width};
    with_bias.q_bias = nullptr;
    attention(with_bias);
    return;
  }

  Tensor capture;
  if (n_capture > 0) {
    capture = empty({capture_count}, DType::kF32);
    // A head asked for twice fills one slot only; the other stays zero, as on the CPU.
    issue("attention capture", [&] {
      check(cudaMemsetAsync(capture.raw(), 0, capture.bytes(), stream()),
            "clearing attention weights");
    });
  }
  float* capture_data = n_capture > 0 ? static_cast<float*>(capture.raw()) : nullptr;

  if (flash_path) {
    require_recordable(false, "flash attention (its key length is a launch parameter)");
    issue("attention flash", [&] { cuda::flash_attention(flash, stream()); });
  } else if (a.query_len <= kRowAttentionMaxQueries) {
    const DeviceArray<int> lengths(*context_, std::span<const int>(a.key_lengths));
    const DeviceArray<int> index(*context_, std::span<const int>(a.item_index));
    cuda::RowAttention r;
    r.q = at(a.q.tensor, 0, a.q.ld, a.q.column);
    r.ld_q = a.q.ld;
    r.k = at(a.k.tensor, 0, a.k.ld, a.k.column);
    r.ld_k = a.k.ld;
    r.v = at(a.v.tensor, 0, a.v.ld, a.v.column);
    r.ld_v = a.v.ld;
    r.out = at_mut(a.out.tensor, 0, a.out.ld, a.out.column);
    r.ld_out = a.out.ld;
    r.type = type;
    r.batch = a.batch;
    r.heads = a.heads;
    r.head_dim = a.head_dim;
    r.query_len = a.query_len;
    r.key_block = a.key_block;
    r.key_lengths = lengths.get();
    r.item_index = a.item_index.empty() ? nullptr : index.get();
    r.causal = a.causal;
    r.scale = a.scale;
    r.q_bias = a.q_bias != nullptr ? static_cast<const float*>(a.q_bias->raw()) : nullptr;
    r.slots = slots;
    r.n_capture = n_capture;
    r.capture = capture_data;
    if (const int keys = cuda::split_attention_keys();
        keys > 0 && cuda::split_attention_supported(r) &&
        (!a.causal || cuda::split_self_attention())) {
      const int parts = cuda::split_attention_parts(r, keys);
      // Read by the combining kernel only: in a recorded step, every layer's parts share one
      // region (they were a tensor per call: +800 MiB of graphs at large-v3 batch 64).
      const Tensor partial = parts > 1 ? scratch({static_cast<i64>(r.batch) * r.query_len *
                                                  r.heads * parts * cuda::kSplitPartial})
                                       : Tensor();
      float* partial_data = parts > 1 ? static_cast<float*>(partial.raw()) : nullptr;
      issue("attention split", [&] {
        cuda::split_attention(r, keys, partial_data, static_cast<unsigned*>(split_counters_.raw()),
                              stream());
      });
    } else {
      issue("attention rows", [&] { cuda::row_attention(r, stream()); });
    }
  } else {
    // Per item: scores = scale * Q K^T for every head in one batched product, a masked softmax,
    // then P V into the output's columns.
    require_recordable(false, "attention by products (key lengths are launch parameters)");
    const i64 per_head = static_cast<i64>(a.query_len) * max_key;
    const Tensor scores = empty({a.heads * per_head}, DType::kF32);
    const Tensor probs = empty({a.heads * per_head}, type);
    const float zero = 0.0f, one = 1.0f;
    const int hd = a.head_dim;
    issue("attention gemm", [&] {
      for (int b = 0; b < a.batch; ++b) {
        const i64 block = a.item_index.empty() ? b : a.item_index[static_cast<std::size_t>(b)];
        const int len = a.key_lengths[static_cast<std::size_t>(b)];
        const i64 q_row = static_cast<i64>(b) * a.query_len, k_row = block * a.key_block;
        const i64 head_scores = static_cast<i64>(a.query_len) * len;
        check(cublasGemmStridedBatchedEx(
                  context_->cublas(), CUBLAS_OP_T, CUBLAS_OP_N, len, a.query_len, hd, &a.scale,
                  at(a.k.tensor, k_row, a.k.ld, a.k.column), cuda_data_type(type),
                  to_int(a.k.ld, "stride"), hd, at(a.q.tensor, q_row, a.q.ld, a.q.column),
                  cuda_data_type(type), to_int(a.q.ld, "stride"), hd, &zero, scores.raw(),
                  CUDA_R_32F, len, head_scores, a.heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cuBLAS attention scores");
        cuda::masked_softmax(
            static_cast<const float*>(scores.raw()), probs.raw(), type, a.heads, a.query_len, len,
            a.causal, slots,
            capture_data != nullptr
                ? capture_data + static_cast<i64>(b) * n_capture * a.query_len * a.key_block
                : nullptr,
            a.key_block, stream());
        check(cublasGemmStridedBatchedEx(
                  context_->cublas(), CUBLAS_OP_N, CUBLAS_OP_N, hd, a.query_len, len, &one,
                  at(a.v.tensor, k_row, a.v.ld, a.v.column), cuda_data_type(type),
                  to_int(a.v.ld, "stride"), hd, probs.raw(), cuda_data_type(type), len, head_scores,
                  &zero, at_mut(a.out.tensor, q_row, a.out.ld, a.out.column), cuda_data_type(type),
                  to_int(a.out.ld, "stride"), hd, a.heads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cuBLAS attention output");
      }
    });
  }
  if (n_capture > 0)
    context_->copy_to_host(capture.raw(), a.capture.data(), a.capture.size_bytes());
}

}  // namespace

std::unique_ptr<Backend> cuda::make_backend(int index, DType dtype) {
  return std::make_unique<CudaBackend>(index, dtype);
}

}  // namespace ifw::backend
