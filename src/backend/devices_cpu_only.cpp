// Device report of a build without the CUDA toolkit.
#include "backend/devices.hpp"

namespace ifw::backend {

DeviceReport describe_devices() {
  DeviceReport report;
  report.cuda_status =
      "this build has no CUDA backend (the toolkit was not found at configure time)";
  return report;
}

}  // namespace ifw::backend
