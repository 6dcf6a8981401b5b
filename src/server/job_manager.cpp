#include "server/job_manager.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "audio/audio_decoder.hpp"
#include "model/languages.hpp"
#include "server/openai_api.hpp"
#include "server/upload_spool.hpp"
#include "util/atomic_file.hpp"

namespace ifw::server {
namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string new_job_id() {
  static std::mutex mutex;
  static std::mt19937_64 random{std::random_device{}()};
  const std::lock_guard lock(mutex);
  return fmt::format("job_{:016x}", random());
}

// Opens the upload and decodes its first second: what is not audio (or video with sound) is
// refused by what it is, not by its name. Returns its duration (0: unknown).
double probe_audio(const std::filesystem::path& path, const std::string& name) {
  try {
    audio::AudioDecoder decoder(path.string());
    std::vector<float> samples(16000);
    if (decoder.read(samples) == 0 && decoder.duration_seconds() != 0.0)
      throw Error(ErrorKind::kInvalidArgument, "no audio could be decoded from it");
    return std::max(decoder.duration_seconds(), 0.0);
  } catch (const std::exception& e) {
    std::string why = e.what();
    // The decoder's message names the stored file: the client should read its own name.
    for (auto at = why.find(path.string()); at != std::string::npos;
         at = why.find(path.string(), at + name.size()))
      why.replace(at, path.string().size(), name);
    throw ApiError::bad_request(
        fmt::format("'{}' is not an audio or video file with sound that can be decoded: {}", name,
                    why),
        "file", "invalid_audio");
  }
}

nlohmann::ordered_json optional_time(double t) {
  return t > 0.0 ? nlohmann::ordered_json(static_cast<std::int64_t>(t)) : nullptr;
}

}  // namespace

// One server per data folder: an exclusive lock on <data>/lock, held while the manager lives.
class JobManager::DataLock {
 public:
  explicit DataLock(const std::filesystem::path& dir) {
    const auto path = dir / "lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0)
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      char pid[32] = {};
      const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
      ::close(fd_);
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("the data folder {} is in use by another ifw serve (pid {}); "
                              "give each server its own --data-dir",
                              dir.string(),
                              n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : "unknown"));
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0)
      spdlog::warn("cannot write the pid into {}: {}", path.string(), std::strerror(errno));
  }
  ~DataLock() {
    if (::close(fd_) != 0)
      spdlog::warn("releasing the data folder's lock: {}", std::strerror(errno));
  }
  DataLock(const DataLock&) = delete;
  DataLock& operator=(const DataLock&) = delete;

 private:
  int fd_ = -1;
};

struct JobManager::Running {
  std::mutex mutex;  // record, written by the scheduler's thread and read by the API
  JobRecord record;
  std::unique_ptr<TranscriptionService::Transcription> transcription;
  std::atomic<bool> cancel_requested{false};
  std::chrono::steady_clock::time_point started;
  double earlier_processing = 0.0;  // of earlier runs (before a restart)
  std::thread thread;
};

JobManager::JobManager(TranscriptionService& service, JobsOptions options)
    : service_(service), options_(std::move(options)), uploads_(options_.data_dir / "uploads") {
  std::error_code ec;
  std::filesystem::create_directories(uploads_, ec);
  if (ec) {
    throw Error(ErrorKind::kIo, fmt::format("cannot create the data folder {}: {}",
                                            uploads_.string(), ec.message()));
  }
  std::filesystem::permissions(options_.data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  if (ec) spdlog::warn("cannot make {} private: {}", options_.data_dir.string(), ec.message());
  lock_ = std::make_unique<DataLock>(options_.data_dir);
  store_ = std::make_unique<JobStore>(options_.data_dir / "jobs.sqlite3");
  recover();
  apply_retention();
  dispatcher_ = std::thread([this] { dispatch(); });
}

JobManager::~JobManager() {
  stop();
  // Also after a stop that gave up at its deadline: no thread may outlive the manager.
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return running_.empty(); });
  join_ended(lock);
}

// Joins the threads of jobs that have ended; called and returns with the lock held.
void JobManager::join_ended(std::unique_lock<std::mutex>& lock) {
  for (auto& ended : std::exchange(ended_, {})) {
    lock.unlock();
    if (ended->thread.joinable()) ended->thread.join();
    lock.lock();
  }
}

std::filesystem::path JobManager::upload_path(const JobRecord& job) const {
  return uploads_ / job.upload;
}

