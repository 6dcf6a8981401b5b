// The element types of tensors, apart from their conversions (dtype.hpp) so that CUDA sources,
// which nvcc compiles as C++17, can name them.
#pragma once

namespace ifw::backend {

enum class DType { kF32, kF16, kBF16 };

}  // namespace ifw::backend
