#include "util/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ifw::util {
namespace {

// How long an idle thread spins before it sleeps: long enough to bridge the gap between two
// consecutive loops of a decoder step, short enough not to steal a core from other work.
constexpr auto kSpin = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  const int workers = std::max(threads, 1) - 1;
  workers_.reserve(static_cast<std::size_t>(workers));
  for (int i = 0; i < workers; ++i)
    workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& t : workers_)
    t.join();
}

void ThreadPool::work_on(Job& job) {
  int done = 0;
  for (int i = job.next.fetch_add(1, std::memory_order_relaxed); i < job.n;
       i = job.next.fetch_add(1, std::memory_order_relaxed)) {
    try {
      (*job.task)(i);
    } catch (...) {
      const std::lock_guard lock(job.error_mutex);
      if (!job.error) job.error = std::current_exception();
    }
    ++done;
  }
  if (done > 0) job.finished.fetch_add(done, std::memory_order_acq_rel);
}

void ThreadPool::worker_loop() {
  std::uint64_t seen = 0;
  while (true) {
    // Spin, then sleep, until a new job (or stop) is published.
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < spin_until) {
      cpu_relax();
    }
    Job* job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      job = job_;
      if (job == nullptr) continue;
      ++active_;  // the caller keeps the job alive until every worker has let go of it
    }
    work_on(*job);
    {
      const std::lock_guard lock(mutex_);
      --active_;
    }
    done_.notify_all();
  }
}

void ThreadPool::run(int n, const std::function<void(int)>& task) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i)
      task(i);
    return;
  }
  const std::lock_guard run_lock(run_mutex_);
  Job job;
  job.task = &task;
  job.n = n;
  {
    const std::lock_guard lock(mutex_);
    job_ = &job;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  work_on(job);
  const auto spin_until = std::chrono::steady_clock::now() + kSpin;
  while (job.finished.load(std::memory_order_acquire) < n &&
         std::chrono::steady_clock::now() < spin_until) {
    cpu_relax();
  }
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock,
               [&] { return job.finished.load(std::memory_order_acquire) >= n && active_ == 0; });
    job_ = nullptr;  // a worker that wakes late finds no job rather than a dead one
  }
  if (job.error) std::rethrow_exception(job.error);
}

void ThreadPool::parallel_for(std::int64_t count, std::int64_t min_chunk,
                              const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (count <= 0) return;
  min_chunk = std::max<std::int64_t>(min_chunk, 1);
  const std::int64_t chunks = std::clamp<std::int64_t>(count / min_chunk, 1, size());
  if (chunks == 1) {
    fn(0, count);
    return;
  }
  run(static_cast<int>(chunks), [&](int c) {
    const std::int64_t begin = count * c / chunks;
    const std::int64_t end = count * (c + 1) / chunks;
    fn(begin, end);
  });
}

}  // namespace ifw::util
