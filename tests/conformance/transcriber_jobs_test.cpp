// Jobs with options of their own (the server's requests) decoded in shared batches: each gets
// what it gets alone, and a job whose options do not suit the model fails without the others.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/transcriber.hpp"
#include "support/audio_files.hpp"
#include "support/delegating_backend.hpp"
#include "support/expect_error.hpp"
#include "support/golden.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

struct Outcome {
  bool ok = false;
  std::string error;
  Transcript transcript;
};

class TranscriberRuns : public ::testing::Test {
 protected:
  pipeline::TranscribeOptions options() const {
    pipeline::TranscribeOptions with;
    with.prepare_ahead = prepare_ahead_;
    return with;
  }
  // English, greedy, short windows' worth of tokens; windows read ahead or not.
  static pipeline::TranscribeOptions english(std::optional<bool> ahead, int batch_size,
                                             int max_new_tokens) {
    pipeline::TranscribeOptions o;
    o.prepare_ahead = ahead;
    o.batch_size = batch_size;
    o.max_new_tokens = max_new_tokens;
    o.temperature_increment = 0.0;
    o.language = "en";
    return o;
  }

  void SetUp() override {
    IFW_REQUIRE_GOLDEN();
    folder_ = std::make_unique<model::ModelFolder>(*golden_dir() / "models" / "tiny-random-v3");
    backend_ = backend::make_cpu_backend(2);
    engine::CheckpointWeights weights(folder_->checkpoint());
    model_ = std::make_unique<engine::WhisperModel>(folder_->config(), weights, *backend_);
    jfk_ = jfk();
  }

  std::map<int, Outcome> run(const std::vector<pipeline::Job>& jobs, int batch_size,
                             int max_new_tokens = 24) {
    pipeline::TranscribeOptions o = options();
    o.batch_size = batch_size;
    o.max_new_tokens = max_new_tokens;
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

  // One file through `model` (the fixture's or a constrained one) with short windows in English.
  Outcome transcribe_file(const engine::WhisperModel& model, const std::string& file,
                          int batch_size, bool cpu_fallback = true) {
    pipeline::TranscribeOptions o = options();
    o.batch_size = batch_size;
    o.max_new_tokens = 8;
    o.temperature_increment = 0.0;
    o.language = "en";
    o.cpu_fallback = cpu_fallback;
    pipeline::Transcriber t(*folder_, model, o);
    pipeline::CancellationToken cancel;
    Outcome out;
    t.run(
        {pipeline::Job(file)}, cancel, [](const pipeline::ProgressEvent&) {},
        [&](pipeline::FileResult&& r) {
          out = {r.ok, r.error, std::move(r.transcript)};
        });
    return out;
  }

  // Every job `jobs` gives, through `t`: the outcomes by job id.
  static std::map<int, Outcome> run_all(pipeline::Transcriber& t, pipeline::JobSource& jobs) {
    std::map<int, Outcome> results;
    pipeline::CancellationToken cancel;
    t.run(
        jobs, cancel, [](const pipeline::ProgressEvent&) {},
        [&](pipeline::FileResult&& r) {
          results[r.file] = {r.ok, r.error, std::move(r.transcript)};
        });
    return results;
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
  std::optional<bool> prepare_ahead_;
};

// Every test runs twice: each batch's windows read and their features computed when the batch is
// formed, and ahead of it on other threads while the batch before runs (what a GPU gets).
class TranscriberJobs : public TranscriberRuns, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    prepare_ahead_ = GetParam();
    TranscriberRuns::SetUp();
  }
};

// The CPU backend, except that a new activation tensor above `limit` bytes fails the way device
// memory runs out on a GPU (ErrorKind::kOutOfMemory); weights load as usual.
class MemoryLimitedBackend final : public DelegatingBackend {
 public:
  // `record_steps`: decoder steps "recorded" (run directly), so that the model keeps decoder
  // buffers from batch to batch as it does where a GPU records steps.
  MemoryLimitedBackend(std::unique_ptr<backend::Backend> inner, std::size_t limit,
                       bool record_steps = false)
      : DelegatingBackend(std::move(inner)), limit_(limit), record_steps_(record_steps) {}
  int refusals() const { return refusals_; }
  // Activation tensors made so far, and the largest (in bytes) since forget_largest().
  int allocations() const { return allocations_; }
  std::size_t largest() const { return largest_; }
  void forget_largest() { largest_ = 0; }
  // Memory frees up or fills (another model's, another process's).
  void set_limit(std::size_t limit) { limit_ = limit; }

