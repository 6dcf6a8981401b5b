#include "backend/device_selection.hpp"

#include <charconv>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/devices.hpp"

namespace ifw::backend {

DeviceSpec parse_device(const std::string& text) {
  if (text == "auto") return {};
  if (text == "cpu") return {false, Device::kCpu, 0};
  if (text == "cuda") return {false, Device::kCuda, 0};
  if (text.starts_with("cuda:") && text.size() > 5) {
    int index = -1;
    const char* begin = text.data() + 5;
    const char* end = text.data() + text.size();
    const auto [p, ec] = std::from_chars(begin, end, index);
    if (ec == std::errc() && p == end && index >= 0) return {false, Device::kCuda, index};
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("--device {}: unknown device (use auto, cpu, cuda or cuda:N)", text));
}

void require_device(const DeviceSpec& spec) {
  if (spec.automatic || spec.kind == Device::kCpu) return;
  const DeviceReport report = describe_devices();
  if (!report.cuda_built || report.gpus.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("--device cuda:{}: {}", spec.index, report.cuda_status));
  }
  if (spec.index >= static_cast<int>(report.gpus.size())) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("--device cuda:{}: no such GPU ({} visible)", spec.index, report.gpus.size()));
  }
}

std::optional<DType> parse_precision(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "fp32" || text == "float32") return DType::kF32;
  if (text == "fp16" || text == "float16") return DType::kF16;
  if (text == "bf16" || text == "bfloat16") return DType::kBF16;
  throw Error(
      ErrorKind::kInvalidArgument,
      fmt::format("--precision {}: unknown precision (use auto, fp32, fp16 or bf16)", text));
}

namespace {

std::unique_ptr<Backend> cpu_backend(std::optional<DType> precision, int threads) {
  if (precision && *precision != DType::kF32) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("--precision {}: the CPU backend computes in float32 only",
                            dtype_name(*precision)));
  }
  return make_cpu_backend(threads);
}

}  // namespace

std::unique_ptr<Backend> make_backend(const DeviceSpec& spec, std::optional<DType> precision,
                                      int cpu_threads) {
  if (!spec.automatic) {
    if (spec.kind == Device::kCpu) return cpu_backend(precision, cpu_threads);
    require_device(spec);
    return make_cuda_backend(spec.index, precision.value_or(DType::kF16));
  }
  const DeviceReport report = describe_devices();
  if (report.cuda_built && !report.gpus.empty()) {
    try {
      return make_cuda_backend(0, precision.value_or(DType::kF16));
    } catch (const Error& e) {
      spdlog::warn("device auto: the GPU cannot be used ({}); running on the CPU", e.what());
    }
  } else {
    spdlog::info("device auto: running on the CPU ({})", report.cuda_status);
  }
  // A half precision asked for a GPU that is not there: the CPU's float32 is what runs.
  return make_cpu_backend(cpu_threads);
}

}  // namespace ifw::backend
