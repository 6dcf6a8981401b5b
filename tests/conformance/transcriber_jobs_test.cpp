// Jobs with options of their own (the server's requests) decoded in shared batches: each gets
// what it gets alone, and a job whose options do not suit the model fails without the others.
#include <map>
#include <memory>

#include <gtest/gtest.h>

#include "backend/backend.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/transcriber.hpp"
#include "support/golden.hpp"

namespace ifw::test {
namespace {

struct Outcome {
  bool ok = false;
  std::string error;
  Transcript transcript;
};

class TranscriberJobs : public ::testing::Test {
 protected:
  void SetUp() override {
    IFW_REQUIRE_GOLDEN();
    folder_ = std::make_unique<model::ModelFolder>(*golden_dir() / "models" / "tiny-random-v3");
    backend_ = backend::make_cpu_backend(2);
    engine::CheckpointWeights weights(folder_->checkpoint());
    model_ = std::make_unique<engine::WhisperModel>(folder_->config(), weights, *backend_);
    jfk_ = (*whisper_data_dir() / "jfk.flac").string();
  }

  std::map<int, Outcome> run(const std::vector<pipeline::Job>& jobs, int batch_size) {
    pipeline::TranscribeOptions o;
    o.batch_size = batch_size;
    o.max_new_tokens = 24;
    o.temperature_increment = 0.0;
    pipeline::Transcriber t(*folder_, *model_, o);
    pipeline::CancellationToken cancel;
    std::map<int, Outcome> out;
    t.run(
        jobs, cancel, [](const pipeline::ProgressEvent&) {},
        [&](pipeline::FileResult&& r) {
          out[r.file] = {r.ok, r.error, std::move(r.transcript)};
        });
    return out;
  }

  static std::vector<std::vector<int>> tokens(const Transcript& t) {
    std::vector<std::vector<int>> all;
    for (const Segment& s : t.segments)
      all.emplace_back(s.tokens.begin(), s.tokens.end());
    return all;
  }

  std::unique_ptr<model::ModelFolder> folder_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<engine::WhisperModel> model_;
  std::string jfk_;
};

TEST_F(TranscriberJobs, EachJobGetsWhatItGetsAlone) {
  const std::vector<pipeline::Job> jobs = {
      {jfk_, pipeline::JobOptions{"transcribe", "en", "", 0.0, false}},
      {jfk_, pipeline::JobOptions{"translate", "fr", "Names: Ada, Grace.", 0.0, true}},
      {jfk_, std::nullopt},  // the run's options: language detected
      {jfk_, pipeline::JobOptions{"transcribe", "klingon", "", 0.0, false}},
      {jfk_, pipeline::JobOptions{"transcribe", "de", "", 0.4, false}},
  };
  const auto together = run(jobs, 4);
  ASSERT_EQ(together.size(), jobs.size());

  const Outcome& bad = together.at(3);
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.error.find("klingon"), std::string::npos) << bad.error;

  for (const int i : {0, 1, 2, 4}) {
    const Outcome& t = together.at(i);
    ASSERT_TRUE(t.ok) << i << ": " << t.error;
    ASSERT_FALSE(t.transcript.segments.empty()) << i;
    if (i == 4) continue;  // sampled: its draws depend on what it shares a decoding with
    const auto alone = run({jobs[static_cast<std::size_t>(i)]}, 1);
    EXPECT_EQ(tokens(t.transcript), tokens(alone.at(0).transcript)) << "job " << i;
    EXPECT_EQ(t.transcript.language, alone.at(0).transcript.language) << "job " << i;
  }
  EXPECT_EQ(together.at(0).transcript.task, "transcribe");
  EXPECT_EQ(together.at(0).transcript.language, "en");
  EXPECT_EQ(together.at(1).transcript.task, "translate");
  EXPECT_EQ(together.at(1).transcript.language, "fr");
  EXPECT_FALSE(together.at(1).transcript.segments[0].words.empty()) << "word timings asked for";
  EXPECT_TRUE(together.at(0).transcript.segments[0].words.empty()) << "and only there";
  EXPECT_FALSE(together.at(2).transcript.language.empty()) << "detected";
  EXPECT_EQ(together.at(4).transcript.language, "de");
  for (const Segment& s : together.at(4).transcript.segments)
    EXPECT_DOUBLE_EQ(s.temperature, 0.4);
  for (const Segment& s : together.at(0).transcript.segments)
    EXPECT_DOUBLE_EQ(s.temperature, 0.0);
  // Another task, language and prompt change the decoding.
  EXPECT_NE(tokens(together.at(0).transcript), tokens(together.at(1).transcript));
}

}  // namespace
}  // namespace ifw::test
