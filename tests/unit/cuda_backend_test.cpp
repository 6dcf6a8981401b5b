// The CUDA backend's operations against the CPU backend's (which cpu_backend_test checks against
// double-precision references), in float32, float16 and bfloat16; device memory that returns to
// its level; out-of-memory errors that leave the backend usable. Skipped, saying so, where no GPU
// is at hand. Device selection (--device, --precision) is checked everywhere.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/cuda_module.hpp"
#include "backend/device_selection.hpp"
#include "backend/devices.hpp"
#include "decode/greedy.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "support/expect_error.hpp"
#include "support/scoped_env.hpp"
#include "support/test_backend.hpp"

namespace ifw::test {
namespace {

using backend::Activation;
using backend::DType;
using backend::MatrixRef;
using backend::Tensor;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

bool have_gpu() {
  return !backend::describe_devices().gpus.empty();
}

#define IFW_REQUIRE_GPU()                                                               \
  do {                                                                                  \
    if (!have_gpu()) {                                                                  \
      GTEST_SKIP() << "no GPU: " << backend::describe_devices().cuda_status             \
                   << " (the CUDA backend is checked on a machine with an NVIDIA GPU)"; \
    }                                                                                   \
  } while (0)

TEST(DeviceSelection, ParsesEveryForm) {
  EXPECT_TRUE(backend::parse_device("auto").automatic);
  EXPECT_EQ(backend::parse_device("cpu").kind, backend::Device::kCpu);
  EXPECT_EQ(backend::parse_device("cuda").kind, backend::Device::kCuda);
  EXPECT_EQ(backend::parse_device("cuda:3").index, 3);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "CPU"}) {
    try {
      backend::parse_device(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(backend::parse_precision("auto"));
  EXPECT_EQ(backend::parse_precision("fp16"), DType::kF16);
  EXPECT_EQ(backend::parse_precision("bfloat16"), DType::kBF16);
  EXPECT_THROW(backend::parse_precision("fp8"), Error);
}

TEST(DeviceSelection, AutoRunsOnTheGpuWhenThereIsOneElseTheCpu) {
  const auto be = backend::make_backend(backend::parse_device("auto"), std::nullopt, 1);
  EXPECT_EQ(be->device(), have_gpu() ? backend::Device::kCuda : backend::Device::kCpu)
      << be->description();
}

TEST(DeviceSelection, AnExplicitGpuThatIsNotThereIsAnError) {
  if (have_gpu()) GTEST_SKIP() << "this machine has a GPU";
  try {
    backend::make_backend(backend::parse_device("cuda:0"), std::nullopt, 1);
    ADD_FAILURE() << "cuda:0 accepted without a GPU";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(backend::make_backend(backend::parse_device("cpu"), DType::kF16, 1), Error);
}

// The backend is a module loaded when a GPU is used; a build with the toolkit finds it (in the
// build tree here) and it loads, with or without a GPU: every symbol it takes from the program is
// there, and the program exports it.
TEST(CudaModule, LoadsWhereTheToolkitIsInstalled) {
#ifdef IFW_HAVE_CUDA
  const backend::CudaModuleStatus status = backend::load_cuda_module();
  EXPECT_TRUE(status.loaded) << status.error;
  EXPECT_TRUE(status.path.ends_with("/libifw-cuda.so")) << status.path;
  EXPECT_EQ(status.error, "");
  EXPECT_EQ(backend::cuda_step_graph_launches(), 0u);
#else
  const backend::CudaModuleStatus status = backend::load_cuda_module();
  EXPECT_FALSE(status.loaded);
  EXPECT_NE(status.error.find("no CUDA backend"), std::string::npos) << status.error;
#endif
}

// Asked for directly (the tests' IFW_TEST_DEVICE=cuda, a caller that skips --device's checks),
// a GPU that is not there is an error that says why, in the driver's words.
TEST(CudaModule, ABackendWithoutAGpuSaysWhy) {
  if (have_gpu()) GTEST_SKIP() << "this machine has a GPU";
  const std::string why = backend::describe_devices().cuda_status;
  ASSERT_FALSE(why.empty());
  EXPECT_IFW_ERROR(backend::make_cuda_backend(0, DType::kF16), why);
}

// Values that the element type holds exactly, so that both backends start from the same inputs.
std::vector<float> random_values(std::size_t n, unsigned seed, DType type, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    x = dist(rng);
    if (type == DType::kF16) x = backend::half_to_float(backend::float_to_half(x));
    if (type == DType::kBF16) x = backend::bfloat16_to_float(backend::float_to_bfloat16(x));
  }
  return v;
}

double relative_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    diff += (static_cast<double>(actual[i]) - expected[i]) * (actual[i] - expected[i]);
    norm += static_cast<double>(expected[i]) * expected[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
}

// Where a failed comparison of rows of `cols` values goes wrong, so that a kernel that fails on
// its first run on a GPU says more than its error: the rows whose own relative error exceeds
// `tolerance` (how many, the first few), and in the worst row the columns off by more than a
// tenth of its largest value (their positions within 8-wide fragments and 64-wide heads show
// layout mistakes), with the values. A row with NaN (an output left unwritten) counts as worst.
std::string describe_mismatch(const std::vector<float>& actual, const std::vector<float>& expected,
                              std::int64_t cols, double tolerance) {
  if (actual.size() != expected.size()) {
    return fmt::format("{} values, not {}", actual.size(), expected.size());
  }
  if (cols <= 0 || expected.size() % static_cast<std::size_t>(cols) != 0) return {};
  const std::size_t width = static_cast<std::size_t>(cols), rows = expected.size() / width;
  std::vector<std::size_t> bad;
  std::size_t worst = 0;
  double worst_error = -1.0;
  for (std::size_t r = 0; r < rows; ++r) {
    const auto row = [&](const std::vector<float>& v) {
      return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(r * width),
                                v.begin() + static_cast<std::ptrdiff_t>((r + 1) * width));
    };
    double e = relative_error(row(actual), row(expected));
    if (std::isnan(e)) e = std::numeric_limits<double>::infinity();  // a NaN row counts as worst
    if (e > tolerance) bad.push_back(r);
    if (e > worst_error) {
      worst_error = e;
      worst = r;
    }
  }
  std::string out = fmt::format("{} of {} rows off (", bad.size(), rows);
  for (std::size_t i = 0; i < bad.size() && i < 8; ++i)
    out += fmt::format("{} ", bad[i]);
  out += fmt::format("...); worst row {} (relative error {:.3g}):", worst, worst_error);
  float largest = 0.0f;
  for (std::size_t c = 0; c < width; ++c)
    largest = std::max(largest, std::abs(expected[worst * width + c]));
  int shown = 0;
  for (std::size_t c = 0; c < width && shown < 12; ++c) {
    const float e = expected[worst * width + c], a = actual[worst * width + c];
    if (!(std::abs(a - e) <= 0.1f * largest)) {
      out += fmt::format(" [col {} (head col {}, fragment col {}): {} not {}]", c, c % 64, c % 8, a,
                         e);
      ++shown;
    }
  }
  return out;
}

// One operation on both backends: the GPU's tensors of `type`, the CPU's float32.
class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    IFW_REQUIRE_GPU();
    gpu_ = backend::make_cuda_backend(0, GetParam());
    cpu_ = backend::make_cpu_backend(2);
  }
  DType type() const { return GetParam(); }
  double tolerance() const {
    return type() == DType::kF32 ? 2e-6 : type() == DType::kF16 ? 3e-3 : 2e-2;
  }
  // The same values on both backends: on the GPU as `dtype`.
  std::pair<Tensor, Tensor> both(const std::vector<float>& values, const backend::Shape& shape,
                                 DType dtype) {
    return {cpu_->upload(values, shape), gpu_->upload(values, shape, dtype)};
  }
  void expect_close(const Tensor& cpu, const Tensor& gpu, const std::string& what,
                    double scale = 1.0) {
    const auto expected = to_host(*cpu_, cpu), actual = to_host(*gpu_, gpu);
    const double rel = relative_error(actual, expected);
    EXPECT_LE(rel, tolerance() * scale)
        << what << ": "
        << describe_mismatch(actual, expected, cpu.shape().size() == 2 ? cpu.dim(1) : 0,
                             tolerance() * scale);
    std::cout << "[ " << what << " ] relative error " << rel << "\n";
  }