void JobManager::recover() {
  int resumed = 0, queued = 0, lost = 0;
  std::vector<std::string> kept_uploads;
  for (JobRecord& job : store_->list()) {
    if (has_ended(job.status)) {
      if (!job.upload.empty()) remove_upload(job);  // stopped between the result and removal
      store_->update(job);
      continue;
    }
    std::error_code ec;
    const bool present = !job.upload.empty() && std::filesystem::exists(upload_path(job), ec);
    if (ec) {
      // Cannot tell (permissions, I/O): the job stays; running it will say what is wrong.
      spdlog::error("job {}: cannot check its upload {}: {}", job.id, upload_path(job).string(),
                    ec.message());
    } else if (!present) {
      job.status = JobStatus::kFailed;
      job.error_message = "its uploaded audio is gone from the server's data folder";
      job.error_code = "upload_lost";
      job.finished_at = unix_now();
      job.upload.clear();
      store_->finish(job, std::nullopt);
      ++lost;
      continue;
    }
    if (job.status == JobStatus::kRunning) {
      const int windows = store_->window_count(job.id);
      spdlog::info("job {} ({}) was interrupted: resuming after its {} finished window(s)", job.id,
                   job.file_name, windows);
      job.status = JobStatus::kQueued;
      store_->update(job);
      ++resumed;
    } else {
      ++queued;
    }
    kept_uploads.push_back(job.upload);
    queue_.push_back(job.id);
  }
  // Uploads no job refers to (a stop between storing a file and recording its job, or between
  // recording a job's end and removing its upload).
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(uploads_, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::ranges::find(kept_uploads, name) != kept_uploads.end()) continue;
    std::error_code rm;
    if (!std::filesystem::remove(entry.path(), rm) && rm)
      spdlog::warn("cannot remove the stray upload {}: {}", entry.path().string(), rm.message());
  }
  if (ec) spdlog::warn("cannot list {}: {}", uploads_.string(), ec.message());
  if (resumed + queued + lost > 0) {
    spdlog::info("jobs from before: {} to resume, {} queued, {} failed (upload gone)", resumed,
                 queued, lost);
  }
}

void JobManager::remove_upload(JobRecord& job) const {
  if (job.upload.empty()) return;
  std::error_code ec;
  if (!std::filesystem::remove(upload_path(job), ec) && ec)
    spdlog::warn("cannot remove the upload of job {}: {}", job.id, ec.message());
  job.upload.clear();
}

nlohmann::ordered_json JobManager::to_json(const JobRecord& j) {
  nlohmann::ordered_json o;
  o["id"] = j.id;
  o["object"] = "job";
  o["status"] = status_name(j.status);
  o["file"] = {{"name", j.file_name}, {"bytes", j.file_bytes}, {"duration", j.duration}};
  o["model"] = j.model.empty() ? "whisper-1" : j.model;
  o["task"] = j.task;
  o["language"] = j.language ? nlohmann::ordered_json(*j.language) : nullptr;
  o["options"] = {
      {"language", j.language_requested ? nlohmann::ordered_json(*j.language_requested) : nullptr},
      {"prompt", j.prompt},
      {"temperature", j.temperature},
      {"word_timestamps", j.word_timestamps}};
  o["created_at"] = optional_time(j.created_at);
  o["started_at"] = optional_time(j.started_at);
  o["finished_at"] = optional_time(j.finished_at);
  o["progress"] = {{"windows_done", j.windows_done},
                   {"windows_total", std::max(j.windows_total, j.windows_done)},
                   {"windows_restored", j.windows_restored},
                   {"audio_done", j.audio_done}};
  o["realtime_factor"] = j.processing_seconds > 0.0 && j.audio_done > 0.0
                             ? nlohmann::ordered_json(j.audio_done / j.processing_seconds)
                             : nullptr;
  const double queued = j.started_at > 0.0 ? j.started_at - j.created_at : 0.0;
  o["timings"] = {{"queued_seconds", std::max(queued, 0.0)},
                  {"processing_seconds", j.processing_seconds}};
  o["error"] = j.error_message.empty()
                   ? nlohmann::ordered_json(nullptr)
                   : nlohmann::ordered_json{{"message", j.error_message}, {"code", j.error_code}};
  o["has_result"] = j.has_result;
  return o;
}

