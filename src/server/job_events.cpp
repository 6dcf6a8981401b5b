#include "server/job_events.hpp"

namespace ifw::server {

void JobEvents::publish(const std::string& job, std::string type, std::string data) {
  {
    const std::lock_guard lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    Channel& c = channels_[job];
    if (type == "done" || type == "failed" || type == "cancelled") c.ended = now;
    c.recent.push_back({c.next++, std::move(type), std::move(data)});
    if (c.recent.size() > kept_) c.recent.pop_front();
    // A minute after a job's end its readers have had their events; new ones get the final
    // event alone, so that is all that stays of it (a server keeps ended jobs for days).
    if (now - last_trim_ > std::chrono::seconds(10)) {
      last_trim_ = now;
      for (auto& [id, channel] : channels_) {
        if (channel.ended && !channel.recent.empty() &&
            now - *channel.ended > std::chrono::minutes(1))
          channel.recent.erase(channel.recent.begin(), channel.recent.end() - 1);
      }
    }
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
