#include "pipeline/window_features.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

namespace ifw::pipeline {

FeatureBuffer::FeatureBuffer(std::shared_ptr<const audio::LogMelSpectrogram> extractor,
                             std::size_t windows, backend::Backend* backend)
    : extractor_(std::move(extractor)),
      per_window_(static_cast<std::size_t>(extractor_->n_mels()) * kFramesPerWindow),
      values_(backend != nullptr ? backend->host_buffer(per_window_ * windows)
                                 : backend::HostBuffer(per_window_ * windows)),
      errors_(windows) {}

void FeatureBuffer::compute(std::size_t i, std::span<const float> samples) {
  if (i >= size()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("features of window {} in a buffer of {}", i, size()));
  }
  const std::span<float> window = values_.values().subspan(i * per_window_, per_window_);
  try {
    extractor_->compute(samples, window);
  } catch (const Error& e) {
    errors_[i] = e.what();
    std::fill(window.begin(), window.end(), 0.0f);
  }
}

std::span<const float> FeatureBuffer::windows(std::size_t first, std::size_t count) const {
  if (first > size() || count > size() - first) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("windows {} to {} of a buffer of {}", first, first + count, size()));
  }
  return values_.values().subspan(first * per_window_, count * per_window_);
}

std::span<const float> gather_features(std::span<const FeatureRef> windows,
                                       backend::HostBuffer& scratch, backend::Backend* backend) {
  if (windows.empty()) return {};
  const FeatureRef& first = windows.front();
  for (const FeatureRef& w : windows) {
    if (!w.buffer) throw Error(ErrorKind::kInvalidArgument, "a window without features");
    if (w.buffer->per_window() != first.buffer->per_window()) {
      throw Error(ErrorKind::kInvalidArgument, "windows with features of different sizes");
    }
  }
  bool in_place = true;
  for (std::size_t i = 0; i < windows.size() && in_place; ++i) {
    in_place = windows[i].buffer == first.buffer && windows[i].index == first.index + i;
  }
  if (in_place) return first.buffer->windows(first.index, windows.size());
  const std::size_t per_window = first.buffer->per_window(), count = per_window * windows.size();
  scratch = backend != nullptr ? backend->host_buffer(count) : backend::HostBuffer(count);
  const std::span<float> to = scratch.values();
  for (std::size_t i = 0; i < windows.size(); ++i) {
    const auto from = windows[i].buffer->windows(windows[i].index, 1);
    std::copy(from.begin(), from.end(), to.begin() + static_cast<std::ptrdiff_t>(i * per_window));
  }
  return to;
}

}  // namespace ifw::pipeline
