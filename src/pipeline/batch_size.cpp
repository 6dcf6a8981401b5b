#include "pipeline/batch_size.hpp"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "backend/devices.hpp"
#include "backend/dtype.hpp"

namespace ifw::pipeline {

double bytes_per_window(const model::WhisperConfig& c, double element_bytes,
                        backend::Device device) {
  const bool gpu = device == backend::Device::kCuda;
  return element_bytes * (1500.0 * (c.encoder_ffn_dim + 6.0 * c.d_model) +  // encoder activations
                          2.0 * c.decoder_layers * 448.0 * c.d_model +      // self-attention caches
                          2.0 * c.decoder_layers * 1500.0 * c.d_model) +    // cross keys, values
         4.0 * 1500.0 * (gpu ? 8.0 * c.d_model : 1500.0 * 2.0);  // residual; CPU attention scores
}

int windows_that_fit(double free_bytes, double share, double bytes_per_window, int most) {
  const double windows = free_bytes * share / bytes_per_window;
  if (!std::isfinite(windows) || windows < 1.0) return 1;
  return static_cast<int>(std::min(windows, static_cast<double>(std::max(most, 1))));
}

int planned_batch_size(const model::WhisperConfig& config, const backend::Backend& backend,
                       int gpu_index, int most_on_cpu) {
  const double per_window =
      bytes_per_window(config, static_cast<double>(backend::dtype_size(backend.activation_dtype())),
                       backend.device());
  double free_bytes = 4e9;  // when the system does not say
  if (backend.device() == backend::Device::kCuda) {
    try {
      free_bytes = static_cast<double>(backend::device_memory(gpu_index).free);
    } catch (const Error& e) {
      spdlog::debug("device memory unknown: {}", e.what());
    }
    return windows_that_fit(free_bytes, 0.5, per_window, 64);
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) free_bytes = static_cast<double>(pages) * static_cast<double>(page);
  return windows_that_fit(free_bytes, 0.25, per_window, most_on_cpu);
}

}  // namespace ifw::pipeline
