// Whole transcriptions on the GPU: the transcriber with its batch planned from the device's free
// memory, windows prepared ahead, decoder steps from CUDA graphs and tokens chosen on the device
// gives, file by file, the CPU's tokens (float32), and device memory after the job is back to
// its level before it; after a fault on the GPU, the run goes on on the CPU. Audio is 16 kHz WAV,
// which also the builds without FFmpeg read (GPU hosts' ifw_gpu_checks). Skipped, saying so,
// where no GPU or reference corpus is at hand.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/device_selection.hpp"
#include "backend/devices.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/batch_size.hpp"
#include "pipeline/transcriber.hpp"
#include "support/captured_log.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"
#include "support/wav_files.hpp"

namespace ifw::test {
namespace {

double used_mib() {
  const backend::DeviceMemory m = backend::device_memory(0);
  return static_cast<double>(m.total - m.free) / (1024.0 * 1024.0);
}

// `seconds` of tones and noise bursts with pauses between them, the same for the same seed.
std::vector<float> signal(double seconds, std::uint32_t seed) {
  const auto n = static_cast<std::size_t>(seconds * 16000);
  std::vector<float> s(n);
  std::uint32_t x = seed;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const double t = static_cast<double>(i) / 16000.0;
    const bool on = std::fmod(t, 2.5) < 1.8;
    const double tone = 0.3 * std::sin(2.0 * 3.14159265358979 * (200.0 + 40.0 * (seed % 7)) * t);
    const double noise = (static_cast<double>(x >> 8) / 16777216.0 - 0.5) * 0.2;
    s[i] = on ? static_cast<float>(tone + noise) : 0.0f;
  }
  return s;
}

// Clips of `lengths` seconds in `dir` (clip0.wav, ...), each its own signal.
std::vector<std::string> clips(const TempDir& dir, std::initializer_list<double> lengths) {
  std::vector<std::string> paths;
  std::uint32_t seed = 1;
  for (const double seconds : lengths) {
    const auto path = dir / ("clip" + std::to_string(paths.size()) + ".wav");
    write_file(path, wav_of(signal(seconds, seed++)));
    paths.push_back(path.string());
  }
  return paths;
}

using Tokens = std::map<std::string, std::vector<std::vector<int>>>;  // per file, per segment

// Greedy English transcription of 24 tokens a window at most, `batch_size` windows a batch.
pipeline::TranscribeOptions options(int batch_size, bool cpu_fallback) {
  pipeline::TranscribeOptions o;
  o.batch_size = batch_size;
  o.max_new_tokens = 24;
  o.temperature_increment = 0.0;
  o.language = "en";
  o.cpu_fallback = cpu_fallback;
  return o;
}

// Transcribes `paths` with `t`; every file must succeed.
Tokens transcribe(pipeline::Transcriber& t, const std::vector<std::string>& paths) {
  pipeline::CancellationToken cancel;
  Tokens out;
  t.run(
      paths, cancel, [](const pipeline::ProgressEvent&) {},
      [&](pipeline::FileResult&& r) {
        EXPECT_TRUE(r.ok) << r.path << ": " << r.error;
        auto& segments = out[r.path];
        for (const Segment& s : r.transcript.segments)
          segments.emplace_back(s.tokens.begin(), s.tokens.end());
      });
  return out;
}

// Transcribes `paths` with `model`, where a GPU run that leaves the GPU is a failure.
Tokens transcribe(const model::ModelFolder& folder, const engine::WhisperModel& model,
                  const std::vector<std::string>& paths, int batch_size) {
  pipeline::Transcriber t(folder, model, options(batch_size, false));
  return transcribe(t, paths);
}

TEST(CudaTranscription, FilesTranscribedOnTheGpuGiveTheCpusTokensAndMemoryComesBack) {
  if (backend::describe_devices().gpus.empty()) {
    GTEST_SKIP() << "no GPU: " << backend::describe_devices().cuda_status
                 << " (whole transcriptions on the GPU are checked on a machine with one)";
  }
  IFW_REQUIRE_GOLDEN();
  const model::ModelFolder folder(*golden_dir() / "models" / "tiny-random-v3");
  engine::CheckpointWeights weights(folder.checkpoint());
  const TempDir dir;
  const std::vector<std::string> paths = clips(dir, {95.0, 31.0, 12.0, 3.0, 64.0});

  const auto cpu = backend::make_cpu_backend(2);
  const engine::WhisperModel cpu_model(folder.config(), weights, *cpu);
  const Tokens expected = transcribe(folder, cpu_model, paths, 4);
  ASSERT_EQ(expected.size(), paths.size());
  std::size_t tokens = 0;
  for (const auto& [path, segments] : expected) {
    for (const auto& s : segments)
      tokens += s.size();
  }
  ASSERT_GT(tokens, 0u) << "the CPU's run decoded nothing to compare with";

  const double before_load = used_mib();
  {
    const auto gpu = backend::make_cuda_backend(0, backend::DType::kF32);
    const engine::WhisperModel gpu_model(folder.config(), weights, *gpu);
    const int batch = pipeline::planned_batch_size(folder.config(), *gpu, 0, 8);
    EXPECT_GE(batch, 4) << "the batch planned from the GPU's free memory";
    gpu->release_cached_memory();
    const double before_job = used_mib();
    const Tokens got = transcribe(folder, gpu_model, paths, batch);
    gpu->release_cached_memory();
    const double after_job = used_mib();
    std::cout << "[ device memory ] " << before_load << " MiB before loading, " << before_job
              << " before the job (batch " << batch << "), " << after_job << " after it\n";
    EXPECT_LE(after_job, before_job + 64.0) << "device memory after the job";
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& [path, segments] : expected) {
      ASSERT_TRUE(got.count(path)) << path;
      EXPECT_EQ(got.at(path), segments) << path << ": tokens on the GPU differ from the CPU's";
    }
  }
  EXPECT_LE(used_mib(), before_load + 64.0) << "device memory after the model is released";
}