  std::string description() const override {
    return "memory-limited " + DelegatingBackend::description();
  }
  backend::Tensor empty(const backend::Shape& shape,
                        backend::DType dtype = backend::DType::kF32) override {
    const auto bytes = static_cast<std::size_t>(backend::element_count(shape)) * 4;
    if (bytes > limit_) {
      ++refusals_;
      throw Error(ErrorKind::kOutOfMemory, "test device: " + std::to_string(bytes) + " bytes");
    }
    ++allocations_;
    largest_ = std::max(largest_, bytes);
    return DelegatingBackend::empty(shape, dtype);
  }
  std::unique_ptr<backend::StepGraph> make_step_graph() override {
    return record_steps_ ? std::make_unique<DirectStepGraph>() : nullptr;
  }

 private:
  std::size_t limit_;
  bool record_steps_;
  int refusals_ = 0;
  int allocations_ = 0;
  std::size_t largest_ = 0;
};

// The CPU backend, except that its `fail_at`-th product fails the way a GPU does after a fault in
// a kernel (ErrorKind::kDeviceFailure), and so does every operation after it: CUDA refuses all
// later work in a context that faulted. Page-locked host memory is then plain memory, as the
// CUDA backend's host_buffer gives.
class FailingDeviceBackend final : public DelegatingBackend {
 public:
  static constexpr long kNever = std::numeric_limits<long>::max();
  FailingDeviceBackend(std::unique_ptr<backend::Backend> inner, long fail_at)
      : DelegatingBackend(std::move(inner)), fail_at_(fail_at) {}
  long products() const { return products_; }
  void fail_at(long product) { fail_at_ = product; }
  // The `n`-th release of cached memory finds the device failed (a failure between batches).
  void fail_at_release(int n) { fail_at_release_ = n; }
  // Operations asked for once the device had failed, the failing one included.
  int refused() const { return refused_; }

  backend::HostBuffer host_buffer(std::size_t count) override {
    return failed_ ? backend::HostBuffer(count) : DelegatingBackend::host_buffer(count);
  }
  backend::Tensor empty(const backend::Shape& shape, backend::DType dtype) override {
    refuse_if_failed();
    return DelegatingBackend::empty(shape, dtype);
  }
  backend::Tensor upload(std::span<const float> values, const backend::Shape& shape,
                         backend::DType dtype) override {
    refuse_if_failed();
    return DelegatingBackend::upload(values, shape, dtype);
  }
  void download(const backend::Tensor& t, std::span<float> out) override {
    refuse_if_failed();
    DelegatingBackend::download(t, out);
  }
  void release_cached_memory() override {
    if (++releases_ == fail_at_release_) failed_ = true;
    refuse_if_failed();
    DelegatingBackend::release_cached_memory();
  }
  void linear(const backend::MatrixRef& x, const backend::Tensor& w, const backend::Tensor* bias,
              backend::Activation act, const backend::MatrixRef& y, std::int64_t rows,
              bool accumulate) override {
    if (++products_ >= fail_at_) failed_ = true;
    refuse_if_failed();
    DelegatingBackend::linear(x, w, bias, act, y, rows, accumulate);
  }
  void layer_norm(const backend::Tensor& x, const backend::Tensor* shift,
                  const backend::Tensor& gamma, const backend::Tensor& beta, float eps,
                  backend::Tensor& y) override {
    refuse_if_failed();
    DelegatingBackend::layer_norm(x, shift, gamma, beta, eps, y);
  }
  void conv1d_gelu(const backend::Tensor& x, const backend::Tensor& w, const backend::Tensor& bias,
                   int stride, backend::Tensor& y) override {
    refuse_if_failed();
    DelegatingBackend::conv1d_gelu(x, w, bias, stride, y);
  }
  void attention(const backend::AttentionArgs& args) override {
    refuse_if_failed();
    DelegatingBackend::attention(args);
  }
  void embed(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
             const backend::Tensor& table, const backend::Tensor& positions,
             backend::Tensor& y) override {
    refuse_if_failed();
    DelegatingBackend::embed(ids, pos, table, positions, y);
  }
  void choose_tokens(const backend::Tensor& logits, std::span<const std::uint8_t> flags,
                     std::span<const backend::RowRules> rules,
                     std::span<backend::TokenChoice> out) override {
    refuse_if_failed();
    DelegatingBackend::choose_tokens(logits, flags, rules, out);
  }

