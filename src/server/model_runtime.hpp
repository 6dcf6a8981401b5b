// A model as the server runs it: the weights on a backend, and the scheduler — a Transcriber on
// a thread of its own, decoding the windows of every request for this model in shared batches
// from a bounded queue. What the model cache holds; releasing it stops the scheduler.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "backend/backend.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "pipeline/job_source.hpp"
#include "pipeline/transcriber.hpp"
#include "server/model_cache.hpp"

namespace ifw::server {

// Requests' windows decoded together on the CPU unless told: each request gets a window in
// turn, and a larger batch mostly lengthens every request's wait for its next window.
inline constexpr int kCpuBatch = 8;

struct RuntimeOptions {
  int threads = 0;                 // CPU threads (0: one per usable core)
  std::string device = "auto";     // as --device: auto, cpu, cuda, cuda:N
  std::string precision = "auto";  // as --precision
  int batch_size = 0;              // windows decoded together (0: kCpuBatch, or planned on a GPU)
  int max_open_jobs = 16;          // requests decoded side by side
  int queue_capacity = 64;         // requests waiting beyond those; more are refused (429)
  int max_new_tokens = 224;        // per window
};

class ModelRuntime final : public CachedModel {
 public:
  // Loads the model folder and starts its scheduler. Throws ifw::Error naming what is wrong.
  ModelRuntime(const std::filesystem::path& folder, const RuntimeOptions& options);
  ~ModelRuntime() override;
  ModelRuntime(const ModelRuntime&) = delete;
  ModelRuntime& operator=(const ModelRuntime&) = delete;

  // The weights where they were loaded, and a CPU copy once one was loaded (after the GPU ran
  // out of memory for one window, or failed).
  std::size_t resident_bytes() const override {
    return resident_bytes_ + transcriber_->cpu_copy_bytes();
  }
  bool device_failed() const override { return transcriber_->device_failed(); }
  // Refuses new jobs, lets the queued and running ones end (cancelled when `cancel_running`
  // was set by stop()), and joins the scheduler. Idempotent.
  void unload() override;
  // Cancels what runs and waits: jobs end partial, those still queued fail.
  void stop();

  // Called on the scheduler's thread for each of a job's progress events (a window's text for
  // streaming, progress for job records): must be quick and must not throw.
  using ProgressListener = std::function<void(const pipeline::ProgressEvent&)>;

  // Queues a job (its id is set here); the future gets its result. nullopt when the queue is
  // full or the runtime is stopping.
  std::optional<std::future<pipeline::FileResult>> submit(pipeline::Job job,
                                                          ProgressListener on_progress = {});
  std::size_t waiting() const { return queue_.waiting(); }
  // Answers the queued jobs whose token was cancelled now (failed, "cancelled before it
  // started") rather than when the scheduler reaches them.
  void withdraw_cancelled();
  // The scheduler stopped on an error (logged): nothing more is taken; the model should go.
  bool failed() const { return failed_.load(); }
  const model::ModelFolder& folder() const { return *folder_; }

 private:
  void serve();  // the scheduler thread

  std::unique_ptr<model::ModelFolder> folder_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<engine::WhisperModel> model_;
  std::unique_ptr<pipeline::Transcriber> transcriber_;
  std::size_t resident_bytes_ = 0;
  pipeline::JobQueue queue_;
  pipeline::CancellationToken stop_;
  std::mutex mutex_;
  struct Pending {
    std::promise<pipeline::FileResult> result;
    ProgressListener on_progress;
  };
  std::map<int, Pending> pending_;
  int next_id_ = 0;
  std::atomic<bool> failed_{false};
  std::mutex join_mutex_;  // stop() and unload() may come from two threads at once
  std::thread thread_;
};

}  // namespace ifw::server
