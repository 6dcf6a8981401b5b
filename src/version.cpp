#include <fmt/format.h>

#include <ifw/error.hpp>
#include <ifw/version.hpp>

#include "backend/cpu/blas.hpp"
#include "backend/cuda_module.hpp"
#include "backend/devices.hpp"
#include "util/cores.hpp"

namespace ifw {

const char* version() noexcept {
  return IFW_VERSION;
}

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kInvalidModel:
      return "invalid model";
    case ErrorKind::kNotFound:
      return "not found";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kIo:
      return "i/o error";
    case ErrorKind::kOutOfMemory:
      return "out of device memory";
    case ErrorKind::kDeviceFailure:
      return "device failure";
  }
  return "error";
}

std::string build_info() {
  std::string info = fmt::format("ifw {}\ncompiler: {}\nbuild type: {}\n", IFW_VERSION,
                                 IFW_COMPILER, IFW_BUILD_TYPE);
  try {
    const backend::cpu::Blas& blas = backend::cpu::blas();
    info += fmt::format("cpu: OpenBLAS, {} kernels\n", blas.core);
  } catch (const Error& e) {
    info += fmt::format("cpu: {}\n", e.what());
  }
  const util::CoreReport& cores = util::cores();
  info += fmt::format("cores: {} usable ({} online, {} in this process's affinity, {})\n",
                      cores.usable, cores.online, cores.affinity,
                      cores.quota ? fmt::format("cgroup CPU quota {:.2f}", *cores.quota)
                                  : std::string("no cgroup CPU quota"));
  const backend::DeviceReport devices = backend::describe_devices();
  if (!devices.cuda_built) {
    info += fmt::format("cuda: {}\n", devices.cuda_status);
    return info;
  }
  info += fmt::format("cuda: built ({})\n", devices.cuda_runtime);
  // Loaded here even without a GPU, so that an incomplete installation shows.
  const backend::CudaModuleStatus module = backend::load_cuda_module();
  info += module.loaded ? fmt::format("cuda backend: {}\n", module.path)
                        : fmt::format("cuda backend: not usable: {}\n", module.error);
  if (devices.gpus.empty()) info += fmt::format("gpus: {}\n", devices.cuda_status);
  for (const backend::GpuInfo& g : devices.gpus) {
    info +=
        fmt::format("gpu {}: {} (compute {}.{}, {:.1f} GiB)\n", g.index, g.name, g.compute_major,
                    g.compute_minor, static_cast<double>(g.total_memory) / (1024.0 * 1024 * 1024));
  }
  return info;
}

}  // namespace ifw