 private:
  void refuse_if_failed() {
    if (!failed_) return;
    ++refused_;
    throw Error(ErrorKind::kDeviceFailure,
                "test device: an illegal memory access was encountered (cudaErrorIllegalAddress)");
  }
  long fail_at_;
  long products_ = 0;
  int fail_at_release_ = 0;
  int releases_ = 0;
  std::atomic<bool> failed_{false};  // read by host_buffer on the threads that read ahead
  int refused_ = 0;
};

// A model whose backend is a FailingDeviceBackend that has not failed yet.
struct ModelOnAFailingDevice {
  explicit ModelOnAFailingDevice(const model::ModelFolder& folder)
      : device(backend::make_cpu_backend(2), FailingDeviceBackend::kNever) {
    engine::CheckpointWeights weights(folder.checkpoint());
    model = std::make_unique<engine::WhisperModel>(folder.config(), weights, device);
  }
  FailingDeviceBackend device;
  std::unique_ptr<engine::WhisperModel> model;
};

// A batch that does not fit in device memory is decoded again in halves, and later batches stay
// small: every window is transcribed, with the tokens of an unconstrained run.
TEST_P(TranscriberJobs, ABatchThatDoesNotFitRunsInHalves) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 12, file);  // 132 s: five windows
  // tiny-random-v3's q|k|v for 1500 positions takes 2.3 MB per window: 4 windows do not fit in
  // 5 MB, 2 do.
  MemoryLimitedBackend limited(backend::make_cpu_backend(2), 5u << 20);
  engine::CheckpointWeights weights(folder_->checkpoint());
  const engine::WhisperModel model(folder_->config(), weights, limited);
  const Outcome constrained = transcribe_file(model, file.string(), 4);
  ASSERT_TRUE(constrained.ok) << constrained.error;
  EXPECT_GE(limited.refusals(), 1) << "the limit was never reached: the test proves nothing";
  const Outcome free = transcribe_file(*model_, file.string(), 1);
  ASSERT_TRUE(free.ok) << free.error;
  EXPECT_EQ(tokens(constrained.transcript), tokens(free.transcript));
  EXPECT_EQ(constrained.transcript.segments.back().end, free.transcript.segments.back().end);
}

// A batch that runs out of device memory while the model keeps decoder buffers from earlier
// batches (where steps are recorded) is tried once more without them before it is halved: the
// same tokens, and exactly one refusal more than where nothing is kept.
TEST_P(TranscriberJobs, WithDecoderBuffersKeptTheBatchIsTriedAgainBeforeItIsHalved) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 12, file);  // 132 s: five windows
  const auto run = [&](bool record_steps) {
    MemoryLimitedBackend limited(backend::make_cpu_backend(2), 64u << 20, record_steps);
    engine::CheckpointWeights weights(folder_->checkpoint());
    const engine::WhisperModel model(folder_->config(), weights, limited);
    pipeline::Transcriber t(*folder_, model, english(prepare_ahead_, 2, 8));
    pipeline::CancellationToken cancel;
    Outcome out;
    t.run(
        {pipeline::Job(file.string())}, cancel,
        [&](const pipeline::ProgressEvent& e) {
          // After the first batch: two windows' q|k|v (4.6 MB) no longer fit, one does.
          if (e.kind == pipeline::ProgressEvent::Kind::kWindowDone) limited.set_limit(3u << 20);
        },
        [&](pipeline::FileResult&& r) {
          out = {r.ok, r.error, std::move(r.transcript)};
        });
    return std::make_pair(out, limited.refusals());
  };
  const auto [kept, kept_refusals] = run(true);
  const auto [plain, plain_refusals] = run(false);
  ASSERT_TRUE(kept.ok) << kept.error;
  ASSERT_TRUE(plain.ok) << plain.error;
  EXPECT_GE(plain_refusals, 1) << "the limit was never reached: the test proves nothing";
  EXPECT_EQ(kept_refusals, plain_refusals + 1);
  EXPECT_EQ(tokens(kept.transcript), tokens(plain.transcript));
}

