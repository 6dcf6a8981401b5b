// The server's per-model scheduler on a reference model: concurrent requests get what a serial
// run gives, a full queue refuses, and stopping ends every request with an answer.
#include "server/model_runtime.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "server/model_cache.hpp"
#include "support/audio_files.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using server::ModelRuntime;
using server::RuntimeOptions;

std::vector<std::vector<int>> tokens(const pipeline::FileResult& r) {
  std::vector<std::vector<int>> all;
  for (const Segment& s : r.transcript.segments)
    all.emplace_back(s.tokens.begin(), s.tokens.end());
  return all;
}

class ModelRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    IFW_REQUIRE_GOLDEN();
    model_dir_ = *golden_dir() / "models" / "tiny-random-v3";
    jfk_ = jfk();
  }
  static pipeline::Job job(const std::string& path, const char* language) {
    return pipeline::Job(path, pipeline::JobOptions{"transcribe", language, "", 0.0, false});
  }
  std::filesystem::path model_dir_;
  std::string jfk_;
};

TEST_F(ModelRuntimeTest, ConcurrentRequestsGetWhatSerialOnesGet) {
  RuntimeOptions o;
  o.threads = 2;
  o.batch_size = 4;
  o.max_new_tokens = 16;
  server::ModelCache cache(
      [&](const std::string& name) { return std::make_unique<ModelRuntime>(name, o); },
      {.max_models = 1, .memory_budget = {}, .eager_release = false});
  const char* languages[] = {"en", "de", "fr", "en", "ja", "es"};

  std::vector<std::vector<std::vector<int>>> serial;
  {
    const server::ModelLease lease = cache.acquire(model_dir_.string());
    for (const char* language : languages) {
      auto result = lease.as<ModelRuntime>().submit(job(jfk_, language));
      ASSERT_TRUE(result);
      const pipeline::FileResult r = result->get();
      ASSERT_TRUE(r.ok) << r.error;
      serial.push_back(tokens(r));
    }
  }
  std::vector<std::vector<std::vector<int>>> concurrent(std::size(languages));
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < std::size(languages); ++i) {
    clients.emplace_back([&, i] {
      const server::ModelLease lease = cache.acquire(model_dir_.string());
      auto result = lease.as<ModelRuntime>().submit(job(jfk_, languages[i]));
      ASSERT_TRUE(result);
      const pipeline::FileResult r = result->get();
      EXPECT_TRUE(r.ok) << r.error;
      concurrent[i] = tokens(r);
    });
  }
  for (auto& c : clients)
    c.join();
  EXPECT_EQ(concurrent, serial);
  EXPECT_EQ(cache.stats().loads, 1u);
  EXPECT_GT(cache.stats().resident_bytes, 0u);
}

TEST_F(ModelRuntimeTest, AFullQueueRefusesAndStoppingAnswersEveryone) {
  // One job decoding at a time (a long one), one waiting: of four submitted at once, some are
  // refused.
  const TempDir dir;
  const auto long_file = dir / "long.wav";
  write_repeated_wav(jfk_, 8, long_file);
  RuntimeOptions o;
  o.threads = 2;
  o.batch_size = 1;
  o.max_open_jobs = 1;
  o.queue_capacity = 1;
  o.max_new_tokens = 200;
  // The long job's first event: it has been opened, so stopping finds it running. (Declared
  // before the runtime, whose scheduler may call the listener until it is gone.)
  std::promise<void> opened;
  std::atomic<bool> told{false};
  const auto on_progress = [&](const pipeline::ProgressEvent&) {
    if (!told.exchange(true)) opened.set_value();
  };
  ModelRuntime runtime(model_dir_, o);
  std::vector<std::future<pipeline::FileResult>> accepted;
  int refused = 0;
  for (int i = 0; i < 4; ++i) {
    auto r = runtime.submit(
        job(i == 0 ? long_file.string() : jfk_, "en"),
        i == 0 ? ModelRuntime::ProgressListener(on_progress) : ModelRuntime::ProgressListener());
    if (r) {
      accepted.push_back(std::move(*r));
    } else {
      ++refused;
    }
  }
  EXPECT_GE(refused, 1) << "one job open and one queued at most";
  ASSERT_GE(accepted.size(), 1u);
  ASSERT_LE(accepted.size(), 2u);
  ASSERT_EQ(opened.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  const auto begin = std::chrono::steady_clock::now();
  runtime.stop();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count(), 5.0);
  for (auto& f : accepted)
    ASSERT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  // The running job was cancelled (partial); a queued one was never started.
  const pipeline::FileResult running = accepted[0].get();
  EXPECT_FALSE(running.ok);
  EXPECT_TRUE(running.transcript.partial);
  EXPECT_NE(running.error.find("cancelled"), std::string::npos) << running.error;
  EXPECT_LT(running.transcript.duration, 88.0);
  if (accepted.size() == 2) {
    const pipeline::FileResult queued = accepted[1].get();
    EXPECT_FALSE(queued.ok);
    EXPECT_NE(queued.error.find("released"), std::string::npos) << queued.error;
  }
  EXPECT_FALSE(runtime.submit(job(jfk_, "en"))) << "stopped";
}

}  // namespace
}  // namespace ifw::test