  void check_attention_kernels(const std::vector<std::pair<const char*, const char*>>& kernels);

  std::unique_ptr<backend::Backend> gpu_, cpu_;
};

TEST_P(CudaOps, LinearWithBiasGeluAccumulateAndColumnViews) {
  const std::int64_t m = 37, k = 96, n = 80;
  const auto x = random_values(m * 2 * k, 1, type());
  const auto w = random_values(n * k, 2, type(), 0.2f);
  const auto b = random_values(n, 3, DType::kF32);
  auto [xc, xg] = both(x, {m, 2 * k}, type());
  auto [wc, wg] = both(w, {n, k}, type());
  auto [bc, bg] = both(b, {n}, DType::kF32);
  // Input: the right half of a wider matrix; output: columns [n, 2n) of a [m, 3n] matrix.
  Tensor yc = cpu_->empty({m, 3 * n}), yg = gpu_->empty({m, 3 * n}, type());
  cpu_->linear({xc, k, 2 * k}, wc, &bc, Activation::kGelu, {yc, n, 3 * n}, m, false);
  gpu_->linear({xg, k, 2 * k}, wg, &bg, Activation::kGelu, {yg, n, 3 * n}, m, false);
  const auto yc_host = to_host(*cpu_, yc), yg_host = to_host(*gpu_, yg);
  std::vector<float> a, e;
  for (std::int64_t r = 0; r < m; ++r) {
    for (std::int64_t c = n; c < 2 * n; ++c) {
      a.push_back(yg_host[static_cast<std::size_t>(r * 3 * n + c)]);
      e.push_back(yc_host[static_cast<std::size_t>(r * 3 * n + c)]);
    }
  }
  EXPECT_LE(relative_error(a, e), tolerance()) << "linear + bias + gelu";

  // Accumulating into a float32 residual, as the model's output projections do.
  const auto residual = random_values(m * n, 4, DType::kF32);
  auto [rc, rg] = both(residual, {m, n}, DType::kF32);
  cpu_->linear({xc, 0, 2 * k}, wc, &bc, Activation::kNone, {rc, 0, n}, m, true);
  gpu_->linear({xg, 0, 2 * k}, wg, &bg, Activation::kNone, {rg, 0, n}, m, true);
  expect_close(rc, rg, "linear accumulate");
}

TEST_P(CudaOps, LayerNormAddRowsTransposeAndConvolution) {
  const std::int64_t rows = 50, d = 160;
  const auto x = random_values(rows * d, 5, DType::kF32, 3.0f);
  const auto g = random_values(d, 6, DType::kF32);
  const auto b = random_values(d, 7, DType::kF32);
  auto [xc, xg] = both(x, {rows, d}, DType::kF32);
  auto [gc, gg] = both(g, {d}, DType::kF32);
  auto [bc, bg] = both(b, {d}, DType::kF32);
  Tensor yc = cpu_->empty({rows, d}), yg = gpu_->empty({rows, d}, type());
  cpu_->layer_norm(xc, nullptr, gc, bc, 1e-5f, yc);
  gpu_->layer_norm(xg, nullptr, gg, bg, 1e-5f, yg);
  expect_close(yc, yg, "layer norm");
  // Shifted by a row (the residual stream's biases, summed); x stays as it is.
  const auto add = random_values(d, 10, DType::kF32, 2.0f);
  auto [ac, ag] = both(add, {d}, DType::kF32);
  cpu_->layer_norm(xc, &ac, gc, bc, 1e-5f, yc);
  gpu_->layer_norm(xg, &ag, gg, bg, 1e-5f, yg);
  EXPECT_EQ(to_host(*gpu_, xg), x) << "x after a shifted layer norm";
  expect_close(yc, yg, "shifted layer norm");
  const Tensor short_row = gpu_->upload(std::vector<float>(5, 0.0f), {5});
  EXPECT_IFW_ERROR(gpu_->layer_norm(xg, &short_row, gg, bg, 1e-5f, yg),
                   "layer_norm: a float32 shift of 5 for rows of 160");

  const auto pos = random_values(10 * d, 8, DType::kF32);
  auto [pc, pg] = both(pos, {10, d}, DType::kF32);
  cpu_->add_rows(xc, pc, 10);
  gpu_->add_rows(xg, pg, 10);
  expect_close(xc, xg, "add rows");

  const std::int64_t batch = 2, c = 24, t = 70;
  const auto mel = random_values(batch * c * t, 9, DType::kF32);
  auto [mc, mg] = both(mel, {batch, c, t}, DType::kF32);
  Tensor tc = cpu_->empty({batch, t, c}), tg = gpu_->empty({batch, t, c}, type());
  cpu_->transpose_last2(mc, tc);
  gpu_->transpose_last2(mg, tg);
  expect_close(tc, tg, "transpose");

  const std::int64_t c_out = 40;
  const auto w = random_values(c_out * c * 3, 10, type(), 0.3f);
  const auto cb = random_values(c_out, 11, DType::kF32);
  auto [wc, wg] = both(w, {c_out, c, 3}, type());
  auto [cbc, cbg] = both(cb, {c_out}, DType::kF32);
  // Inputs of the GPU's activation type hold exactly what the CPU's float32 copy holds.
  const auto tc_host = to_host(*gpu_, tg);
  const Tensor tc_same = cpu_->upload(tc_host, {batch, t, c});
  for (const int stride : {1, 2}) {
    const std::int64_t t_out = stride == 1 ? t : t / 2;
    Tensor oc = cpu_->empty({batch, t_out, c_out}), og = gpu_->empty({batch, t_out, c_out}, type());
    cpu_->conv1d_gelu(tc_same, wc, cbc, stride, oc);
    gpu_->conv1d_gelu(tg, wg, cbg, stride, og);
    expect_close(oc, og, "conv1d stride " + std::to_string(stride));
  }
}

