// The backend the engine's conformance tests run on: the CPU, unless IFW_TEST_DEVICE names a GPU
// (cuda or cuda:N), computing in IFW_TEST_PRECISION (fp32, fp16 or bf16; fp32 by default).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"

namespace ifw::test {

std::unique_ptr<backend::Backend> make_test_backend(int cpu_threads);
backend::DType test_precision();
// Whether the engine computes as the reference does, in float32: not in half precision, which is
// held to half precision's tolerances.
bool exact_test_arithmetic();
// Relative tolerance per row against the float32 reference: the CPU's 1e-4 in float32, 5e-3 in
// float16 (as the CUDA backend's acceptance asks), 1e-2 in bfloat16 (see test_backend.cpp).
double reference_tolerance();
// "cpu", or e.g. "cuda:0 float16", for messages.
std::string test_device_name();
// A tensor's values as floats on the host, whatever its backend and element type.
std::vector<float> to_host(backend::Backend& backend, const backend::Tensor& tensor);

}  // namespace ifw::test
