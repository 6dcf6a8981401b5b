// CUDA and cuBLAS results turned into ifw::Error: an allocation that failed is kOutOfMemory (a
// smaller batch may fit), a fault that leaves the device unusable for the rest of the process is
// kDeviceFailure (the CPU can take over), anything else kUnsupported. Host code only; the kernel
// files call it after their launches.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace ifw::backend::cuda {

// Whether `err` is one of the errors after which CUDA refuses all further work in this process's
// context on the device (an illegal address or instruction in a kernel, a kernel that failed or
// timed out, an uncorrectable memory error): only a new process can use the GPU again.
bool leaves_the_device_unusable(cudaError_t err) noexcept;

// Throws ifw::Error naming `what` when a CUDA call failed; clears an error that later calls
// would otherwise report again.
void check(cudaError_t err, const char* what);
// The same for cuBLAS and cuBLASLt; a failure that comes from a device that failed (as its
// context then says) is kDeviceFailure.
void check(cublasStatus_t status, const char* what);

}  // namespace ifw::backend::cuda