TEST_P(CudaOps, EmbedWriteRowsAndGatherRows) {
  const std::int64_t vocab = 300, d = 64, positions = 20;
  const auto table = random_values(vocab * d, 12, type());
  const auto pos_table = random_values(positions * d, 13, DType::kF32);
  auto [tc, tg] = both(table, {vocab, d}, type());
  auto [pc, pg] = both(pos_table, {positions, d}, DType::kF32);
  const std::vector<std::int32_t> ids = {5, 299, 0, 17}, pos = {0, 19, 3, 3};
  Tensor yc = cpu_->empty({4, d}), yg = gpu_->empty({4, d});
  cpu_->embed(ids, pos, tc, pc, yc);
  gpu_->embed(ids, pos, tg, pg, yg);
  expect_close(yc, yg, "embed", 0.0 + 1e-6 / tolerance());
  EXPECT_THROW(
      gpu_->embed(std::vector<std::int32_t>{300}, std::vector<std::int32_t>{0}, tg, pg, yg), Error);

  // Two items' new rows into cache blocks 2 and 0 at different starts.
  const auto src = random_values(2 * 3 * 2 * d, 14, type());
  auto [sc, sg] = both(src, {6, 2 * d}, type());
  Tensor cc = cpu_->upload(std::vector<float>(3 * 8 * d, 0.0f), {3, 8, d});
  Tensor cg = gpu_->upload(std::vector<float>(3 * 8 * d, 0.0f), {3, 8, d}, type());
  const std::vector<int> blocks = {2, 0}, starts = {1, 5};
  cpu_->write_rows({sc, d, 2 * d}, 2, 3, cc, 8, blocks, starts);
  gpu_->write_rows({sg, d, 2 * d}, 2, 3, cg, 8, blocks, starts);
  EXPECT_EQ(to_host(*cpu_, cc), to_host(*gpu_, cg)) << "write rows";

  const std::vector<std::int64_t> index = {2, 0, 2, 5};
  Tensor gc = cpu_->empty({4, 2 * d}), gg = gpu_->empty({4, 2 * d}, type());
  cpu_->gather_rows(sc, index, gc);
  gpu_->gather_rows(sg, index, gg);
  EXPECT_EQ(to_host(*cpu_, gc), to_host(*gpu_, gg)) << "gather rows";
}

// Uploads from the backend's host memory (page-locked, from a pool) give the values as uploads
// from plain memory do, in float32 and converted, and the upload is finished when it returns:
// the buffer may be overwritten at once. Buffers come back from the pool after they went, after
// a cache release, and as plain memory with IFW_CUDA_PINNED=0. (That the memory is page-locked
// is the backend's to know; the pool's reuse shows it is lent.)
TEST_P(CudaOps, UploadsFromTheBackendsHostMemory) {
  const std::size_t n = 3 * 1000 * 1000 + 7;  // 12 MB: a copy that takes a while
  const auto values = random_values(n, 50, type());
  const auto check = [&](const char* what) {
    backend::HostBuffer buffer = gpu_->host_buffer(n);
    ASSERT_EQ(buffer.values().size(), n) << what;
    std::copy(values.begin(), values.end(), buffer.values().begin());
    const Tensor f32 = gpu_->upload(buffer.values(), {static_cast<std::int64_t>(n)});
    std::fill(buffer.values().begin(), buffer.values().end(), kNaN);
    std::copy(values.begin(), values.end(), buffer.values().begin());
    const Tensor converted = gpu_->upload(buffer.values(), {static_cast<std::int64_t>(n)}, type());
    std::fill(buffer.values().begin(), buffer.values().end(), kNaN);
    EXPECT_EQ(to_host(*gpu_, f32), values) << what << ", float32";
    EXPECT_EQ(to_host(*gpu_, converted), values) << what << ", " << backend::dtype_name(type());
  };
  check("first buffer");
  check("the pool's buffer again");
  {
    // Lent from the pool: the same block again once given back, a second one while it is held.
    const float* first = gpu_->host_buffer(n).values().data();
    const backend::HostBuffer held = gpu_->host_buffer(n);
    EXPECT_EQ(held.values().data(), first) << "the pool's block was not lent again";
    EXPECT_NE(gpu_->host_buffer(n).values().data(), first);
    check("a second buffer");
  }
  gpu_->release_cached_memory();
  check("after a release");
  const ScopedEnv plain("IFW_CUDA_PINNED", "0");
  check("plain memory");
}

