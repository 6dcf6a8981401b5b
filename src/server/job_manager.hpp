// The server's jobs (POST /v1/jobs): uploads kept in the data folder, records in the job store,
// a dispatcher that hands a few jobs at a time to the models' schedulers, every decoded window
// stored as it comes, live events, and what a restart finds: finished results kept, queued jobs
// run, interrupted ones resumed from their first unfinished window. Retention limits remove the
// oldest ended jobs.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/job_events.hpp"
#include "server/job_store.hpp"
#include "server/transcription_service.hpp"

namespace ifw::server {

struct JobsOptions {
  std::filesystem::path data_dir;
  double keep_results_days = 30.0;                       // ended jobs older than this go (0: kept)
  std::int64_t max_data_bytes = std::int64_t{10} << 30;  // results and uploads; oldest ended go
  int max_files_per_request = 100;
  int max_jobs = 1000;  // queued and running at once; more are refused (429)
  int concurrency = 4;  // jobs handed to the schedulers at once (their windows share batches)
};

// The options of POST /v1/jobs, for every file of the request.
struct JobRequest {
  std::string model;
  std::string task = "transcribe";
  std::optional<std::string> language;
  std::string prompt;
  double temperature = 0.0;
  bool word_timestamps = false;
};

struct UploadedFile {
  std::string name;  // as the client sent it
  std::string_view bytes;
};

class JobManager {
 public:
  // Locks the data folder (one server per folder), opens the store, recovers what a stop left
  // and starts the dispatcher. Throws ifw::Error naming the folder and the reason.
  JobManager(TranscriptionService& service, JobsOptions options);
  ~JobManager();  // stop()
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Checks every file (opened and decoded a little: audio or video with sound), stores them and
  // queues a job each, all or none. Throws ApiError: 400 naming a bad file or option, 404 unknown
  // model, 429 too many jobs, 503 shutting down.
  std::vector<JobRecord> submit(const JobRequest& request, const std::vector<UploadedFile>& files);
  std::vector<JobRecord> list() const;
  JobRecord get(const std::string& id) const;  // ApiError 404
  // A queued or running job is cancelled (a running one keeps what it finished, as a partial
  // result); waits a little for a running one to stop. ApiError 404, 409 for an ended job.
  JobRecord cancel(const std::string& id);
  // An ended job and its result go. ApiError 404, 409 for a job that has not ended.
  void remove(const std::string& id);
  // The transcript of a job that has one; ApiError 404, 409 when there is none (yet).
  Transcript result(const std::string& id) const;

  const JobEvents& events() const { return events_; }
  // For /metrics: jobs by status.
  std::vector<std::pair<JobStatus, std::int64_t>> count_by_status() const {
    return store_->count_by_status();
  }
  // The job object of the API.
  static nlohmann::ordered_json to_json(const JobRecord& job);
  const JobsOptions& options() const { return options_; }

  // A shutdown: nothing more is started; event streams end; running jobs are stopped at their
  // next batch and left to resume at the next start (their finished windows are stored). False
  // when some had not stopped by the deadline (the process may then exit without them: the next
  // start resumes them). Only the first call does anything.
  bool stop(std::chrono::steady_clock::time_point deadline =
                std::chrono::steady_clock::time_point::max());

 private:
  struct Running;
  class DataLock;
  void recover();
  void dispatch();  // the dispatcher thread
  void join_ended(std::unique_lock<std::mutex>& lock);
  bool start_next(std::unique_lock<std::mutex>& lock);
  void wait_for(std::shared_ptr<Running> running);  // a running job's thread
  void on_progress(Running& running, const pipeline::ProgressEvent& e);
  void publish(const JobRecord& job, std::string_view type);
  void remove_upload(JobRecord& job) const;
  bool record_end(JobRecord& job, const std::optional<Transcript>& result);
  void end_without_result(JobRecord job, const std::string& message, const std::string& code);
  // Removes ended jobs past --keep-results, and the oldest ended ones while over the budget
  // (never `just_ended`, nor the newest). Runs at the start, when a job ends and now and then
  // from the dispatcher (results expire on an idle server too).
  void apply_retention(const std::string& just_ended = "");
  std::chrono::steady_clock::duration retention_interval() const;
  std::filesystem::path upload_path(const JobRecord& job) const;

  TranscriptionService& service_;
  JobsOptions options_;
  std::filesystem::path uploads_;
  std::unique_ptr<DataLock> lock_;
  std::unique_ptr<JobStore> store_;
  JobEvents events_;

  mutable std::mutex mutex_;
  std::mutex retention_mutex_;  // one sweep at a time (job threads and the dispatcher)
  std::condition_variable changed_;
  std::deque<std::string> queue_;  // queued jobs, in order
  std::map<std::string, std::shared_ptr<Running>> running_;
  std::vector<std::shared_ptr<Running>> ended_;  // their threads to join
  // A job whose model failed goes back in line this many times at most, then fails.
  static constexpr int kModelAttempts = 3;
  std::map<std::string, int> model_failures_;
  int reserved_ = 0;  // jobs of requests being stored, counted against --max-jobs
  bool stopping_ = false;
  std::thread dispatcher_;
};

}  // namespace ifw::server