// A kernel that writes to address 16, run on `device`'s primary context (the one the CUDA
// backend uses) through the driver: one driver per process, whereas the runtime is linked into
// the CUDA module on its own. Returns the driver's result for the kernel
// (CUDA_ERROR_ILLEGAL_ADDRESS, 700, expected), or 0 and why it could not run it.
int fault_the_gpu(int device, std::string& why) {
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) {
    why = "no libcuda.so.1";
    return 0;
  }
  using Result = int;
  const auto get = [&](const char* name) {
    void* f = dlsym(driver, name);
    if (f == nullptr) why += std::string(" no ") + name;
    return f;
  };
  const auto init = reinterpret_cast<Result (*)(unsigned)>(get("cuInit"));
  const auto device_get = reinterpret_cast<Result (*)(int*, int)>(get("cuDeviceGet"));
  const auto retain = reinterpret_cast<Result (*)(void**, int)>(get("cuDevicePrimaryCtxRetain"));
  const auto push = reinterpret_cast<Result (*)(void*)>(get("cuCtxPushCurrent_v2"));
  const auto pop = reinterpret_cast<Result (*)(void**)>(get("cuCtxPopCurrent_v2"));
  const auto load = reinterpret_cast<Result (*)(void**, const void*)>(get("cuModuleLoadData"));
  const auto function =
      reinterpret_cast<Result (*)(void**, void*, const char*)>(get("cuModuleGetFunction"));
  const auto launch =
      reinterpret_cast<Result (*)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, void*, void**, void**)>(get("cuLaunchKernel"));
  const auto synchronize = reinterpret_cast<Result (*)()>(get("cuCtxSynchronize"));
  if (!why.empty()) return 0;
  static constexpr char kPtx[] = R"(
.version 7.0
.target sm_75
.address_size 64
.visible .entry ifw_test_fault()
{
  .reg .b32 %r<2>;
  .reg .b64 %rd<2>;
  mov.u64 %rd1, 16;
  mov.u32 %r1, 1;
  st.global.u32 [%rd1], %r1;
  ret;
}
)";
  int dev = 0;
  void* context = nullptr;
  void* module = nullptr;
  void* kernel = nullptr;
  Result r = init(0);
  if (r == 0) r = device_get(&dev, device);
  if (r == 0) r = retain(&context, dev);
  if (r == 0) r = push(context);
  if (r != 0) {
    why = "the driver refused the GPU: " + std::to_string(r);
    return 0;
  }
  r = load(&module, kPtx);
  if (r == 0) r = function(&kernel, module, "ifw_test_fault");
  if (r == 0) {
    r = launch(kernel, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr);
    if (r != 0) {
      why = "the driver did not launch the faulting kernel: " + std::to_string(r);
      r = 0;
    } else {
      r = synchronize();  // the fault
    }
  } else {
    why = "the driver refused the faulting kernel: " + std::to_string(r);
    r = 0;
  }
  void* popped = nullptr;
  pop(&popped);
  return r;  // the context stays retained, and the library loaded: the process's for good
}