// Attention the three ways the model calls it: encoder self-attention (long queries: by each
// version of the flash kernel), a prompt with causal masking and captured heads, and single
// decoding steps over cache blocks (by both decoding kernels: keys split into parts of 128 or
// 256, with each of the split kernel's tweaks, and a row per block), against the CPU's, with each
// of `kernels` (an environment variable and its value) chosen in turn.
void CudaOps::check_attention_kernels(
    const std::vector<std::pair<const char*, const char*>>& kernels) {
  const int heads = 3, hd = 64;
  const std::int64_t d = heads * hd;
  struct Case {
    std::string name;
    int batch, query_len, key_block;
    std::vector<int> key_lengths, item_index;
    bool causal;
    std::vector<int> capture_heads;
    float scale = 0.125f;  // 1: peaked weights, maxima that move from tile to tile
    bool q_bias = false;   // a query bias: added by the flash and decoding kernels, else to a copy
  };
  const std::vector<Case> cases = {
      {"encoder", 2, 150, 150, {150, 150}, {}, false, {}},
      {"encoder, query bias", 2, 150, 150, {150, 150}, {}, false, {}, 0.125f, true},
      // Whole key tiles only (no tile masked), queries past a block of 128.
      {"encoder, whole tiles", 1, 200, 128, {128}, {}, false, {}},
      // One tile, both the first (no maximum yet) and masked.
      {"encoder, one tile", 1, 150, 40, {40}, {}, false, {}, 1.0f},
      // One key in the last tile; a block with a single query row.
      {"encoder, one key in the last tile", 1, 129, 65, {65}, {}, false, {}, 1.0f},
      // Items further apart than their keys (a block of 160 rows, 150 keys each).
      {"encoder, block past the keys", 2, 150, 160, {150, 150}, {}, false, {}, 0.125f, true},
      // One key past a tile of 128 (version 6's tiles), 2 query blocks of 128.
      {"encoder, one key past 128", 1, 250, 129, {129}, {}, false, {}, 1.0f, true},
      // Whole query blocks only.
      {"encoder, whole blocks", 1, 256, 64, {64}, {}, false, {}},
      // The model's length: 23 whole tiles and 28 keys, peaked weights.
      {"encoder, whisper length", 1, 1500, 1500, {1500}, {}, false, {}, 1.0f},
      {"encoder, whisper length, query bias", 1, 1500, 1500, {1500}, {}, false, {}, 1.0f, true},
      {"prompt", 2, 12, 40, {12, 20}, {1, 0}, true, {2, 0}},
      {"prompt, query bias", 2, 12, 40, {12, 20}, {1, 0}, true, {2, 0}, 0.125f, true},
      {"step", 3, 1, 40, {7, 40, 1}, {2, 0, 1}, true, {1}},
      {"step, query bias", 3, 1, 40, {7, 40, 1}, {2, 0, 1}, true, {1}, 0.125f, true},
      {"cross step", 2, 2, 150, {150, 150}, {1, 0}, false, {0, 2}},
      {"cross step, query bias", 2, 2, 150, {150, 150}, {1, 0}, false, {0, 2}, 0.125f, true},
      // Keys over several parts of the split kernel, some parts past a length.
      {"long cross step", 3, 1, 1500, {1500, 1500, 1500}, {}, false, {1}},
      {"long cross step, query bias", 3, 1, 1500, {1500, 1500, 1500}, {}, false, {1}, 0.125f, true},
      {"steps past parts", 2, 3, 300, {130, 290}, {1, 0}, true, {2}},
      {"steps past parts, query bias", 2, 3, 300, {130, 290}, {1, 0}, true, {2}, 0.125f, true},
  };
  for (const Case& c : cases) {
    const std::int64_t q_rows = static_cast<std::int64_t>(c.batch) * c.query_len;
    const std::int64_t blocks = 3;
    const auto q = random_values(q_rows * 3 * d, 20, type());
    const auto kv = random_values(blocks * c.key_block * 2 * d, 21, type());
    auto [qc, qg] = both(q, {q_rows, 3 * d}, type());
    auto [kc, kg] = both(kv, {blocks * c.key_block, 2 * d}, type());
    const auto bias = random_values(d, 22, DType::kF32, 0.5f);
    auto [bc, bg] = both(bias, {d}, DType::kF32);
    Tensor oc = cpu_->empty({q_rows, d}), og = gpu_->empty({q_rows, d}, type());
    const std::size_t cap_size = static_cast<std::size_t>(c.batch) * c.capture_heads.size() *
                                 static_cast<std::size_t>(c.query_len * c.key_block);
    std::vector<float> cap_c(cap_size), cap_g(cap_size, -1.0f);
    const auto run = [&](backend::Backend& be, const Tensor& qt, const Tensor& kt, const Tensor& bt,
                         Tensor& out, std::vector<float>& cap) {
      backend::AttentionArgs a;
      a.q = {qt, 0, 3 * d};
      a.k = {kt, 0, 2 * d};
      a.v = {kt, d, 2 * d};
      a.out = {out, 0, d};
      a.batch = c.batch;
      a.heads = heads;
      a.head_dim = hd;
      a.query_len = c.query_len;
      a.key_block = c.key_block;
      a.key_lengths = c.key_lengths;
      a.item_index = c.item_index;
      a.causal = c.causal;
      a.scale = c.scale;
      if (c.q_bias) a.q_bias = &bt;
      a.capture_heads = c.capture_heads;
      if (!c.capture_heads.empty()) a.capture = cap;
      be.attention(a);
    };
    run(*cpu_, qc, kc, bc, oc, cap_c);
    for (const auto& [variable, kernel] : kernels) {
      const ScopedEnv choice(variable, kernel);
      // Outputs start as NaN, so that a kernel that leaves any unwritten fails.
      std::fill(cap_g.begin(), cap_g.end(), -1.0f);
      og = gpu_->upload(std::vector<float>(static_cast<std::size_t>(q_rows * d), kNaN), {q_rows, d},
                        type());
      run(*gpu_, qg, kg, bg, og, cap_g);
      const std::string name = fmt::format("attention {} ({}={})", c.name, variable, kernel);
      expect_close(oc, og, name);
      if (!c.capture_heads.empty()) {
        EXPECT_LE(relative_error(cap_g, cap_c), tolerance()) << "captured weights of " << name;
      }
    }
  }
}

TEST_P(CudaOps, AttentionLikeTheModelCallsIt) {
  check_attention_kernels({{"IFW_CUDA_DECODE_ATTENTION", "split"},
                           {"IFW_CUDA_DECODE_ATTENTION", "split256"},
                           {"IFW_CUDA_DECODE_ATTENTION", "rows"},
                           {"IFW_CUDA_DECODE_ATTENTION", "mixed"},
                           {"IFW_CUDA_SPLIT", "none"},
                           {"IFW_CUDA_SPLIT", "heads"},
                           {"IFW_CUDA_SPLIT", "early"},
                           {"IFW_CUDA_SPLIT", "heads,early"},
                           {"IFW_CUDA_SPLIT", "fused"},
                           {"IFW_CUDA_SPLIT", "heads,early,fused"},
                           {"IFW_CUDA_FLASH", "1"},
                           {"IFW_CUDA_FLASH", "2"}});
}

// The wgmma flash kernels (sm_90a: on other devices version 2 runs in their place, with a
// warning). A test of their own, so that gpu-check.sh runs them in a process of their own under a
// time limit: a kernel that faults or hangs on its first run on a GPU takes only them down.
TEST_P(CudaOps, HopperFlashAttentionLikeTheModelCallsIt) {
  check_attention_kernels(
      {{"IFW_CUDA_FLASH", "6"}, {"IFW_CUDA_FLASH", "7"}, {"IFW_CUDA_FLASH", "8"}});
}

