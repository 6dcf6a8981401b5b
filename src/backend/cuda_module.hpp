// The CUDA backend is a module (libifw-cuda.so) that the engine loads only when a GPU is used, so
// that CPU runs neither map cuBLAS (hundreds of MB) nor need it installed. The module is built
// with the engine, from the same headers, and leaves the engine's symbols (and spdlog's, fmt's)
// to the program that loads it: one logger, one set of types. This is what the two sides share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "backend/devices.hpp"

namespace ifw::backend {

namespace cuda_module {

// Raised whenever the table below changes. A module built for another interface, another ifw
// version or from other headers (IFW_CUDA_MODULE_TOKEN, a hash of backend/*.hpp and
// include/ifw/*.hpp made at build time) is refused: a stale file beside the program, say.
inline constexpr int kInterface = 2;
inline constexpr const char* kFileName = "libifw-cuda.so";
inline constexpr const char* kEntryPoint = "ifw_cuda_module";

// The first three members keep their places in every interface: the loader reads them first.
struct Api {
  int interface = 0;
  const char* ifw_version = nullptr;
  const char* build_token = nullptr;
  DeviceReport (*describe_devices)() = nullptr;
  DeviceMemory (*device_memory)(int index) = nullptr;
  std::unique_ptr<Backend> (*make_backend)(int index, DType dtype) = nullptr;
  std::uint64_t (*step_graph_launches)() = nullptr;
};

using EntryPoint = const Api* (*)();

}  // namespace cuda_module

// Loads the module if it is not loaded yet (whether or not there is a GPU) and says where it was
// found, or why it could not be loaded: `ifw --version` and the tests check the installation
// with it.
struct CudaModuleStatus {
  bool loaded = false;
  std::string path;   // the file loaded, or the last one tried
  std::string error;  // why it could not be loaded (empty when loaded)
};
CudaModuleStatus load_cuda_module();

// Decoder steps replayed from CUDA graphs so far in this process (loads the module; 0 where it
// cannot be loaded): lets the tests see that graphs really ran.
std::uint64_t cuda_step_graph_launches();

}  // namespace ifw::backend
