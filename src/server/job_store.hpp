// Where the server's jobs live between requests and across restarts: one SQLite database (WAL)
// with a row per job, a row per decoded window of an unfinished job (so that a restarted job
// decodes only the rest), and each finished job's transcript. Safe to use from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ifw/transcript.hpp>

#include "pipeline/job_source.hpp"

struct sqlite3;

namespace ifw::server {

enum class JobStatus { kQueued, kRunning, kDone, kFailed, kCancelled };
std::string_view status_name(JobStatus status);
bool has_ended(JobStatus status);

struct JobRecord {
  std::string id;  // "job_" and 16 hex digits
  JobStatus status = JobStatus::kQueued;
  // The upload: its name as sent (made safe), size, duration (0: unknown) and the file that
  // holds it under the data folder's uploads/ ("" once removed).
  std::string file_name;
  std::int64_t file_bytes = 0;
  double duration = 0.0;
  std::string upload;
  // What was asked for.
  std::string model;  // as requested ("" for the default)
  std::string task = "transcribe";
  std::optional<std::string> language_requested;
  std::string prompt;
  double temperature = 0.0;
  bool word_timestamps = false;
  std::optional<std::string> language;  // asked for, or detected once known
  // When (Unix seconds; 0: not yet) and how far.
  double created_at = 0.0, started_at = 0.0, finished_at = 0.0;
  int windows_done = 0, windows_total = 0, windows_restored = 0;
  double audio_done = 0.0;
  double processing_seconds = 0.0;  // summed over every run of the job
  std::string error_message, error_code;
  bool has_result = false;
  std::int64_t result_bytes = 0;
};

class JobStore {
 public:
  // Opens (creating) the database. Throws ifw::Error (kIo) naming the file and SQLite's reason.
  explicit JobStore(const std::filesystem::path& database);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  void insert(const std::vector<JobRecord>& jobs);  // all or none
  std::optional<JobRecord> get(const std::string& id) const;
  std::vector<JobRecord> list() const;  // oldest first
  // Writes every field of the record but its id, creation time and result.
  void update(const JobRecord& job);

  // A window of a running job, kept until its job ends, with the job's record as it stands
  // then (its progress, the language detected), in one transaction.
  void add_window(const JobRecord& job, std::int64_t start_sample, int frames_consumed,
                  const std::vector<Segment>& segments);
  pipeline::ResumeState resume_state(const std::string& id) const;
  int window_count(const std::string& id) const;

  // The job as it ended, with its transcript (nullopt: none), in one transaction; its windows
  // go.
  void finish(const JobRecord& job, const std::optional<Transcript>& transcript);
  std::optional<Transcript> result(const std::string& id) const;
  void remove(const std::string& id);

  // How many jobs there are of each status (every status listed, 0 included).
  std::vector<std::pair<JobStatus, std::int64_t>> count_by_status() const;

  // Bytes of transcripts, windows and uploads the database accounts for (every job).
  std::int64_t stored_bytes() const;

 private:
  struct Closer {
    void operator()(sqlite3* db) const;
  };
  void exec(const char* sql) const;
  void write_record(const JobRecord& job) const;  // with the mutex held
  mutable std::mutex mutex_;
  std::filesystem::path path_;
  std::unique_ptr<sqlite3, Closer> db_;
};

}  // namespace ifw::server