// The split kernel's tweaks change the order of blocks and loads and who combines the parts, not
// the arithmetic: at a grid of thousands of blocks (where a stale read of another block's parts
// would show), outputs and captured weights are the default's bit for bit, launch after launch
// (the fused tweak's counters must be left at zero each time).
TEST_P(CudaOps, SplitTweaksGiveTheDefaultsOutputsBitForBit) {
  const int batch = 16, heads = 20, hd = 64;
  const std::int64_t d = heads * hd, block = 1500;
  const auto q = random_values(batch * d, 60, type());
  const auto kv = random_values(batch * block * 2 * d, 61, type());
  const auto bias = random_values(d, 62, DType::kF32, 0.5f);
  const Tensor qg = gpu_->upload(q, {batch, d}, type());
  const Tensor kvg = gpu_->upload(kv, {batch * block, 2 * d}, type());
  const Tensor bg = gpu_->upload(bias, {d});
  std::vector<int> lengths(batch), items(batch);
  for (int b = 0; b < batch; ++b) {
    lengths[static_cast<std::size_t>(b)] = std::vector<int>{1500, 1499, 1, 128, 129, 700}[b % 6];
    items[static_cast<std::size_t>(b)] = batch - 1 - b;
  }
  const auto run = [&](std::vector<float>& capture) {
    Tensor out = gpu_->upload(std::vector<float>(static_cast<std::size_t>(batch * d), kNaN),
                              {batch, d}, type());
    backend::AttentionArgs a;
    a.q = {qg, 0, d};
    a.k = {kvg, 0, 2 * d};
    a.v = {kvg, d, 2 * d};
    a.out = {out, 0, d};
    a.batch = batch;
    a.heads = heads;
    a.head_dim = hd;
    a.query_len = 1;
    a.key_block = block;
    a.key_lengths = lengths;
    a.item_index = items;
    a.scale = 0.5f;
    a.q_bias = &bg;
    a.capture_heads = {3, 17};
    capture.assign(static_cast<std::size_t>(batch * 2 * block), -1.0f);
    a.capture = capture;
    gpu_->attention(a);
    return to_host(*gpu_, out);
  };
  std::vector<float> expected_capture, capture;
  const std::vector<float> expected = run(expected_capture);
  for (const char* tweaks : {"none", "heads", "early", "fused", "heads,early", "heads,fused",
                             "early,fused", "heads,early,fused"}) {
    const ScopedEnv choice("IFW_CUDA_SPLIT", tweaks);
    for (int launch = 0; launch < 3; ++launch) {
      EXPECT_EQ(run(capture), expected) << "IFW_CUDA_SPLIT=" << tweaks << ", launch " << launch;
      EXPECT_EQ(capture, expected_capture)
          << "captured weights, IFW_CUDA_SPLIT=" << tweaks << ", launch " << launch;
    }
  }
}

// A head size the split and flash kernels refuse (20: not 64, and rows of 16-bit elements not a
// multiple of 16 bytes): decoding steps go to the row kernel's element-wise version, longer
// queries to the products, with and without a query bias.
TEST_P(CudaOps, AttentionWithAHeadSizeTheFastKernelsRefuse) {
  const int heads = 2, hd = 20;
  const std::int64_t d = heads * hd, block = 30;
  const auto q = random_values(4 * 12 * d, 40, type());
  const auto kv = random_values(2 * block * 2 * d, 41, type());
  const auto bias = random_values(d, 42, DType::kF32, 0.5f);
  auto [kc, kg] = both(kv, {2 * block, 2 * d}, type());
  auto [bc, bg] = both(bias, {d}, DType::kF32);
  for (const int query_len : {1, 12}) {
    for (const bool biased : {false, true}) {
      const std::int64_t rows = 2 * query_len;
      auto [qc, qg] = both(std::vector<float>(q.begin(), q.begin() + rows * d), {rows, d}, type());
      Tensor oc = cpu_->empty({rows, d});
      Tensor og = gpu_->upload(std::vector<float>(static_cast<std::size_t>(rows * d), kNaN),
                               {rows, d}, type());
      const auto run = [&](backend::Backend& be, const Tensor& qt, const Tensor& kt,
                           const Tensor& bt, const Tensor& out) {
        backend::AttentionArgs a;
        a.q = {qt, 0, d};
        a.k = {kt, 0, 2 * d};
        a.v = {kt, d, 2 * d};
        a.out = {out, 0, d};
        a.batch = 2;
        a.heads = heads;
        a.head_dim = hd;
        a.query_len = query_len;
        a.key_block = block;
        a.key_lengths = {query_len == 1 ? 7 : 30, 30};
        a.item_index = {1, 0};
        a.causal = query_len == 1;
        a.scale = 0.3f;
        if (biased) a.q_bias = &bt;
        be.attention(a);
      };
      run(*cpu_, qc, kc, bc, oc);
      run(*gpu_, qg, kg, bg, og);
      expect_close(oc, og,
                   fmt::format("attention, head size 20, {} queries{}", query_len,
                               biased ? ", query bias" : ""));
    }
  }
}

