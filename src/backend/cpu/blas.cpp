#include "backend/cpu/blas.hpp"

#include <cstdlib>

#include <dlfcn.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

namespace ifw::backend::cpu {
namespace {

template <typename F>
F symbol(void* library, const char* name) {
  void* p = ::dlsym(library, name);
  if (p == nullptr) {
    throw Error(ErrorKind::kIo, fmt::format("OpenBLAS has no symbol {}: {}", name, ::dlerror()));
  }
  return reinterpret_cast<F>(p);
}

Blas load() {
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const std::string core = preferred_openblas_core(); !core.empty()) {
      ::setenv("OPENBLAS_CORETYPE", core.c_str(), 0);
    }
  }
  // The library stays loaded for the life of the process: unloading a BLAS whose worker threads
  // may still exist is not safe, and the handle is needed until exit anyway.
  void* library = nullptr;
  for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
    library = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (library != nullptr) break;
  }
  if (library == nullptr) {
    throw Error(ErrorKind::kIo,
                fmt::format("cannot load OpenBLAS (libopenblas.so.0): {}; install libopenblas0",
                            ::dlerror()));
  }
  Blas b;
  b.sgemm = symbol<decltype(&cblas_sgemm)>(library, "cblas_sgemm");
  symbol<void (*)(int)>(library, "openblas_set_num_threads")(1);
  b.core = symbol<char* (*)()>(library, "openblas_get_corename")();
  b.config = symbol<char* (*)()>(library, "openblas_get_config")();
  spdlog::debug("OpenBLAS: {} kernels ({})", b.core, b.config);
  return b;
}

}  // namespace

std::string preferred_openblas_core() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return __builtin_cpu_is("amd") ? "Zen" : "Haswell";
  }
#endif
  return "";
}

const Blas& blas() {
  static const Blas instance = load();
  return instance;
}

}  // namespace ifw::backend::cpu
