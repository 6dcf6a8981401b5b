// Device report of a build without the CUDA toolkit.
#include <ifw/error.hpp>

#include "backend/backend.hpp"
#include "backend/devices.hpp"

namespace ifw::backend {

DeviceReport describe_devices() {
  DeviceReport report;
  report.cuda_status =
      "this build has no CUDA backend (the toolkit was not found at configure time)";
  return report;
}

DeviceMemory device_memory(int /*index*/) {
  throw Error(ErrorKind::kUnsupported,
              "this build has no CUDA backend (the toolkit was not found at configure time)");
}

std::unique_ptr<Backend> make_cuda_backend(int /*index*/, DType /*dtype*/) {
  throw Error(ErrorKind::kUnsupported,
              "this build has no CUDA backend (the toolkit was not found at configure time)");
}

}  // namespace ifw::backend