// A fault in a kernel leaves the GPU unusable to the whole process: CUDA refuses every later call
// in that context. The engine says so (a device failure, not a generic error), a transcription
// goes on on the CPU with the CPU's tokens, later backends under --device auto are the CPU's, and
// the failed device's memory is said once not to come back, not once per tensor. It ruins the
// process's GPU for any test after it, so it runs only as the one test of its process (as CTest
// runs every test; scripts/gpu-check.sh runs it apart).
TEST(CudaDeviceFailure, AfterAFaultTheRunGoesOnOnTheCpuAndTheGpuIsLeftAlone) {
  if (backend::describe_devices().gpus.empty()) {
    GTEST_SKIP() << "no GPU: " << backend::describe_devices().cuda_status
                 << " (a failing GPU is checked on a machine with one)";
  }
  if (::testing::UnitTest::GetInstance()->test_to_run_count() != 1) {
    GTEST_SKIP() << "it leaves the GPU unusable to this process: run it alone "
                    "(--gtest_filter=CudaDeviceFailure.*)";
  }
  IFW_REQUIRE_GOLDEN();
  const model::ModelFolder folder(*golden_dir() / "models" / "tiny-random-v3");
  engine::CheckpointWeights weights(folder.checkpoint());
  const TempDir dir;
  const std::vector<std::string> paths = clips(dir, {64.0, 12.0});
  // With the fallback's threads (all usable cores): the same sums in the same order.
  const auto cpu = backend::make_cpu_backend(0);
  const engine::WhisperModel cpu_model(folder.config(), weights, *cpu);
  const Tokens expected = transcribe(folder, cpu_model, paths, 4);
  ASSERT_EQ(expected.size(), paths.size());

  CapturedLog log;
  {
    const auto gpu = backend::make_cuda_backend(0, backend::DType::kF32);
    const engine::WhisperModel gpu_model(folder.config(), weights, *gpu);
    std::string why;
    const int fault = fault_the_gpu(0, why);
    ASSERT_NE(fault, 0) << "the GPU did not fault, the test proves nothing: " << why;
    std::cout << "[ fault ] the test's kernel ended with CUDA driver error " << fault << "\n";

    try {
      const std::vector<float> silence(
          static_cast<std::size_t>(folder.config().num_mel_bins) * 3000, 0.0f);
      (void)gpu_model.encode(silence, 1);
      ADD_FAILURE() << "the encoder ran on a GPU that had faulted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kDeviceFailure) << e.what();
      EXPECT_NE(std::string(e.what()).find("cannot be used again"), std::string::npos) << e.what();
    }

    pipeline::Transcriber t(folder, gpu_model, options(4, true));
    const Tokens got = transcribe(t, paths);
    EXPECT_TRUE(t.device_failed());
    EXPECT_EQ(got, expected) << "the run on the CPU after the fault";

    const auto automatic = backend::make_backend(backend::parse_device("auto"), std::nullopt, 1);
    EXPECT_EQ(automatic->device(), backend::Device::kCpu) << automatic->description();
    try {
      (void)backend::make_cuda_backend(0, backend::DType::kF16);
      ADD_FAILURE() << "a backend was made on a GPU that had faulted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kDeviceFailure) << e.what();
    }
  }
  const std::string said = log.text();
  std::cout << said;
  const std::string once = "further failures to release are not said";
  std::size_t releases = 0;
  for (std::size_t at = said.find(once); at != std::string::npos; at = said.find(once, at + 1))
    ++releases;
  EXPECT_EQ(releases, 1u) << "the failed GPU's memory, graphs and streams: said once";
  EXPECT_NE(said.find("going on there"), std::string::npos) << "the fallback, said";
}

}  // namespace
}  // namespace ifw::test
