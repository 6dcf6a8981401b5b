// `ifw bench --audio`: whole transcriptions with random weights of an architecture, the tokenizer
// of a model folder; figures that add up, windows prepared ahead where asked, clear refusals.
#include "pipeline/transcription_benchmark.hpp"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"
#include "support/wav_files.hpp"

namespace ifw::test {
namespace {

std::vector<float> tones(double seconds) {
  std::vector<float> s(static_cast<std::size_t>(seconds * 16000));
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = 0.3f * static_cast<float>(std::sin(static_cast<double>(i) * 0.05));
  return s;
}

TEST(TranscriptionBenchmark, TranscribesEveryFileAndCountsWhatItDid) {
  IFW_REQUIRE_GOLDEN();
  TempDir dir;
  write_file(dir / "a.wav", wav_of(tones(95.0)));
  write_file(dir / "b.wav", wav_of(tones(20.0)));
  pipeline::TranscriptionBenchmarkOptions o;
  o.model.arch = "tiny";
  o.model.threads = 2;
  o.model.batch = 2;
  o.model.tokens = 8;
  o.audio = {(dir / "a.wav").string(), (dir / "b.wav").string()};
  o.tokenizer_folder = *golden_dir() / "models" / "tiny-random-v2";
  o.prepare_ahead = true;
  const auto r = pipeline::run_transcription_benchmark(o);
  EXPECT_EQ(r.files, 2);
  EXPECT_EQ(r.failed, 0);
  EXPECT_NEAR(r.audio_seconds, 115.0, 0.01);
  EXPECT_GT(r.wall_ms, 0.0);
  EXPECT_NEAR(r.rtfx, r.audio_seconds * 1000.0 / r.wall_ms, 1e-9);
  EXPECT_GT(r.tokens, 0);
  EXPECT_LE(r.tokens, r.segments * 8) << "at most --tokens a window";
  EXPECT_GT(r.windows_read_ahead, 0) << "five windows in batches of two: some read ahead";
  EXPECT_LE(r.most_windows_ahead, 2) << "at most a batch waits";
  const std::string text = pipeline::transcription_benchmark_text(o, r);
  EXPECT_NE(text.find("transcribed 2 files (0 failed), 115.0 s of audio"), std::string::npos)
      << text;
  EXPECT_NE(pipeline::transcription_benchmark_json(o, r).find("\"windows_read_ahead\""),
            std::string::npos);
}

TEST(TranscriptionBenchmark, RefusesWhatItCannotRun) {
  IFW_REQUIRE_GOLDEN();
  pipeline::TranscriptionBenchmarkOptions o;
  o.model.arch = "tiny";
  o.tokenizer_folder = *golden_dir() / "models" / "tiny-random-v2";
  EXPECT_IFW_ERROR(pipeline::run_transcription_benchmark(o), "no audio files");
  o.audio = {"x.wav"};
  o.tokenizer_folder = *golden_dir() / "models" / "tiny-random-v3";
  EXPECT_IFW_ERROR(pipeline::run_transcription_benchmark(o),
                   "a vocabulary of 51866 tokens, tiny has 51865");
  o.tokenizer_folder.clear();
  EXPECT_IFW_ERROR(pipeline::run_transcription_benchmark(o), "needs --tokenizer");
}

}  // namespace
}  // namespace ifw::test
