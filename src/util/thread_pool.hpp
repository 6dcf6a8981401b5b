// A fixed pool of worker threads for data-parallel loops. The calling thread works too, so a
// pool of size 1 runs everything inline. Workers spin briefly before sleeping, because the
// engine issues many short loops back to back (a decoder step is dozens of them).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ifw::util {

class ThreadPool {
 public:
  // `threads`: total threads including the caller (at least 1).
  explicit ThreadPool(int threads);
  ~ThreadPool();  // stops and joins every worker
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(i) for every i in [0, n) and returns when all are done. The first exception a
  // task throws is rethrown here after the others finished. Not re-entrant: a task must not
  // call run() on the same pool.
  void run(int n, const std::function<void(int)>& task);

  // Splits [0, count) into at most size() contiguous chunks of at least `min_chunk` items and
  // calls fn(begin, end) for each; small ranges run inline on the caller.
  void parallel_for(std::int64_t count, std::int64_t min_chunk,
                    const std::function<void(std::int64_t, std::int64_t)>& fn);

 private:
  struct Job {
    const std::function<void(int)>* task = nullptr;
    int n = 0;
    std::atomic<int> next{0};
    std::atomic<int> finished{0};
    std::mutex error_mutex;
    std::exception_ptr error;
  };
  void worker_loop();
  static void work_on(Job& job);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one run() at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<std::uint64_t> generation_{0};
  Job* job_ = nullptr;  // guarded by mutex_
  int active_ = 0;      // workers holding job_, guarded by mutex_
  bool stop_ = false;
};

}  // namespace ifw::util
