// OpenBLAS, loaded on first use rather than at program start, so that its kernel choice can be
// corrected before it initialises. Debian 12's OpenBLAS (0.3.21) does not recognise recent CPUs
// (Sapphire Rapids, Zen 4, ...) and falls back to its SSE3 "Prescott" kernels, 4x slower than
// the AVX-512 ones on the development machine (docs/PERFORMANCE.md). Unless OPENBLAS_CORETYPE is
// already set, it is set from the CPU's features before the library is loaded.
#pragma once

#include <string>

#include <cblas.h>

namespace ifw::backend::cpu {

struct Blas {
  decltype(&cblas_sgemm) sgemm = nullptr;
  std::string core;    // the kernel family OpenBLAS runs, e.g. "SkylakeX"
  std::string config;  // OpenBLAS's build description
};

// Loads OpenBLAS once (thread-safe) and runs it single-threaded: ifw's own thread pool splits
// the work, so two pools never fight over the cores. Throws ifw::Error when it cannot be loaded.
const Blas& blas();

// The OpenBLAS kernel family this CPU should use ("SkylakeX", "Haswell", "Zen"), or "" to let
// OpenBLAS decide.
std::string preferred_openblas_core();

}  // namespace ifw::backend::cpu