// When not even one window fits in device memory, the run goes on with the model loaded on the
// CPU (the tokens of an unconstrained run); told not to, it fails naming the reason.
TEST_P(TranscriberJobs, AWindowThatDoesNotFitOnTheDeviceRunsOnTheCpu) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 6, file);                                     // 66 s: three windows
  MemoryLimitedBackend limited(backend::make_cpu_backend(2), 1u << 20);  // not one window
  engine::CheckpointWeights weights(folder_->checkpoint());
  const engine::WhisperModel model(folder_->config(), weights, limited);
  const Outcome on_cpu = transcribe_file(model, file.string(), 2);
  ASSERT_TRUE(on_cpu.ok) << on_cpu.error;
  EXPECT_GE(limited.refusals(), 2) << "the batch and its half were refused";
  const Outcome free = transcribe_file(*model_, file.string(), 2);
  ASSERT_TRUE(free.ok) << free.error;
  EXPECT_EQ(tokens(on_cpu.transcript), tokens(free.transcript));

  // The run stops (what was finished was handed over), as for any device failure.
  EXPECT_IFW_ERROR(transcribe_file(model, file.string(), 2, false),
                   "one window does not fit on the device");
}

// A server whose requests come one at a time, each once the run has nothing open and waits
// (next(true)); `arrives(id)` runs just before request `id` is handed over.
class RequestsOneAtATime final : public pipeline::JobSource {
 public:
  RequestsOneAtATime(std::string path, int count, std::function<void(int)> arrives)
      : path_(std::move(path)), count_(count), arrives_(std::move(arrives)) {}
  std::optional<pipeline::Job> next(bool wait) override {
    if (!wait || finished()) return std::nullopt;  // none is waiting while the run is busy
    ++handed_;
    arrives_(handed_);
    return pipeline::Job(path_, std::nullopt, handed_);
  }
  bool finished() const override { return handed_ >= count_; }

 private:
  std::string path_;
  int count_;
  std::function<void(int)> arrives_;
  int handed_ = 0;
};

// A server's model that ran out of device memory goes back to the device, with its whole batch,
// once it has nothing to do: what did not fit during one request (another model's memory, say)
// is tried again for the next, instead of staying on the CPU or in halves until a reload.
TEST_P(TranscriberJobs, AfterRunningOutOfDeviceMemoryTheNextRequestTriesTheDeviceAgain) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 6, file);  // 66 s: three windows
  constexpr std::size_t kNoLimit = std::numeric_limits<std::size_t>::max();
  MemoryLimitedBackend limited(backend::make_cpu_backend(2), kNoLimit);
  engine::CheckpointWeights weights(folder_->checkpoint());
  const engine::WhisperModel model(folder_->config(), weights, limited);
  pipeline::Transcriber t(*folder_, model, english(prepare_ahead_, 4, 8));

  int refusals_before_3 = 0, allocations_before_2 = 0;
  // The device's memory changes between requests (other models, other processes).
  RequestsOneAtATime requests(file.string(), 4, [&](int id) {
    if (id == 1) {
      limited.set_limit(1u << 20);  // not one window: the CPU
    } else if (id == 2) {
      limited.set_limit(kNoLimit);  // freed
      allocations_before_2 = limited.allocations();
    } else if (id == 3) {
      limited.set_limit(5u << 20);  // three windows do not fit, smaller batches do
      refusals_before_3 = limited.refusals();
    } else {
      limited.set_limit(kNoLimit);
      limited.forget_largest();
    }
  });
  const std::map<int, Outcome> results = run_all(t, requests);
  ASSERT_EQ(results.size(), 4u);
  for (const auto& [id, outcome] : results)
    ASSERT_TRUE(outcome.ok) << id << ": " << outcome.error;
  EXPECT_GE(refusals_before_3, 2) << "the first request did not run out of memory";
  EXPECT_GT(limited.allocations(), allocations_before_2)
      << "the second request stayed on the CPU copy";
  EXPECT_GT(limited.refusals(), refusals_before_3) << "the third request's batch fitted";
  EXPECT_GT(limited.largest(), std::size_t{5} << 20)
      << "the fourth request ran in the third one's halved batches";
  for (const int id : {2, 3, 4})
    EXPECT_EQ(tokens(results.at(id).transcript), tokens(results.at(1).transcript)) << id;
}

