// Where a run's jobs come from: a fixed list (the command line's files) or a queue that others
// fill while the run goes on (the server's requests).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ifw/transcript.hpp>

#include "pipeline/cancellation.hpp"

namespace ifw::pipeline {

// What one file may ask for differently from the other files of a run (the server's requests
// do); the run's options give the rest, and the defaults when a job brings none.
struct JobOptions {
  std::string task = "transcribe";      // or "translate"
  std::optional<std::string> language;  // code or name; detected when absent
  std::string prompt;
  double temperature = 0.0;
  bool word_timings = false;
};

// A window decoded before (by a run that was stopped: a server killed mid-job): what it gave.
struct FinishedWindow {
  int frames_consumed = 0;
  std::vector<Segment> segments;
};

// What a job that starts again already has: its windows decoded before, by where they start
// (in samples; windows are cut the same way from the same audio), and the language detected
// then. Those windows are taken as they are, not decoded again (batched strategy only: the
// sequential one decodes everything again).
struct ResumeState {
  std::optional<std::string> language;  // code
  std::map<std::int64_t, FinishedWindow> windows;
};

struct Job {
  Job() = default;
  Job(std::string path_, std::optional<JobOptions> options_ = std::nullopt, int id_ = -1,
      std::shared_ptr<const CancellationToken> cancel_ = nullptr)
      : path(std::move(path_)), options(std::move(options_)), id(id_), cancel(std::move(cancel_)) {}

  std::string path;                   // "-" is standard input
  std::optional<JobOptions> options;  // nullopt: the run's own
  int id = -1;                        // in results and progress; -1: its place in a JobList
  // Set by whoever waits for the result (a client that left, a deadline): the job ends at the
  // next batch with what it has, marked partial. The run's own token still stops everything.
  std::shared_ptr<const CancellationToken> cancel;
  std::shared_ptr<const ResumeState> resume;  // nullptr: from the start
};

class JobSource {
 public:
  virtual ~JobSource() = default;
  // The next job if one is there; with `wait`, blocks until one comes or no more can come.
  virtual std::optional<Job> next(bool wait) = 0;
  // No job is waiting and none will come.
  virtual bool finished() const = 0;
};

class JobList final : public JobSource {
 public:
  explicit JobList(std::vector<Job> jobs);
  std::optional<Job> next(bool wait) override;
  bool finished() const override { return next_ >= jobs_.size(); }

 private:
  std::vector<Job> jobs_;
  std::size_t next_ = 0;
};

// A bounded queue: submit() refuses when it is full, so that a busy server says so at once
// instead of holding requests it cannot start.
class JobQueue final : public JobSource {
 public:
  explicit JobQueue(std::size_t capacity);
  // False when the queue is full or closed.
  bool submit(Job job);
  // No more jobs: the run ends once the queued ones are done. Wakes a waiting run.
  void close();
  std::size_t waiting() const;
  // Takes out the waiting jobs whose token has been cancelled (their client left) and returns
  // them, so that they answer at once instead of when a place to decode them frees up.
  std::vector<Job> withdraw_cancelled();

  std::optional<Job> next(bool wait) override;
  bool finished() const override;

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Job> jobs_;
  std::size_t capacity_;
  bool closed_ = false;
};

}  // namespace ifw::pipeline
