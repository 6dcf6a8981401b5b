// Which compute devices this build can use on this machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ifw::backend {

struct GpuInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::uint64_t total_memory = 0;
};

struct DeviceReport {
  bool cuda_built = false;    // compiled with the CUDA toolkit
  std::string cuda_runtime;   // runtime / driver versions when built with CUDA
  std::vector<GpuInfo> gpus;  // visible GPUs (empty without a driver or device)
  std::string cuda_status;    // why there is no GPU, when there is none
};

DeviceReport describe_devices();

// Free and total memory of GPU `index` (cudaMemGetInfo: what every process together uses).
// Throws ifw::Error in a build without CUDA or without that GPU.
struct DeviceMemory {
  std::uint64_t free = 0;
  std::uint64_t total = 0;
};
DeviceMemory device_memory(int index);

}  // namespace ifw::backend
