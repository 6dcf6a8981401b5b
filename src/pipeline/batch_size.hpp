// How many windows to decode together when the user did not say: as many as the free memory
// holds comfortably (the encoder's activations and the decoder's caches grow with the batch).
#pragma once

#include "backend/backend.hpp"
#include "model/whisper_config.hpp"

namespace ifw::pipeline {

// Bytes one window of a batch needs on `device`, its activations `element_bytes` wide.
double bytes_per_window(const model::WhisperConfig& config, double element_bytes,
                        backend::Device device);

// Windows that fit in `share` of `free_bytes`, between 1 and `most`.
int windows_that_fit(double free_bytes, double share, double bytes_per_window, int most);

// On a GPU (`gpu_index` of the backend): half of the device's free memory, at most 64 windows.
// On the CPU: a quarter of the free host memory, at most `most_on_cpu`.
int planned_batch_size(const model::WhisperConfig& config, const backend::Backend& backend,
                       int gpu_index, int most_on_cpu);

}  // namespace ifw::pipeline