// A device that fails for good during a run (a fault in a kernel): the batch it was running runs
// again on the CPU and so does everything after, this request's and the next ones' (the device
// is never asked again), with the tokens of an unconstrained run.
TEST_P(TranscriberJobs, AfterTheDeviceFailsEverythingRunsOnTheCpu) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 12, file);  // 132 s: five windows, three batches of two
  long products_per_request = 0;
  {
    ModelOnAFailingDevice counting(*folder_);
    const long loading = counting.device.products();
    const Outcome whole = transcribe_file(*counting.model, file.string(), 2);
    ASSERT_TRUE(whole.ok) << whole.error;
    products_per_request = counting.device.products() - loading;
  }
  ASSERT_GT(products_per_request, 10);
  ModelOnAFailingDevice on(*folder_);
  FailingDeviceBackend& failing = on.device;
  const engine::WhisperModel& model = *on.model;
  failing.fail_at(failing.products() + products_per_request / 2);  // the first request's 2nd batch
  pipeline::Transcriber t(*folder_, model, english(prepare_ahead_, 2, 8));
  RequestsOneAtATime requests(file.string(), 2, [](int) {});
  const std::map<int, Outcome> results = run_all(t, requests);
  ASSERT_EQ(results.size(), 2u);
  for (const auto& [id, outcome] : results)
    ASSERT_TRUE(outcome.ok) << id << ": " << outcome.error;
  EXPECT_TRUE(t.device_failed());
  EXPECT_EQ(failing.refused(), 1) << "the failed device was asked again";
  EXPECT_EQ(t.cpu_copy_bytes(),
            static_cast<std::size_t>(folder_->checkpoint().parameter_count()) * sizeof(float));
  const Outcome free = transcribe_file(*model_, file.string(), 2);
  ASSERT_TRUE(free.ok) << free.error;
  for (const int id : {1, 2})
    EXPECT_EQ(tokens(results.at(id).transcript), tokens(free.transcript)) << id;
}

// A device found failed between requests (an uncorrectable memory error while idle, another
// model's fault on the same GPU) leaves the next request on the CPU too, instead of stopping the
// run and with it every request a server's model has.
TEST_P(TranscriberJobs, ADeviceThatFailsBetweenRequestsLeavesTheNextOnTheCpu) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 6, file);  // 66 s: three windows
  ModelOnAFailingDevice on(*folder_);
  FailingDeviceBackend& failing = on.device;
  const engine::WhisperModel& model = *on.model;
  const long loading = failing.products();
  failing.fail_at_release(2);  // the first is the run's own before the first request
  pipeline::Transcriber t(*folder_, model, english(prepare_ahead_, 2, 8));
  long first_request = 0;
  RequestsOneAtATime requests(file.string(), 2, [&](int id) {
    if (id == 2) first_request = failing.products() - loading;
  });
  const std::map<int, Outcome> results = run_all(t, requests);
  ASSERT_EQ(results.size(), 2u);
  for (const auto& [id, outcome] : results)
    ASSERT_TRUE(outcome.ok) << id << ": " << outcome.error;
  EXPECT_GT(first_request, 0) << "the first request did not run on the device";
  EXPECT_TRUE(t.device_failed());
  EXPECT_EQ(failing.refused(), 1) << "the failed device was asked again";
  EXPECT_EQ(tokens(results.at(2).transcript), tokens(results.at(1).transcript));
}

// Told not to fall back, the run stops on a device failure with its reason (what was finished
// before was handed over).
TEST_P(TranscriberJobs, WithoutTheCpuFallbackADeviceFailureStopsTheRun) {
  const TempDir dir;
  const auto file = dir / "long.wav";
  write_repeated_wav(jfk_, 6, file);  // 66 s: three windows
  ModelOnAFailingDevice on(*folder_);
  FailingDeviceBackend& failing = on.device;
  const engine::WhisperModel& model = *on.model;
  failing.fail_at(failing.products() + 1);  // the run's first product
  try {
    transcribe_file(model, file.string(), 2, false);
    ADD_FAILURE() << "the run went on after its device failed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDeviceFailure) << e.what();
    EXPECT_NE(std::string(e.what()).find("illegal memory access"), std::string::npos) << e.what();
  }
  EXPECT_EQ(failing.refused(), 1);
}

