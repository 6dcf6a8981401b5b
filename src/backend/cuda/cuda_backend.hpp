// The CUDA backend: the operations of backend/backend.hpp on one GPU, in float32, float16 or
// bfloat16. Made through the module's entry point (backend/cuda_module.hpp).
#pragma once

#include <memory>

#include "backend/backend.hpp"

namespace ifw::backend::cuda {

// Throws ifw::Error (kUnsupported) where the GPU cannot be used.
std::unique_ptr<Backend> make_backend(int index, DType dtype);

}  // namespace ifw::backend::cuda
