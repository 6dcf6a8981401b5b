// The live events of jobs (queued, progress, segment, done, failed, cancelled), for the
// server-sent event streams: each job's recent events numbered in order, and readers that wait
// for the ones after the last they saw. Only recent events are kept (of an ended job, after a
// minute, its final event alone); a reader gets the job's state from its record first, then
// what happens next.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ifw::server {

struct JobEvent {
  std::uint64_t id = 0;  // increasing per job, from 1
  std::string type;      // "queued", "progress", "segment", "done", "failed", "cancelled"
  std::string data;      // JSON
};

class JobEvents {
 public:
  explicit JobEvents(std::size_t kept_per_job = 512) : kept_(kept_per_job) {}

  void publish(const std::string& job, std::string type, std::string data);
  // The id of the job's latest event (0: none yet).
  std::uint64_t latest(const std::string& job) const;
  // The job's events after `after`, waiting up to `timeout` for one to come; empty when none
  // came or the events were closed.
  std::vector<JobEvent> wait(const std::string& job, std::uint64_t after,
                             std::chrono::milliseconds timeout) const;
  void forget(const std::string& job);  // a deleted job
  // Wakes every reader for good (a shutdown): wait() returns at once from now on.
  void close();
  bool closed() const;

 private:
  struct Channel {
    std::uint64_t next = 1;
    std::deque<JobEvent> recent;
    std::optional<std::chrono::steady_clock::time_point> ended;  // its final event's time
  };
  std::size_t kept_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::map<std::string, Channel> channels_;
  bool closed_ = false;
  std::chrono::steady_clock::time_point last_trim_{};
};

}  // namespace ifw::server