TEST_P(TranscriberJobs, EachJobGetsWhatItGetsAlone) {
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

// Jobs that keep coming: a short one submitted after a long one finishes first (batches take a
// window of each open job in turn), a job that arrives during the run is done in it, a job whose
// requester gives up ends with what it has, and the run ends when the queue is closed.
TEST_P(TranscriberJobs, JobsThatKeepComingAreServedInTurn) {
  const TempDir dir;
  const auto long_file = dir / "long.wav";
  write_repeated_wav(jfk_, 8, long_file);  // 88 s: 3 windows or more
  pipeline::TranscribeOptions o = options();
  o.batch_size = 2;
  o.max_new_tokens = 8;
  o.temperature_increment = 0.0;
  o.language = "en";
  o.max_open_jobs = 8;
  pipeline::Transcriber t(*folder_, *model_, o);
  pipeline::JobQueue queue(16);
  auto give_up = std::make_shared<pipeline::CancellationToken>();
  ASSERT_TRUE(queue.submit({long_file.string(), std::nullopt, 1, nullptr}));
  ASSERT_TRUE(queue.submit({jfk_, std::nullopt, 2, nullptr}));
  ASSERT_TRUE(queue.submit({long_file.string(), std::nullopt, 3, give_up}));

  std::vector<int> order;
  std::map<int, Outcome> results;
  pipeline::CancellationToken cancel;
  t.run(
      queue, cancel,
      [&](const pipeline::ProgressEvent& e) {
        if (e.kind == pipeline::ProgressEvent::Kind::kWindowDone && e.file == 3) give_up->cancel();
      },
      [&](pipeline::FileResult&& r) {
        order.push_back(r.file);
        if (r.file == 2) {
          // Arrives while the long one runs.
          EXPECT_TRUE(queue.submit({jfk_, std::nullopt, 4, nullptr}));
        }
        results[r.file] = {r.ok, r.error, std::move(r.transcript)};
        if (results.size() == 4) queue.close();
      });
  ASSERT_EQ(order.size(), 4u);
  // The job that came during the run took a place the windows read ahead were meant for: they
  // waited for the next batch, which read fewer.
  EXPECT_LE(t.most_windows_ahead(), 2);
  if (GetParam()) {
    EXPECT_GE(t.windows_read_ahead(), 2);
  }
  EXPECT_EQ(order.front(), 2) << "the short job first, although the long one came before it";
  EXPECT_TRUE(results.at(1).ok) << results.at(1).error;
  EXPECT_TRUE(results.at(2).ok);
  EXPECT_TRUE(results.at(4).ok);
  EXPECT_NEAR(results.at(1).transcript.duration, 88.0, 0.1);
  EXPECT_FALSE(results.at(3).ok);
  EXPECT_TRUE(results.at(3).transcript.partial);
  EXPECT_NE(results.at(3).error.find("cancelled"), std::string::npos) << results.at(3).error;
  EXPECT_LT(results.at(3).transcript.duration, 88.0);
  // What a job gets does not depend on what it shared its batches with.
  const pipeline::JobOptions english{"transcribe", "en", "", 0.0, false};
  const auto alone = run({{jfk_, english}, {long_file.string(), english}}, 1, 8);
  EXPECT_EQ(tokens(results.at(2).transcript), tokens(alone.at(0).transcript));
  EXPECT_EQ(tokens(results.at(1).transcript), tokens(alone.at(1).transcript));
}

// A job started again after a stop (a server killed mid-job) takes the windows it had finished
// from its ResumeState and decodes only the others; the transcript is the one an uninterrupted
// run gives, and the language detected before is not detected again.
TEST_P(TranscriberJobs, AResumedJobDecodesOnlyItsUnfinishedWindows) {
  const TempDir dir;
  const auto long_file = dir / "long.wav";
  write_repeated_wav(jfk_, 8, long_file);  // 88 s: 3 windows or more
  pipeline::TranscribeOptions o = options();
  o.batch_size = 2;
  o.max_new_tokens = 8;
  o.temperature_increment = 0.0;
  o.word_timings = true;

  const auto run_with = [&](std::shared_ptr<const pipeline::ResumeState> resume,
                            std::vector<pipeline::ProgressEvent>& windows) {
    pipeline::Transcriber t(*folder_, *model_, o);
    pipeline::Job job(long_file.string());
    job.id = 7;
    job.resume = std::move(resume);
    pipeline::CancellationToken cancel;
    Outcome out;
    t.run(
        std::vector<pipeline::Job>{job}, cancel,
        [&](const pipeline::ProgressEvent& e) {
          if (e.kind == pipeline::ProgressEvent::Kind::kWindowDone) windows.push_back(e);
        },
        [&](pipeline::FileResult&& r) {
          out = {r.ok, r.error, std::move(r.transcript)};
        });
    return out;
  };

  std::vector<pipeline::ProgressEvent> first_windows;
  const Outcome whole = run_with(nullptr, first_windows);
  ASSERT_TRUE(whole.ok) << whole.error;
  ASSERT_GE(first_windows.size(), 3u);
  std::size_t segments = 0;
  for (const auto& e : first_windows) {
    EXPECT_FALSE(e.restored);
    EXPECT_GE(e.window_start, 0);
    EXPECT_FALSE(e.language.empty());
    segments += e.segments.size();
  }
  EXPECT_EQ(segments, whole.transcript.segments.size())
      << "the windows' events carry every segment of the transcript";

  // The first and the last window were finished before the stop; the language was detected.
  auto resume = std::make_shared<pipeline::ResumeState>();
  resume->language = whole.transcript.language;
  for (const auto* e : {&first_windows.front(), &first_windows.back()})
    resume->windows[e->window_start] = {e->frames_consumed, e->segments};
  std::vector<pipeline::ProgressEvent> second_windows;
  const Outcome resumed = run_with(resume, second_windows);
  ASSERT_TRUE(resumed.ok) << resumed.error;
  ASSERT_EQ(second_windows.size(), first_windows.size());
  int restored = 0;
  for (const auto& e : second_windows) {
    restored += e.restored ? 1 : 0;
    EXPECT_EQ(e.restored, resume->windows.contains(e.window_start)) << e.window_start;
  }
  EXPECT_EQ(restored, 2);
  EXPECT_EQ(tokens(resumed.transcript), tokens(whole.transcript));
  EXPECT_EQ(resumed.transcript.text(), whole.transcript.text());
  EXPECT_EQ(resumed.transcript.language, whole.transcript.language);
  ASSERT_EQ(resumed.transcript.segments.size(), whole.transcript.segments.size());
  for (std::size_t i = 0; i < whole.transcript.segments.size(); ++i) {
    EXPECT_EQ(resumed.transcript.segments[i].id, static_cast<int>(i));
    EXPECT_DOUBLE_EQ(resumed.transcript.segments[i].start, whole.transcript.segments[i].start);
    EXPECT_EQ(resumed.transcript.segments[i].words.size(),
              whole.transcript.segments[i].words.size());
  }
}

// Several files, long and short, in batches that do not divide them: windows read ahead of their
// batch are the ones the batch would have read (every window's event in the same order, the same
// tokens), whether the files are opened one after another (the command line) or together (a
// server).
TEST_F(TranscriberRuns, WindowsReadAheadAreTheOnesTheBatchTakes) {
  const TempDir dir;
  write_repeated_wav(jfk_, 8, dir / "a.wav");   // 88 s
  write_repeated_wav(jfk_, 12, dir / "b.wav");  // 132 s
  struct Run {
    // Every event but "started", in order; the files started (the command line opens files
    // ahead, so their "started" comes earlier).
    std::vector<std::tuple<int, int, std::int64_t, std::string>> events;
    std::set<int> started;
    std::map<int, Outcome> results;
    std::int64_t read_ahead = 0, most_ahead = 0;
  };
  const auto run_with = [&](const std::vector<pipeline::Job>& jobs, bool ahead, int open_jobs) {
    pipeline::TranscribeOptions o = english(ahead, 3, 8);
    o.max_open_jobs = open_jobs;
    pipeline::Transcriber t(*folder_, *model_, o);
    pipeline::CancellationToken cancel;
    Run r;
    t.run(
        jobs, cancel,
        [&](const pipeline::ProgressEvent& e) {
          if (e.kind == pipeline::ProgressEvent::Kind::kFileStarted) {
            r.started.insert(e.file);
          } else {
            r.events.emplace_back(static_cast<int>(e.kind), e.file, e.window_start, e.text);
          }
        },
        [&](pipeline::FileResult&& f) {
          r.results[f.file] = {f.ok, f.error, std::move(f.transcript)};
        });
    r.read_ahead = t.windows_read_ahead();
    r.most_ahead = t.most_windows_ahead();
    return r;
  };
  const std::vector<pipeline::Job> long_and_short = {
      pipeline::Job((dir / "a.wav").string(), std::nullopt, 0),
      pipeline::Job(jfk_, std::nullopt, 1),
      pipeline::Job((dir / "b.wav").string(), std::nullopt, 2)};
  // Clips shorter than a window: the command line opens them ahead so that their windows can be
  // read ahead (none would be otherwise).
  std::vector<pipeline::Job> clips;
  for (int i = 0; i < 7; ++i)
    clips.emplace_back(jfk_, std::nullopt, i);
  for (const auto& [jobs, open_jobs] :
       {std::pair{long_and_short, 0}, std::pair{long_and_short, 8}, std::pair{clips, 0}}) {
    SCOPED_TRACE(testing::Message() << jobs.size() << " files, open jobs " << open_jobs);
    const Run inline_run = run_with(jobs, false, open_jobs);
    const Run ahead_run = run_with(jobs, true, open_jobs);
    EXPECT_EQ(inline_run.read_ahead, 0);
    EXPECT_GE(ahead_run.read_ahead, 3)
        << "the windows were not read ahead: the test proves nothing";
    EXPECT_LE(ahead_run.most_ahead, 3) << "more than a batch waited";
    EXPECT_EQ(ahead_run.events, inline_run.events);
    EXPECT_EQ(ahead_run.started, inline_run.started);
    ASSERT_EQ(ahead_run.results.size(), jobs.size());
    for (const auto& [id, outcome] : ahead_run.results) {
      ASSERT_TRUE(outcome.ok) << id << ": " << outcome.error;
      EXPECT_EQ(tokens(outcome.transcript), tokens(inline_run.results.at(id).transcript)) << id;
      EXPECT_EQ(outcome.transcript.duration, inline_run.results.at(id).transcript.duration) << id;
    }
  }
}

// A resumed job most of whose windows an earlier run finished: the task reading ahead passes
// over those (restored by position, their samples dropped at once) and still holds at most a
// batch of windows with features; what the job gets is what it gets without reading ahead.
TEST_F(TranscriberRuns, ResumedWindowsReadAheadStayWithinABatch) {
  const TempDir dir;
  const auto long_file = dir / "long.wav";
  write_repeated_wav(jfk_, 24, long_file);  // 264 s
  const auto run_with = [&](bool ahead, std::shared_ptr<const pipeline::ResumeState> resume,
                            std::vector<pipeline::ProgressEvent>& windows) {
    pipeline::Transcriber t(*folder_, *model_, english(ahead, 1, 4));
    pipeline::Job job(long_file.string());
    job.resume = std::move(resume);
    pipeline::CancellationToken cancel;
    t.run(
        std::vector<pipeline::Job>{job}, cancel,
        [&](const pipeline::ProgressEvent& e) {
          if (e.kind == pipeline::ProgressEvent::Kind::kWindowDone) windows.push_back(e);
        },
        [&](pipeline::FileResult&&) {});
    return t.most_windows_ahead();
  };
  std::vector<pipeline::ProgressEvent> first;
  run_with(false, nullptr, first);
  ASSERT_GE(first.size(), 8u);
  auto resume = std::make_shared<pipeline::ResumeState>();
  for (std::size_t i = 1; i + 1 < first.size(); ++i)
    resume->windows[first[i].window_start] = {first[i].frames_consumed, first[i].segments};
  std::vector<pipeline::ProgressEvent> inline_windows, ahead_windows;
  run_with(false, resume, inline_windows);
  EXPECT_LE(run_with(true, resume, ahead_windows), 1) << "more than a batch waited";
  ASSERT_EQ(ahead_windows.size(), inline_windows.size());
  for (std::size_t i = 0; i < ahead_windows.size(); ++i) {
    EXPECT_EQ(ahead_windows[i].window_start, inline_windows[i].window_start) << i;
    EXPECT_EQ(ahead_windows[i].restored, inline_windows[i].restored) << i;
    EXPECT_EQ(ahead_windows[i].text, inline_windows[i].text) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Features, TranscriberJobs, ::testing::Bool(), [](const auto& param_info) {
  return param_info.param ? "Ahead" : "Inline";
});

}  // namespace
}  // namespace ifw::test