// Both versions of the row kernels (bias/GELU after a product, layer norm; IFW_CUDA_ELEMENTWISE)
// at the model's widths: several loads per thread, and widths the second version refuses and
// falls back on (a bias row not a multiple of 16 bytes, a norm not a multiple of 4 or over 2048).
TEST_P(CudaOps, RowKernelsOfBothVersions) {
  for (const char* version : {"1", "2"}) {
    const ScopedEnv choice("IFW_CUDA_ELEMENTWISE", version);
    const std::string v = fmt::format(" (version {})", version);
    for (const std::int64_t n : {80, 84, 1280, 3840, 5120}) {
      const std::int64_t m = 5, k = 64;
      const auto x = random_values(m * k, 31, type());
      const auto w = random_values(n * k, 32, type(), 0.2f);
      const auto b = random_values(n, 33, DType::kF32);
      auto [xc, xg] = both(x, {m, k}, type());
      auto [wc, wg] = both(w, {n, k}, type());
      auto [bc, bg] = both(b, {n}, DType::kF32);
      for (const Activation act : {Activation::kNone, Activation::kGelu}) {
        Tensor yc = cpu_->empty({m, n}), yg = gpu_->empty({m, n}, type());
        cpu_->linear({xc, 0, k}, wc, &bc, act, {yc, 0, n}, m, false);
        gpu_->linear({xg, 0, k}, wg, &bg, act, {yg, 0, n}, m, false);
        expect_close(yc, yg,
                     fmt::format("linear {}{}{}", n, act == Activation::kGelu ? " + gelu" : "", v));
      }
      const auto residual = random_values(m * n, 34, DType::kF32);
      auto [rc, rg] = both(residual, {m, n}, DType::kF32);
      cpu_->linear({xc, 0, k}, wc, &bc, Activation::kNone, {rc, 0, n}, m, true);
      gpu_->linear({xg, 0, k}, wg, &bg, Activation::kNone, {rg, 0, n}, m, true);
      expect_close(rc, rg, fmt::format("linear {} accumulate{}", n, v));
    }
    for (const std::int64_t d : {160, 384, 768, 1280, 1282, 2048, 2560}) {
      const std::int64_t rows = 7;
      const auto x = random_values(rows * d, 35, DType::kF32, 3.0f);
      const auto g = random_values(d, 36, DType::kF32);
      const auto b = random_values(d, 37, DType::kF32);
      auto [xc, xg] = both(x, {rows, d}, DType::kF32);
      auto [gc, gg] = both(g, {d}, DType::kF32);
      auto [bc, bg] = both(b, {d}, DType::kF32);
      Tensor yc = cpu_->empty({rows, d});
      // NaN to start with: a kernel that leaves any unwritten fails.
      Tensor yg = gpu_->upload(std::vector<float>(static_cast<std::size_t>(rows * d), kNaN),
                               {rows, d}, type());
      cpu_->layer_norm(xc, nullptr, gc, bc, 1e-5f, yc);
      gpu_->layer_norm(xg, nullptr, gg, bg, 1e-5f, yg);
      expect_close(yc, yg, fmt::format("layer norm {}{}", d, v));
      const auto add = random_values(d, 38, DType::kF32);
      auto [ac, ag] = both(add, {d}, DType::kF32);
      cpu_->layer_norm(xc, &ac, gc, bc, 1e-5f, yc);
      gpu_->layer_norm(xg, &ag, gg, bg, 1e-5f, yg);
      EXPECT_EQ(to_host(*gpu_, xg), x) << fmt::format("x after a shifted layer norm {}{}", d, v);
      expect_close(yc, yg, fmt::format("shifted layer norm {}{}", d, v));
    }
  }
}

