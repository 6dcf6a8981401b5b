// Wall-clock timing for the benchmarks.
#pragma once

#include <chrono>

namespace ifw::engine {

inline double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace ifw::engine
