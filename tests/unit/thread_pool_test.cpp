#include "util/thread_pool.hpp"

#include <atomic>
#include <stdexcept>

#include <gtest/gtest.h>

namespace ifw::util {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  for (const int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int round = 0; round < 200; ++round) {
      std::vector<std::atomic<int>> hits(37);
      pool.run(37, [&](int i) { hits[static_cast<std::size_t>(i)].fetch_add(1); });
      for (auto& h : hits)
        ASSERT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, ParallelForCoversTheRangeOnce) {
  ThreadPool pool(3);
  for (const std::int64_t count : {0, 1, 5, 64, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
    pool.parallel_for(count, 8, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i)
        hits[static_cast<std::size_t>(i)].fetch_add(1);
    });
    for (auto& h : hits)
      ASSERT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, ExceptionsReachTheCallerAfterAllTasks) {
  ThreadPool pool(2);
  std::atomic<int> done{0};
  EXPECT_THROW(pool.run(10,
                        [&](int i) {
                          done.fetch_add(1);
                          if (i == 3) throw std::runtime_error("task 3 failed");
                        }),
               std::runtime_error);
  EXPECT_EQ(done.load(), 10);
  // The pool is still usable afterwards.
  std::atomic<int> again{0};
  pool.run(5, [&](int) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 5);
}

TEST(ThreadPool, IdlePoolShutsDownCleanly) {
  for (int i = 0; i < 20; ++i)
    ThreadPool pool(4);
}

}  // namespace
}  // namespace ifw::util