// Products through cuBLASLt (IFW_CUDA_LT), the heuristic's first algorithm or the fastest of
// several timed on the first product of each shape: a product that accumulates is timed from a
// copy of its output, so it still adds once.
TEST_P(CudaOps, LinearThroughCublasLt) {
  for (const char* mode : {"1", "tune"}) {
    const ScopedEnv choice("IFW_CUDA_LT", mode);
    auto lt = backend::make_cuda_backend(0, type());
    for (const std::int64_t m : {5, 300}) {
      const std::int64_t k = 64, n = 1280;
      const std::string what = fmt::format(" ({} rows, IFW_CUDA_LT={})", m, mode);
      const auto x = random_values(m * k, 41, type());
      const auto w = random_values(n * k, 42, type(), 0.2f);
      const auto b = random_values(n, 43, DType::kF32);
      const Tensor xc = cpu_->upload(x, {m, k}), xg = lt->upload(x, {m, k}, type());
      const Tensor wc = cpu_->upload(w, {n, k}), wg = lt->upload(w, {n, k}, type());
      const Tensor bc = cpu_->upload(b, {n}), bg = lt->upload(b, {n});
      Tensor yc = cpu_->empty({m, n}), yg = lt->empty({m, n}, type());
      cpu_->linear({xc, 0, k}, wc, &bc, Activation::kGelu, {yc, 0, n}, m, false);
      lt->linear({xg, 0, k}, wg, &bg, Activation::kGelu, {yg, 0, n}, m, false);
      EXPECT_LE(relative_error(to_host(*lt, yg), to_host(*cpu_, yc)), tolerance())
          << "linear + bias + gelu" << what;
      // Accumulating into the middle columns of a wider float32 residual (a column view: the
      // saved copy must follow the output's pitch).
      const auto residual = random_values(m * 3 * n, 44, DType::kF32);
      Tensor rc = cpu_->upload(residual, {m, 3 * n}), rg = lt->upload(residual, {m, 3 * n});
      for (int twice = 0; twice < 2; ++twice) {  // the second product of the shape: planned
        cpu_->linear({xc, 0, k}, wc, &bc, Activation::kNone, {rc, n, 3 * n}, m, true);
        lt->linear({xg, 0, k}, wg, &bg, Activation::kNone, {rg, n, 3 * n}, m, true);
        EXPECT_LE(relative_error(to_host(*lt, rg), to_host(*cpu_, rc)), tolerance())
            << "linear accumulate into a column view, product " << twice + 1 << what;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaOps, ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& param_info) {
                           return std::string(backend::dtype_name(param_info.param));
                         });

double used_mib() {
  const backend::DeviceMemory m = backend::device_memory(0);
  return static_cast<double>(m.total - m.free) / (1024.0 * 1024.0);
}

// 1000 windows in a row leave device memory where the first ones left it, and releasing the
// model returns it to within 64 MiB of its level before the model was loaded.
TEST(CudaMemory, ThousandWindowsDoNotGrowAndReleaseReturnsIt) {
  IFW_REQUIRE_GPU();
  const double before = used_mib();
  {
    auto be = backend::make_cuda_backend(0, DType::kF16);
    model::WhisperConfig config = engine::published_architecture("tiny");
    engine::RandomWeights weights(7);
    auto model = std::make_unique<engine::WhisperModel>(config, weights, *be);
    const int batch = 25;
    std::vector<float> mel(static_cast<std::size_t>(batch) * 80 * 3000, 0.1f);
    std::vector<double> used;  // after each round
    for (int round = 0; round < 1000 / batch; ++round) {
      const Tensor states = model->encode(mel, batch);
      engine::DecoderSession session(*model, states);
      std::vector<int> items(batch);
      for (int b = 0; b < batch; ++b)
        items[static_cast<std::size_t>(b)] = b;
      std::vector<engine::TokenId> tokens(static_cast<std::size_t>(batch) * 4, 50258);
      session.forward(tokens, 4, items, engine::LogitRows::kLast);
      for (int s = 0; s < 20; ++s) {
        std::vector<engine::TokenId> step(static_cast<std::size_t>(batch), 440);
        session.forward(step, 1, items, engine::LogitRows::kLast);
      }
      used.push_back(used_mib());
    }
    // The first rounds warm up (the pool grows to a batch's buffers, kernels load, the pool
    // settles its layout: on an H100 one more 64 MiB block by round 8); after the first 250
    // windows nothing may grow.
    std::string trace;
    for (std::size_t r = 0; r < used.size(); r += 4)
      trace += fmt::format(" {:.0f}", used[r]);
    std::cout << "[ device MiB in use every 4th of " << used.size() << " rounds ]" << trace << "\n";
    const double settled = used[10];
    EXPECT_LE(*std::max_element(used.begin() + 10, used.end()), settled + 2.0)
        << "device memory grew:" << trace;
    model.reset();
    be->release_cached_memory();
  }
  EXPECT_LE(used_mib(), before + 64.0) << "device memory not returned after release";
}

#ifdef IFW_HAVE_CUDA
// `batch` windows of 80-bin log-mel features, uniform in [-1, 1).
std::vector<float> random_mel(int batch, unsigned seed) {
  std::vector<float> mel(static_cast<std::size_t>(batch) * 80 * 3000);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& v : mel)
    v = u(rng);
  return mel;
}

// Decoder steps replayed from CUDA graphs (rounded up to a few sizes while items end, alignment
// heads captured) give what steps issued one by one give, in every precision; the graphs are
// really launched, and their memory goes when the model lets them go.
TEST(CudaStepGraphs, ReplayedStepsGiveWhatDirectStepsGive) {
  IFW_REQUIRE_GPU();
  for (const DType type : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(backend::dtype_name(type));
    auto be = backend::make_cuda_backend(0, type);
    model::WhisperConfig config = engine::published_architecture("tiny");
    engine::RandomWeights weights(11);
    const engine::WhisperModel model(config, weights, *be);
    const int batch = 6;
    const Tensor states = model.encode(random_mel(batch, 5), batch);
    const auto decode = [&] {
      engine::DecoderSession session(model, states);
      engine::AlignmentCapture capture;
      capture.heads = {{2, 1}, {3, 4}};
      std::vector<int> all = {0, 1, 2, 3, 4, 5};
      std::vector<engine::TokenId> prompt;
      for (int b = 0; b < batch; ++b)
        prompt.insert(prompt.end(), {50258, 50259, 50359});
      std::vector<std::vector<float>> logits = {
          session.forward(prompt, 3, all, engine::LogitRows::kLast, &capture)};
      // Each size three times at least: measured, captured, replayed.
      std::vector<std::vector<int>> steps;
      for (int s = 0; s < 4; ++s)
        steps.push_back(all);
      for (int s = 0; s < 4; ++s)
        steps.push_back({0, 2, 3, 4, 5});  // rounded to 6
      for (int s = 0; s < 4; ++s)
        steps.push_back({0, 3, 5});  // rounded to 4
      for (int s = 0; s < 4; ++s)
        steps.push_back({5});
      int step = 0;
      for (const std::vector<int>& items : steps) {
        std::vector<engine::TokenId> tokens;
        for (const int b : items)
          tokens.push_back(400 + 37 * b + step);
        logits.push_back(session.forward(tokens, 1, items, engine::LogitRows::kLast, &capture));
        ++step;
      }
      return std::make_pair(logits, capture.weights);
    };
    const auto [direct_logits, direct_weights] = [&] {
      ScopedEnv off("IFW_CUDA_GRAPHS", "0");
      return decode();
    }();
    const std::uint64_t launched = backend::cuda_step_graph_launches();
    std::vector<std::vector<float>> graph_logits;
    std::vector<std::vector<std::vector<float>>> graph_weights;
    {
      ScopedEnv graphs("IFW_CUDA_GRAPHS", "1");
      // Memory the pool keeps for reuse is given back first, on both sides: what is left is
      // memory in use. The model keeps the last session's caches and graphs for the next
      // session of its size until it lets them go (an idle transcriber does).
      be->release_cached_memory();
      const double before = used_mib();
      std::tie(graph_logits, graph_weights) = decode();
      model.release_decoder_buffers();
      be->release_cached_memory();
      EXPECT_LE(used_mib(), before + 32.0) << "graphs let go kept their memory";
    }
    // Three shapes (6 rows: 8 steps, 4 rows and 1 row: 4 steps each), each measured, captured,
    // then replayed: 10 launches.
    EXPECT_GE(backend::cuda_step_graph_launches() - launched, 10u) << "graphs were not launched";
    // Rounded steps multiply more rows, which may change cuBLAS's summation order.
    const double tolerance = type == DType::kF32 ? 1e-5 : 5e-3;
    ASSERT_EQ(direct_logits.size(), graph_logits.size());
    for (std::size_t s = 0; s < direct_logits.size(); ++s) {
      EXPECT_LE(relative_error(graph_logits[s], direct_logits[s]), tolerance) << "call " << s;
    }
    ASSERT_EQ(direct_weights.size(), graph_weights.size());
    for (std::size_t b = 0; b < direct_weights.size(); ++b) {
      for (std::size_t h = 0; h < direct_weights[b].size(); ++h) {
        EXPECT_LE(relative_error(graph_weights[b][h], direct_weights[b][h]), tolerance)
            << "alignment weights of item " << b << ", head " << h;
      }
    }
  }
}

// Greedy decoding with steps replayed from graphs (tokens chosen on the GPU, items ending one by
// one, timestamps and alignment heads) chooses what steps issued one by one choose.
TEST(CudaStepGraphs, GreedyDecodingChoosesTheSameTokens) {
  IFW_REQUIRE_GPU();
  for (const DType type : {DType::kF32, DType::kF16}) {
    SCOPED_TRACE(backend::dtype_name(type));
    auto be = backend::make_cuda_backend(0, type);
    model::WhisperConfig config = engine::published_architecture("tiny");
    engine::RandomWeights weights(13);
    const engine::WhisperModel model(config, weights, *be);
    const int batch = 7;
    const Tensor states = model.encode(random_mel(batch, 9), batch);
    decode::DecodingRules rules;
    rules.suppress_tokens = {1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62};
    rules.begin_suppress_tokens = {220, 50257};
    rules.timestamps = true;
    rules.end_of_text = 50257;
    rules.no_timestamps = 50363;
    rules.timestamp_begin = 50364;
    rules.max_initial_timestamp_index = 50;
    decode::GreedyOptions o;
    o.prompt = {50258, 50259, 50359};
    o.max_new_tokens = 40;
    o.rules = &rules;
    o.end_tokens = {50257};
    o.alignment_heads = {{2, 1}, {3, 4}};
    // Other windows, decoded next: with graphs, the session replays what the first recorded (the
    // model kept its caches and graphs) over these windows' keys and values.
    const Tensor next_states = model.encode(random_mel(batch, 10), batch);
    std::vector<decode::GreedyResult> direct, next_direct;
    {
      ScopedEnv off("IFW_CUDA_GRAPHS", "0");
      direct = decode::greedy_decode(model, states, o);
      next_direct = decode::greedy_decode(model, next_states, o);
    }
    const std::uint64_t launched = backend::cuda_step_graph_launches();
    std::vector<decode::GreedyResult> graphs, next, next_recorded_anew;
    {
      ScopedEnv on("IFW_CUDA_GRAPHS", "1");
      graphs = decode::greedy_decode(model, states, o);
      next = decode::greedy_decode(model, next_states, o);
      model.release_decoder_buffers();
      next_recorded_anew = decode::greedy_decode(model, next_states, o);
      model.release_decoder_buffers();
    }
    EXPECT_GT(backend::cuda_step_graph_launches(), launched) << "no graph was launched";
    // Replayed from the kept graphs or recorded anew, the same operations on the same shapes.
    ASSERT_EQ(next.size(), next_recorded_anew.size());
    for (std::size_t b = 0; b < next.size(); ++b) {
      EXPECT_EQ(next[b].tokens, next_recorded_anew[b].tokens) << "item " << b;
      for (std::size_t h = 0; h < next[b].alignment.size(); ++h) {
        EXPECT_LE(relative_error(next[b].alignment[h], next_recorded_anew[b].alignment[h]), 1e-6)
            << "item " << b << ", head " << h;
      }
    }
    // Steps issued one by one run fewer rows (not rounded up), whose products may sum in another
    // order: in float16 a token may then differ where two are near ties.
    if (type != DType::kF32) continue;
    ASSERT_EQ(direct.size(), graphs.size());
    ASSERT_EQ(next_direct.size(), next.size());
    for (std::size_t b = 0; b < next.size(); ++b)
      EXPECT_EQ(next_direct[b].tokens, next[b].tokens) << "item " << b << " of the next windows";
    for (std::size_t b = 0; b < direct.size(); ++b) {
      EXPECT_EQ(direct[b].tokens, graphs[b].tokens) << "item " << b;
      EXPECT_NEAR(direct[b].sum_logprob, graphs[b].sum_logprob, 1e-3) << "item " << b;
      ASSERT_EQ(direct[b].alignment.size(), graphs[b].alignment.size());
      for (std::size_t h = 0; h < direct[b].alignment.size(); ++h) {
        EXPECT_LE(relative_error(graphs[b].alignment[h], direct[b].alignment[h]), 1e-5)
            << "item " << b << ", head " << h;
      }
    }
  }
}
#endif

// Tokens chosen on the GPU (rules applied where the logits are) against the host's choice of
// the same logits: flags, first-token flags, ranges, the timestamp vote both ways, a row where
// everything is forbidden, ties.
TEST(CudaChoice, TokensChosenOnTheGpuAreTheHostsChoices) {
  IFW_REQUIRE_GPU();
  auto be = backend::make_cuda_backend(0, DType::kF32);
  const int vocab = 51866, ts = 50365;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<backend::RowRules> rules;
  std::vector<float> logits;
  const auto add = [&](backend::RowRules r, std::vector<float> row) {
    rules.push_back(r);
    logits.insert(logits.end(), row.begin(), row.end());
  };
  const auto random_row = [&] {
    std::vector<float> row(vocab);
    for (float& v : row)
      v = normal(rng);
    return row;
  };
  add({}, random_row());  // nothing forbidden
  backend::RowRules first;
  first.first = 1;
  add(first, random_row());
  for (const float timestamp_level : {-2.0f, 4.0f}) {  // the vote for text, then for timestamps
    backend::RowRules vote;
    vote.timestamp_vote = 1;
    vote.timestamp_begin = ts;
    vote.ranges = 2;
    vote.forbidden[0][0] = 50364;
    vote.forbidden[0][1] = 50365;
    vote.forbidden[1][0] = ts;
    vote.forbidden[1][1] = ts + 20;
    std::vector<float> row = random_row();
    for (int i = ts; i < vocab; ++i)
      row[static_cast<std::size_t>(i)] += timestamp_level;
    add(vote, row);
  }
  backend::RowRules everything;
  everything.ranges = 1;
  everything.forbidden[0][1] = std::numeric_limits<std::int32_t>::max();
  add(everything, random_row());
  std::vector<float> tie = random_row();
  tie[1234] = tie[40000] = 50.0f;
  add({}, tie);
  std::vector<std::uint8_t> flags(vocab, 0);
  for (int i = 0; i < vocab; i += 97)
    flags[static_cast<std::size_t>(i)] = backend::kTokenForbidden;
  for (int i = 5; i < vocab; i += 89)
    flags[static_cast<std::size_t>(i)] |= backend::kTokenForbiddenFirst;

  const auto rows = static_cast<std::int64_t>(rules.size());
  const Tensor on_gpu = be->upload(logits, {rows, vocab});
  std::vector<backend::TokenChoice> gpu(rules.size()), host(rules.size());
  be->choose_tokens(on_gpu, flags, rules, gpu);
  for (std::size_t r = 0; r < rules.size(); ++r) {
    std::vector<float> row(logits.begin() + static_cast<std::ptrdiff_t>(r * vocab),
                           logits.begin() + static_cast<std::ptrdiff_t>((r + 1) * vocab));
    host[r] = backend::choose_token(flags, rules[r], row);
    EXPECT_EQ(gpu[r].token, host[r].token) << "row " << r;
    if (std::isnan(host[r].logprob)) {
      EXPECT_TRUE(std::isnan(gpu[r].logprob)) << "row " << r;
    } else {
      EXPECT_NEAR(gpu[r].logprob, host[r].logprob, 1e-4) << "row " << r;
    }
  }
  EXPECT_EQ(gpu.back().token, 1234);  // the first of equal maxima
  EXPECT_GE(host[3].token, ts);       // the vote went to timestamps...
  EXPECT_LT(host[2].token, ts);       // ...and to text
}

TEST(CudaMemory, OutOfMemoryIsAnErrorAndTheBackendStaysUsable) {
  IFW_REQUIRE_GPU();
  auto be = backend::make_cuda_backend(0, DType::kF16);
  const backend::DeviceMemory m = backend::device_memory(0);
  try {
    be->empty({static_cast<std::int64_t>(m.total / 2) * 3}, DType::kF16);  // 1.5x the card
    ADD_FAILURE() << "an allocation larger than the GPU succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOutOfMemory) << e.what();
  }
  const std::vector<float> values = {1.0f, 2.0f, 3.0f};
  const Tensor t = be->upload(values, {3}, DType::kF16);
  EXPECT_EQ(to_host(*be, t), values);
}

}  // namespace
}  // namespace ifw::test
