#include "pipeline/job_source.hpp"

namespace ifw::pipeline {

JobList::JobList(std::vector<Job> jobs) : jobs_(std::move(jobs)) {
  for (std::size_t i = 0; i < jobs_.size(); ++i) {
    if (jobs_[i].id < 0) jobs_[i].id = static_cast<int>(i);
  }
}

std::optional<Job> JobList::next(bool) {
  if (next_ >= jobs_.size()) return std::nullopt;
  return std::move(jobs_[next_++]);
}

JobQueue::JobQueue(std::size_t capacity) : capacity_(capacity) {}

bool JobQueue::submit(Job job) {
  {
    const std::lock_guard lock(mutex_);
    if (closed_ || jobs_.size() >= capacity_) return false;
    jobs_.push_back(std::move(job));
  }
  changed_.notify_all();
  return true;
}

void JobQueue::close() {
  {
    const std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

std::vector<Job> JobQueue::withdraw_cancelled() {
  std::vector<Job> out;
  {
    const std::lock_guard lock(mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->cancel && it->cancel->cancelled()) {
        out.push_back(std::move(*it));
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (!out.empty()) changed_.notify_all();
  return out;
}

std::size_t JobQueue::waiting() const {
  const std::lock_guard lock(mutex_);
  return jobs_.size();
}

std::optional<Job> JobQueue::next(bool wait) {
  std::unique_lock lock(mutex_);
  if (wait) changed_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
  if (jobs_.empty()) return std::nullopt;
  Job job = std::move(jobs_.front());
  jobs_.pop_front();
  return job;
}

bool JobQueue::finished() const {
  const std::lock_guard lock(mutex_);
  return closed_ && jobs_.empty();
}

}  // namespace ifw::pipeline
