// The entry point of libifw-cuda.so (backend/cuda_module.hpp), and its report of the GPUs: asks
// the runtime, which fails cleanly without a driver or GPU.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backend/cuda/cuda_backend.hpp"
#include "backend/cuda/device_context.hpp"
#include "backend/cuda/step_recording.hpp"
#include "backend/cuda_module.hpp"
#include "backend/cuda_module_token.hpp"

namespace ifw::backend::cuda {
namespace {

DeviceReport describe_devices() {
  DeviceReport report;
  report.cuda_built = true;
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  report.cuda_runtime = fmt::format(
      "runtime {}.{}, driver {}", runtime / 1000, runtime % 1000 / 10,
      driver == 0 ? std::string("none") : fmt::format("{}.{}", driver / 1000, driver % 1000 / 10));
  int count = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    report.cuda_status = fmt::format("no usable GPU: {}", cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error so later CUDA calls start clean
    return report;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    report.gpus.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  if (report.gpus.empty()) report.cuda_status = "no GPU visible";
  return report;
}

DeviceMemory device_memory(int index) {
  const MemoryInfo m = memory_info(index);
  return {m.free, m.total};
}

}  // namespace
}  // namespace ifw::backend::cuda

extern "C" __attribute__((visibility("default"))) const ifw::backend::cuda_module::Api*
ifw_cuda_module() {
  namespace cuda = ifw::backend::cuda;
  static const ifw::backend::cuda_module::Api api{ifw::backend::cuda_module::kInterface,
                                                  IFW_VERSION,
                                                  IFW_CUDA_MODULE_TOKEN,
                                                  &cuda::describe_devices,
                                                  &cuda::device_memory,
                                                  &cuda::make_backend,
                                                  &cuda::step_graph_launches};
  return &api;
}
