// What `ifw serve` does with a transcription request, apart from HTTP: which model a request
// means, leasing it from the cache, keeping the upload on disk, queueing the job on the model's
// scheduler, waiting for it while watching for a client that left or a shutdown, and turning
// every outcome into a transcript or an ApiError. The HTTP layer (http_server.*) sits on top.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ifw/transcript.hpp>

#include "pipeline/cancellation.hpp"
#include "server/model_cache.hpp"
#include "server/model_runtime.hpp"
#include "server/openai_api.hpp"
#include "server/upload_spool.hpp"

namespace ifw::server {

struct ServiceOptions {
  std::string default_model;        // what "whisper-1" and an absent `model` mean
  std::vector<std::string> models;  // further models requests may name, loaded on demand
  RuntimeOptions runtime;
  CacheOptions cache;
  std::filesystem::path upload_dir = std::filesystem::temp_directory_path();
};

// Counters for /metrics.
struct ServiceStats {
  std::uint64_t completed = 0;  // transcripts returned
  std::uint64_t failed = 0;     // requests that ended with an error after being queued
  std::uint64_t abandoned = 0;  // the client left; its work was cancelled
  std::uint64_t rejected_busy = 0;
  double audio_seconds = 0.0;       // of completed requests
  double processing_seconds = 0.0;  // from queueing to result, completed requests
  int in_flight = 0;
  std::int64_t queued = 0;    // waiting in the schedulers' queues, all models
  std::int64_t decoding = 0;  // taken up by a scheduler and not yet answered
};

class TranscriptionService {
 public:
  // A model name (as given on the command line) -> its folder; may download. Throws ifw::Error.
  using Resolver = std::function<std::filesystem::path(const std::string& name)>;

  TranscriptionService(ServiceOptions options, Resolver resolver);
  ~TranscriptionService();
  TranscriptionService(const TranscriptionService&) = delete;
  TranscriptionService& operator=(const TranscriptionService&) = delete;

  // Loads the default model now, so that a bad --model stops the server at start. Throws.
  void load_default_model();

  // The cache key of the model a request names; ApiError 404 for a model the server does not
  // offer.
  std::string model_key(const std::string& requested) const;
  // What /v1/models lists: "whisper-1", the default model and the others.
  std::vector<std::string> model_ids() const;

  // A request that has been queued. Destroying it cancels its job if it is still running, and
  // gives the model and the upload back.
  class Transcription {
   public:
    ~Transcription();
    Transcription(const Transcription&) = delete;
    Transcription& operator=(const Transcription&) = delete;

    // Waits for the transcript. `client_gone` is polled (and `on_poll` called) on this thread
    // every `poll` while it waits; once the client is gone the job is cancelled and nullopt
    // returned. Throws ApiError: 400 for audio that cannot be decoded (the message names the
    // upload, never the server's files), 503 for a shutdown or a failed model.
    std::optional<Transcript> wait(const std::function<bool()>& client_gone,
                                   const std::function<void()>& on_poll = {},
                                   std::chrono::milliseconds poll = std::chrono::milliseconds(50));
    // Waits for the job's result as it is (a job record keeps partial and failed results too),
    // its messages naming the upload rather than the server's file. Counted in the stats as
    // completed or failed.
    pipeline::FileResult result(std::chrono::milliseconds poll = std::chrono::milliseconds(50));
    void cancel() { cancel_->cancel(); }
    // The model's scheduler stopped on an error (the job did not fail for its own reasons).
    bool model_failed() const;

    // Made by TranscriptionService::start.
    struct Key {
      explicit Key() = default;
    };
    Transcription(Key, TranscriptionService& service, ModelLease lease,
                  std::optional<UploadSpool::File> upload, std::string audio_path,
                  std::string upload_name, std::shared_ptr<void> in_flight);

   private:
    friend class TranscriptionService;
    TranscriptionService& service_;
    ModelLease lease_;
    std::optional<UploadSpool::File> upload_;  // a request's upload, removed with this
    std::string audio_path_;
    std::string upload_name_;
    std::shared_ptr<void> in_flight_;  // counted from the start of start() to the end
    std::shared_ptr<pipeline::CancellationToken> cancel_;
    std::future<pipeline::FileResult> result_;
    std::shared_ptr<std::atomic<bool>> started_;  // left the queue (for the queued count)
    std::chrono::steady_clock::time_point queued_at_;
    bool ended_ = false;
  };

  // Leases the model, stores the upload and queues the job. `on_progress` gets the job's
  // progress events on the scheduler's thread (a window's text, for streaming). Throws ApiError:
  // 404 unknown model, 429 queue full, 503 shutting down or model failed, 500 model not loadable.
  std::unique_ptr<Transcription> start(const TranscriptionRequest& request,
                                       ModelRuntime::ProgressListener on_progress = {});
  // The same for a file already on disk (a job's upload, `name` being what its client called
  // it), taking over the windows in `resume`. Not counted as a request in flight: jobs are
  // stopped at a shutdown, not waited for.
  std::unique_ptr<Transcription> start_file(const std::string& audio_path, const std::string& name,
                                            const std::string& model, pipeline::JobOptions options,
                                            std::shared_ptr<const pipeline::ResumeState> resume,
                                            ModelRuntime::ProgressListener on_progress = {});

  // Shutdown, in two steps: refuse new requests (503) — readiness goes false — then, at the
  // deadline, cancel what still runs and anything that still comes (each answered with a 503).
  void begin_shutdown() { shutting_down_ = true; }
  bool shutting_down() const { return shutting_down_.load(); }
  void cancel_all();
  int in_flight() const { return in_flight_.load(); }
  // Until no request is in flight (from the moment start() is called) or the deadline passes;
  // true when none is.
  bool wait_idle(std::chrono::steady_clock::time_point deadline) const;
  // Ready for traffic: the default model loads or is loaded, and no shutdown.
  bool ready() const { return default_loaded_.load() && !shutting_down_.load(); }

  ModelCache& cache() { return cache_; }
  // Where uploads wait (removed by the destructor; by hand before an abrupt exit).
  const std::filesystem::path& upload_folder() const { return spool_.folder(); }
  ServiceStats stats() const;

 private:
  ModelLease lease_model(const std::string& key);
  void submit(Transcription& t, const std::string& key, pipeline::JobOptions options,
              std::shared_ptr<const pipeline::ResumeState> resume,
              ModelRuntime::ProgressListener on_progress);

  ServiceOptions options_;
  UploadSpool spool_;
  ModelCache cache_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> default_loaded_{false};
  std::atomic<int> in_flight_{0};
  std::atomic<std::int64_t> queued_{0}, decoding_{0};
  mutable std::mutex mutex_;
  std::vector<std::weak_ptr<pipeline::CancellationToken>> running_;  // for cancel_all
  bool cancelled_all_ = false;  // requests that come after cancel_all() are cancelled too
  ServiceStats counters_;
};

}  // namespace ifw::server
