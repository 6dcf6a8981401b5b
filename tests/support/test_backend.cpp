#include "support/test_backend.hpp"

#include <cstdlib>

#include "backend/device_selection.hpp"

namespace ifw::test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

backend::DType test_precision() {
  const std::string p = env("IFW_TEST_PRECISION");
  return p.empty() ? backend::DType::kF32
                   : backend::parse_precision(p).value_or(backend::DType::kF32);
}

std::unique_ptr<backend::Backend> make_test_backend(int cpu_threads) {
  const std::string device = env("IFW_TEST_DEVICE");
  if (device.empty() || device == "cpu") return backend::make_cpu_backend(cpu_threads);
  const backend::DeviceSpec spec = backend::parse_device(device);
  return backend::make_cuda_backend(spec.automatic ? 0 : spec.index, test_precision());
}

bool exact_test_arithmetic() {
  return test_precision() == backend::DType::kF32;
}

double reference_tolerance() {
  switch (test_precision()) {
    case backend::DType::kF32:
      return 1e-4;
    case backend::DType::kF16:
      return 5e-3;
    case backend::DType::kBF16:
      // bfloat16 keeps 8 bits of mantissa: rounding the weights alone moves the golden models'
      // encoder rows by 3.4e-3 on the CPU in float32 (HalfPrecisionWeightsOnTheCpu), so the 5e-3
      // asked of half precision cannot hold once activations are rounded too.
      return 1e-2;
  }
  return 1e-4;
}

std::string test_device_name() {
  const std::string device = env("IFW_TEST_DEVICE");
  if (device.empty() || device == "cpu") return "cpu";
  return device + " " + std::string(backend::dtype_name(test_precision()));
}

std::vector<float> to_host(backend::Backend& backend, const backend::Tensor& tensor) {
  std::vector<float> out(static_cast<std::size_t>(tensor.numel()));
  backend.download(tensor, out);
  return out;
}

}  // namespace ifw::test
