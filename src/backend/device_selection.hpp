// `--device auto|cpu|cuda[:N]` and `--precision auto|fp32|fp16|bf16`: which backend runs a model.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backend/backend.hpp"

namespace ifw::backend {

struct DeviceSpec {
  bool automatic = true;  // "auto": the first GPU when there is one, else the CPU
  Device kind = Device::kCpu;
  int index = 0;
};

// Throws ifw::Error (kInvalidArgument) naming the value when it is none of the forms above.
DeviceSpec parse_device(const std::string& text);
// Throws ifw::Error (kInvalidArgument) when `spec` names a GPU this build or machine does not
// have, saying why; auto and cpu always pass.
void require_device(const DeviceSpec& spec);
// nullopt for "auto" (float16 on a GPU, float32 on the CPU).
std::optional<DType> parse_precision(const std::string& text);

// The backend for `spec`. Under auto, a GPU that cannot be used (no driver, no device, a CUDA
// error) falls back to the CPU with the reason logged; an explicit cuda[:N] fails instead.
std::unique_ptr<Backend> make_backend(const DeviceSpec& spec, std::optional<DType> precision,
                                      int cpu_threads);

}  // namespace ifw::backend
