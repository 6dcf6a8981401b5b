// A flag that asks running work to stop at its next safe point (between batches).
#pragma once

#include <atomic>

namespace ifw::pipeline {

class CancellationToken {
 public:
  void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

}  // namespace ifw::pipeline
