// Whole transcriptions on the GPU: the transcriber with its batch planned from the device's free
// memory, windows prepared ahead, decoder steps from CUDA graphs and tokens chosen on the device
// gives, file by file, the CPU's tokens (float32), and device memory after the job is back to
// its level before it. Audio is 16 kHz WAV, which also the builds without FFmpeg read (GPU hosts'
// ifw_gpu_checks). Skipped, saying so, where no GPU or reference corpus is at hand.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/backend.hpp"
#include "backend/devices.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/batch_size.hpp"
#include "pipeline/transcriber.hpp"
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

using Tokens = std::map<std::string, std::vector<std::vector<int>>>;  // per file, per segment

// Transcribes `paths` with `model`; every file must succeed.
Tokens transcribe(const model::ModelFolder& folder, const engine::WhisperModel& model,
                  const std::vector<std::string>& paths, int batch_size) {
  pipeline::TranscribeOptions o;
  o.batch_size = batch_size;
  o.max_new_tokens = 24;
  o.temperature_increment = 0.0;
  o.language = "en";
  o.cpu_fallback = false;  // a GPU run that leaves the GPU is a failure here
  pipeline::Transcriber t(folder, model, o);
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

TEST(CudaTranscription, FilesTranscribedOnTheGpuGiveTheCpusTokensAndMemoryComesBack) {
  if (backend::describe_devices().gpus.empty()) {
    GTEST_SKIP() << "no GPU: " << backend::describe_devices().cuda_status
                 << " (whole transcriptions on the GPU are checked on a machine with one)";
  }
  IFW_REQUIRE_GOLDEN();
  const model::ModelFolder folder(*golden_dir() / "models" / "tiny-random-v3");
  engine::CheckpointWeights weights(folder.checkpoint());
  TempDir dir;
  std::vector<std::string> paths;
  const double lengths[] = {95.0, 31.0, 12.0, 3.0, 64.0};
  for (std::size_t i = 0; i < std::size(lengths); ++i) {
    const auto path = dir / ("clip" + std::to_string(i) + ".wav");
    write_file(path, wav_of(signal(lengths[i], static_cast<std::uint32_t>(i + 1))));
    paths.push_back(path.string());
  }

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

}  // namespace
}  // namespace ifw::test
