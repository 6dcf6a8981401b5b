#include "server/job_events.hpp"

namespace ifw::server {

void JobEvents::publish(const std::string& job, std::string type, std::string data) {
  {
    const std::lock_guard lock(mutex_);
    Channel& c = channels_[job];
    // A job's final event is all a reader needs from then on: the rest goes.
    if (type == "done" || type == "failed" || type == "cancelled") c.recent.clear();
    c.recent.push_back({c.next++, std::move(type), std::move(data)});
    if (c.recent.size() > kept_) c.recent.pop_front();
  }
  changed_.notify_all();
}

std::uint64_t JobEvents::latest(const std::string& job) const {
  const std::lock_guard lock(mutex_);
  const auto it = channels_.find(job);
  return it == channels_.end() ? 0 : it->second.next - 1;
}

std::vector<JobEvent> JobEvents::wait(const std::string& job, std::uint64_t after,
                                      std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  const auto newer = [&] {
    const auto it = channels_.find(job);
    return it != channels_.end() && it->second.next - 1 > after;
  };
  changed_.wait_for(lock, timeout, [&] { return closed_ || newer(); });
  std::vector<JobEvent> out;
  if (closed_ || !newer()) return out;
  for (const JobEvent& e : channels_.at(job).recent) {
    if (e.id > after) out.push_back(e);
  }
  return out;
}

void JobEvents::forget(const std::string& job) {
  const std::lock_guard lock(mutex_);
  channels_.erase(job);
}

void JobEvents::close() {
  {
    const std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

bool JobEvents::closed() const {
  const std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace ifw::server