void JobManager::publish(const JobRecord& job, std::string_view type) {
  events_.publish(job.id, std::string(type),
                  to_json(job).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::vector<JobRecord> JobManager::submit(const JobRequest& request,
                                          const std::vector<UploadedFile>& files) {
  if (files.empty()) {
    throw ApiError::bad_request("Send one or more files in 'file' parts of a multipart form",
                                "file", "missing_file");
  }
  if (static_cast<int>(files.size()) > options_.max_files_per_request) {
    throw ApiError::bad_request(fmt::format("{} files in one request: at most {} (the server's "
                                            "--max-job-files)",
                                            files.size(), options_.max_files_per_request),
                                "file", "too_many_files");
  }
  const std::string model = service_.model_key(request.model);  // 404 for an unknown one
  if (request.task != "transcribe" && request.task != "translate") {
    throw ApiError::bad_request(
        fmt::format("task '{}': use transcribe or translate", request.task.substr(0, 40)), "task");
  }
  // A language by code or by name ("english"), kept as its code.
  std::optional<std::string> language;
  if (request.language) {
    const auto languages = model::whisper_languages();
    std::string code = *request.language;
    std::ranges::transform(code, code.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (const auto by_name = model::language_index_by_name(code))
      code = std::string(languages[static_cast<std::size_t>(*by_name)].code);
    if (std::ranges::none_of(languages, [&](const auto& l) { return l.code == code; })) {
      throw ApiError::bad_request(
          fmt::format("language '{}' is not one Whisper knows (ISO 639-1 codes such as en, de)",
                      request.language->substr(0, 40)),
          "language");
    }
    language = code;
  }
  if (!std::isfinite(request.temperature) || request.temperature < 0.0 ||
      request.temperature > 1.0) {
    throw ApiError::bad_request("temperature must be between 0 and 1", "temperature");
  }
  // Places reserved under the lock: requests stored side by side cannot pass --max-jobs.
  {
    const std::lock_guard lock(mutex_);
    if (stopping_ || service_.shutting_down())
      throw ApiError::busy("The server is shutting down; send the files again later", 503);
    const std::size_t open = queue_.size() + running_.size() + static_cast<std::size_t>(reserved_);
    if (open + files.size() > static_cast<std::size_t>(options_.max_jobs)) {
      throw ApiError::busy(fmt::format("{} jobs are queued or running (the server takes {}); "
                                       "send these files once some have finished",
                                       open, options_.max_jobs),
                           429);
    }
    reserved_ += static_cast<int>(files.size());
  }
  const std::shared_ptr<void> reservation(nullptr,
                                          [this, n = static_cast<int>(files.size())](void*) {
                                            const std::lock_guard lock(mutex_);
                                            reserved_ -= n;
                                          });

  // Stored and checked first, recorded after: a bad file leaves nothing behind.
  std::vector<JobRecord> jobs;
  const auto discard = [&] {
    for (JobRecord& j : jobs)
      remove_upload(j);
  };
  try {
    for (const UploadedFile& f : files) {
      JobRecord j;
      j.id = new_job_id();
      j.file_name = safe_filename(f.name);
      j.file_bytes = static_cast<std::int64_t>(f.bytes.size());
      j.upload = j.id + UploadSpool::extension_of(j.file_name);
      // On disk (flushed) before its job is recorded: a recorded job never lacks its audio.
      util::write_file_atomically(upload_path(j), f.bytes);
      jobs.push_back(j);
      jobs.back().duration = probe_audio(upload_path(j), j.file_name);
      jobs.back().windows_total =
          std::max(1, static_cast<int>(std::ceil(jobs.back().duration / 30.0)));
      jobs.back().model = model;  // resolved: a restart with another --model cannot mix two
      jobs.back().task = request.task;
      jobs.back().language_requested = language;
      jobs.back().language = language;
      jobs.back().prompt = request.prompt;
      jobs.back().temperature = request.temperature;
      jobs.back().word_timestamps = request.word_timestamps;
      jobs.back().created_at = unix_now();
    }
    store_->insert(jobs);
  } catch (const ApiError&) {
    discard();
    throw;
  } catch (const std::exception& e) {
    discard();
    spdlog::error("storing uploaded files for jobs: {}", e.what());
    throw ApiError(500, "The server could not store the files; its log says why", "server_error");
  }
  {
    const std::lock_guard lock(mutex_);
    for (const JobRecord& j : jobs) {
      queue_.push_back(j.id);
      publish(j, "queued");
    }
  }
  changed_.notify_all();
  spdlog::info("{} job(s) queued (model {})", jobs.size(), model);
  return jobs;
}

std::vector<JobRecord> JobManager::list() const {
  std::vector<JobRecord> jobs = store_->list();
  const std::lock_guard lock(mutex_);
  for (JobRecord& j : jobs) {
    const auto it = running_.find(j.id);
    if (it == running_.end()) continue;
    const std::lock_guard record(it->second->mutex);
    if (it->second->record.status == JobStatus::kRunning) j = it->second->record;
  }
  return jobs;
}

JobRecord JobManager::get(const std::string& id) const {
  {
    const std::lock_guard lock(mutex_);
    const auto it = running_.find(id);
    if (it != running_.end()) {
      const std::lock_guard record(it->second->mutex);
      if (it->second->record.status == JobStatus::kRunning) return it->second->record;
    }
  }
  std::optional<JobRecord> job = store_->get(id);
  if (!job) {
    throw ApiError(404, fmt::format("No job with id '{}'", id.substr(0, 64)),
                   "invalid_request_error", "id", "job_not_found");
  }
  return *job;
}

JobRecord JobManager::cancel(const std::string& id) {
  JobRecord job = get(id);
  if (has_ended(job.status)) {
    throw ApiError(409, fmt::format("Job '{}' has already ended ({})", id, status_name(job.status)),
                   "invalid_request_error", "id", "job_ended");
  }
  std::unique_lock lock(mutex_);
  if (const auto queued = std::ranges::find(queue_, id); queued != queue_.end()) {
    queue_.erase(queued);
    lock.unlock();
    end_without_result(store_->get(id).value_or(job), "cancelled before it started", "cancelled");
    spdlog::info("job {} ({}) cancelled while queued", id, job.file_name);
    return get(id);
  }
  if (const auto running = running_.find(id); running != running_.end()) {
    running->second->cancel_requested = true;
    {
      const std::lock_guard record(running->second->mutex);
      if (running->second->transcription) running->second->transcription->cancel();
    }
    // It ends at its scheduler's next batch.
    changed_.wait_for(lock, std::chrono::seconds(30), [&] { return !running_.contains(id); });
  }
  lock.unlock();
  return get(id);
}

void JobManager::remove(const std::string& id) {
  JobRecord job = get(id);
  if (!has_ended(job.status)) {
    throw ApiError(409,
                   fmt::format("Job '{}' is {}: cancel it first (DELETE once more removes it)", id,
                               status_name(job.status)),
                   "invalid_request_error", "id", "job_not_ended");
  }
  remove_upload(job);
  store_->remove(id);
  events_.forget(id);
  spdlog::info("job {} ({}) deleted", id, job.file_name);
}

Transcript JobManager::result(const std::string& id) const {
  const JobRecord job = get(id);
  std::optional<Transcript> t = job.has_result ? store_->result(id) : std::nullopt;
  if (!t) {
    throw ApiError(
        409,
        fmt::format("Job '{}' has no result {}", id,
                    has_ended(job.status) ? "(it ended without finishing a window)"
                                          : "yet; it is " + std::string(status_name(job.status))),
        "invalid_request_error", "id", "job_not_finished");
  }
  return std::move(*t);
}

void JobManager::dispatch() {
  std::unique_lock lock(mutex_);
  auto retry_at = std::chrono::steady_clock::time_point::min();
  auto sweep_at = std::chrono::steady_clock::now() + retention_interval();
  while (!stopping_) {
    join_ended(lock);
    if (std::chrono::steady_clock::now() >= sweep_at) {
      lock.unlock();
      try {
        apply_retention();
      } catch (const std::exception& e) {
        spdlog::error("removing old jobs failed: {}", e.what());
      }
      lock.lock();
      sweep_at = std::chrono::steady_clock::now() + retention_interval();
      continue;
    }
    const bool can_start = !queue_.empty() &&
                           static_cast<int>(running_.size()) < options_.concurrency &&
                           std::chrono::steady_clock::now() >= retry_at;
    if (can_start) {
      if (!start_next(lock)) retry_at = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      continue;
    }
    changed_.wait_for(lock, std::chrono::milliseconds(500));
  }
}

// Called with the lock held; returns it held. False when the job could not be handed over now
// (the scheduler's queue is full, the model is loading or reloading): it stays first in line.
bool JobManager::start_next(std::unique_lock<std::mutex>& lock) {
  const std::string id = queue_.front();
  queue_.pop_front();
  auto running = std::make_shared<Running>();
  running_[id] = running;
  lock.unlock();
  // Whatever happens below, the job is either handed to a thread that waits for it, ended, or
  // put back in line: never lost, and the dispatcher never dies of it.
  const auto back_in_line = [&] {
    lock.lock();
    running_.erase(id);
    queue_.push_front(id);
    changed_.notify_all();
    return false;
  };
  JobRecord job;
  auto resume = std::make_shared<pipeline::ResumeState>();
  try {
    std::optional<JobRecord> stored = store_->get(id);
    if (!stored) {  // deleted meanwhile
      lock.lock();
      running_.erase(id);
      changed_.notify_all();
      return true;
    }
    job = *stored;
    *resume = store_->resume_state(id);
    job.status = JobStatus::kRunning;
    if (job.started_at <= 0.0) job.started_at = unix_now();
    job.windows_done = 0;  // counted again as the windows come, restored ones first
    job.windows_restored = 0;
    job.audio_done = 0.0;
    // Recorded before the scheduler can report a window, so that this never overwrites one.
    store_->update(job);
  } catch (const std::exception& e) {
    spdlog::error("job {}: reading it from the job database failed: {}; trying again later", id,
                  e.what());
    return back_in_line();
  }
  running->earlier_processing = job.processing_seconds;
  running->started = std::chrono::steady_clock::now();
  {
    const std::lock_guard record(running->mutex);
    running->record = job;
  }
  publish(job, "progress");
  pipeline::JobOptions o;
  o.task = job.task;
  o.language = job.language_requested;
  o.prompt = job.prompt;
  o.temperature = job.temperature;
  o.word_timings = true;  // every format is offered: subtitles need word timings
  std::unique_ptr<TranscriptionService::Transcription> transcription;
  std::optional<ApiError> refused;
  try {
    transcription = service_.start_file(
        upload_path(job).string(), job.file_name, job.model, o, resume,
        [this, running](const pipeline::ProgressEvent& e) { on_progress(*running, e); });
  } catch (const ApiError& e) {
    refused = e;
  } catch (const std::exception& e) {
    refused = ApiError(500, e.what(), "server_error");
  }
  if (refused) {
    // Only a model the server no longer offers is final; the scheduler being full, the model
    // loading, failing to load or reloading may pass.
    const bool final = refused->status() == 404;
    job.status = running->cancel_requested ? JobStatus::kCancelled
                 : final                   ? JobStatus::kFailed
                                           : JobStatus::kQueued;
    if (job.status == JobStatus::kQueued) {
      if (refused->status() != 429) spdlog::warn("job {} waits: {}", id, refused->what());
      try {
        store_->update(job);
      } catch (const std::exception& e) {
        spdlog::error("job {}: {}", id, e.what());
      }
      {
        const std::lock_guard record(running->mutex);
        running->record = job;
      }
      publish(job, "queued");
      return back_in_line();
    }
    end_without_result(job,
                       running->cancel_requested ? "cancelled before it started" : refused->what(),
                       running->cancel_requested ? "cancelled" : "model_unavailable");
    lock.lock();
    running_.erase(id);
    changed_.notify_all();
    return true;
  }
  spdlog::info("job {} ({}) started{}", id, job.file_name,
               resume->windows.empty()
                   ? ""
                   : fmt::format(", {} window(s) taken from before", resume->windows.size()));
  lock.lock();
  {
    const std::lock_guard record(running->mutex);
    running->transcription = std::move(transcription);
    if (running->cancel_requested || stopping_) running->transcription->cancel();
  }
  try {
    running->thread = std::thread([this, running] { wait_for(running); });
  } catch (const std::system_error& e) {
    // No thread to wait with: wait here (the dispatcher pauses for this job's length).
    spdlog::error("job {}: no thread to wait for it ({}); waiting on the dispatcher", id, e.what());
    lock.unlock();
    wait_for(running);
    lock.lock();
  }
  return true;
}

void JobManager::on_progress(Running& running, const pipeline::ProgressEvent& e) {
  if (e.kind != pipeline::ProgressEvent::Kind::kWindowDone) return;
  JobRecord job;
  {
    const std::lock_guard lock(running.mutex);
    JobRecord& r = running.record;
    r.windows_done = e.windows_done;
    r.windows_total = std::max(e.windows_total, e.windows_done);
    r.windows_restored += e.restored ? 1 : 0;
    r.audio_done = std::max(r.audio_done, e.audio_done);
    if (!e.language.empty()) r.language = e.language;
    r.processing_seconds =
        running.earlier_processing +
        std::chrono::duration<double>(std::chrono::steady_clock::now() - running.started).count();
    job = r;
  }
  // Must not throw on the scheduler's thread: a store that fails costs the window its
  // persistence (it is decoded again after a restart), and is logged.
  try {
    if (!e.restored) {
      // With the record (the language detected): a window is only ever resumed with the
      // language it was decoded in.
      store_->add_window(job, e.window_start, e.frames_consumed, e.segments);
    } else {
      store_->update(job);
    }
  } catch (const std::exception& ex) {
    spdlog::error("job {}: storing a finished window failed: {}", job.id, ex.what());
  }
  for (const Segment& s : e.segments) {
    const nlohmann::ordered_json seg = {{"start", s.start}, {"end", s.end}, {"text", s.text}};
    events_.publish(job.id, "segment",
                    seg.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  publish(job, "progress");
}

void JobManager::wait_for(std::shared_ptr<Running> running) {
  pipeline::FileResult r;
  try {
    r = running->transcription->result();
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  JobRecord job;
  {
    const std::lock_guard lock(running->mutex);
    job = running->record;
  }
  job.processing_seconds =
      running->earlier_processing +
      std::chrono::duration<double>(std::chrono::steady_clock::now() - running->started).count();
  if (!r.transcript.language.empty()) job.language = r.transcript.language;
  bool stopping = false;
  {
    const std::lock_guard lock(mutex_);
    stopping = stopping_;
  }
  const bool complete = r.ok && !r.transcript.partial;
  const bool model_failed = !complete && running->transcription->model_failed();
  int attempts = 0;
  if (model_failed) {
    const std::lock_guard lock(mutex_);
    attempts = ++model_failures_[job.id];
  }
  std::optional<Transcript> result;
  std::string type;
  bool requeue = false;
  if ((stopping && !running->cancel_requested && !complete) ||
      (model_failed && !running->cancel_requested && attempts < kModelAttempts)) {
    // A shutdown, or the model stopped on an error (someone else's batch may have caused it):
    // the windows it finished are stored; it goes on from there at the next start, or once the
    // model is loaded again.
    job.status = JobStatus::kQueued;
    requeue = !stopping;
    try {
      store_->update(job);
    } catch (const std::exception& e) {
      spdlog::error("job {}: {}", job.id, e.what());
    }
    spdlog::info("job {} ({}) {} after {} window(s); it resumes {}", job.id, job.file_name,
                 stopping ? "stopped by the shutdown" : "stopped: its model failed",
                 job.windows_done, stopping ? "at the next start" : "when the model is back");
  } else {
    if (running->cancel_requested && !complete) {
      job.status = JobStatus::kCancelled;
      job.error_message = fmt::format("cancelled after {} of its windows", job.windows_done);
      job.error_code = "cancelled";
      type = "cancelled";
    } else if (complete) {
      job.status = JobStatus::kDone;
      job.duration = r.transcript.duration;
      job.windows_total = job.windows_done;
      job.audio_done = r.transcript.duration;
      type = "done";
    } else {
      job.status = JobStatus::kFailed;
      job.error_message = model_failed ? "the model stopped on an error (the server's log says "
                                         "why); send the file again"
                                       : r.error;
      job.error_code = model_failed ? "model_failed" : "transcription_failed";
      type = "failed";
    }
    // Partial results are kept: what a job finished is never thrown away.
    if (complete || job.windows_done > 0) result = std::move(r.transcript);
    job.finished_at = unix_now();
    if (!record_end(job, result)) type.clear();  // stays as it was; resumes after a restart
  }
  std::unique_ptr<TranscriptionService::Transcription> transcription;
  {
    const std::lock_guard lock(running->mutex);
    running->record = job;
    transcription = std::move(running->transcription);
  }
  transcription.reset();  // the model's lease goes back
  if (!type.empty()) publish(job, type);
  {
    const std::lock_guard lock(mutex_);
    running_.erase(job.id);
    if (requeue) queue_.push_back(job.id);
    if (!type.empty()) model_failures_.erase(job.id);
    ended_.push_back(running);
  }
  changed_.notify_all();
  if (!type.empty()) {
    try {
      apply_retention(job.id);
    } catch (const std::exception& e) {
      spdlog::error("removing old jobs failed: {}", e.what());
    }
  }
}

// The job's end and result stored, then its upload removed (a stop in between leaves a stray
// upload that the next start removes, never a job without its audio). False when the database
// refused (logged): the job stays as it was recorded before.
bool JobManager::record_end(JobRecord& job, const std::optional<Transcript>& result) {
  const std::string upload = job.upload;
  job.upload.clear();
  job.has_result = result.has_value();
  try {
    store_->finish(job, result);
  } catch (const std::exception& e) {
    spdlog::error("job {}: recording its end failed: {}", job.id, e.what());
    job.upload = upload;
    return false;
  }
  if (!upload.empty()) {
    std::error_code ec;
    if (!std::filesystem::remove(uploads_ / upload, ec) && ec)
      spdlog::warn("cannot remove the upload of job {}: {}", job.id, ec.message());
  }
  spdlog::info("job {} ({}): {} - {:.1f} s of audio in {:.1f} s", job.id, job.file_name,
               status_name(job.status), job.audio_done, job.processing_seconds);
  return true;
}

void JobManager::end_without_result(JobRecord job, const std::string& message,
                                    const std::string& code) {
  job.status = code == "cancelled" ? JobStatus::kCancelled : JobStatus::kFailed;
  job.error_message = message;
  job.error_code = code;
  job.finished_at = unix_now();
  if (record_end(job, std::nullopt))
    publish(job, job.status == JobStatus::kCancelled ? "cancelled" : "failed");
}

// A tenth of --keep-results, between a second and ten minutes: an expired result goes soon
// after its time without the dispatcher reading the database often.
std::chrono::steady_clock::duration JobManager::retention_interval() const {
  using namespace std::chrono;
  const double tenth =
      options_.keep_results_days > 0.0 ? options_.keep_results_days * 8640.0 : 600.0;
  return duration_cast<steady_clock::duration>(duration<double>(std::clamp(tenth, 1.0, 600.0)));
}

void JobManager::apply_retention(const std::string& just_ended) {
  const std::lock_guard sweep(retention_mutex_);
  std::vector<JobRecord> ended;
  std::int64_t bytes = 0;  // of ended jobs: the only ones retention may remove
  for (JobRecord& j : store_->list()) {
    if (!has_ended(j.status)) continue;
    bytes += j.result_bytes;
    ended.push_back(std::move(j));
  }
  std::ranges::sort(ended, {}, &JobRecord::finished_at);
  const double now = unix_now();
  int removed = 0;
  for (std::size_t i = 0; i < ended.size(); ++i) {
    JobRecord& j = ended[i];
    const bool expired = options_.keep_results_days > 0.0 &&
                         now - j.finished_at > options_.keep_results_days * 86400.0;
    // Over the budget the oldest go first, never the newest (a result nobody has fetched yet).
    const bool over = bytes > options_.max_data_bytes && i + 1 < ended.size() && j.id != just_ended;
    if (!expired && !over) continue;
    bytes -= j.result_bytes;
    remove_upload(j);
    store_->remove(j.id);
    events_.forget(j.id);
    ++removed;
  }
  if (removed > 0) {
    spdlog::info(
        "retention: {} ended job(s) removed (older than {} days, or over the {} MiB "
        "budget)",
        removed, options_.keep_results_days, options_.max_data_bytes >> 20);
  }
}

bool JobManager::stop(std::chrono::steady_clock::time_point deadline) {
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) return true;
    stopping_ = true;
  }
  changed_.notify_all();
  events_.close();  // event streams end now, whatever follows
  if (dispatcher_.joinable()) dispatcher_.join();
  std::unique_lock lock(mutex_);
  for (const auto& [id, r] : running_) {
    const std::lock_guard record(r->mutex);
    if (r->transcription) r->transcription->cancel();
  }
  // Each ends at its scheduler's next batch.
  if (!changed_.wait_until(lock, deadline, [&] { return running_.empty(); })) {
    spdlog::error("{} job(s) did not stop by the deadline; they resume at the next start",
                  running_.size());
    return false;
  }
  join_ended(lock);
  return true;
}

}  // namespace ifw::server
