// Device report of a build without the CUDA toolkit.
#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/cuda_module.hpp"
#include "backend/devices.hpp"

namespace ifw::backend {
namespace {

constexpr const char* kNoCuda =
    "this build has no CUDA backend (the toolkit was not found at configure time)";

}  // namespace

DeviceReport describe_devices() {
  DeviceReport report;
  report.cuda_status = kNoCuda;
  return report;
}

DeviceMemory device_memory(int /*index*/) {
  throw Error(ErrorKind::kUnsupported, kNoCuda);
}

std::unique_ptr<Backend> make_cuda_backend(int /*index*/, DType /*dtype*/) {
  throw Error(ErrorKind::kUnsupported, kNoCuda);
}

CudaModuleStatus load_cuda_module() {
  return {false, "", kNoCuda};
}

std::uint64_t cuda_step_graph_launches() {
  return 0;
}

}  // namespace ifw::backend
