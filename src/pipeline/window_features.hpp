// Log-mel features of windows, one after another in one buffer: what the encoder reads for a
// batch. Computed window by window on any number of threads, possibly ahead of the batch that
// will read them (beside a GPU, while the batch before runs there).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "audio/log_mel.hpp"
#include "backend/backend.hpp"

namespace ifw::pipeline {

class FeatureBuffer {
 public:
  // The values live in `backend`'s host memory for uploads (page-locked beside a GPU: the
  // encoder's upload then runs at the link's full speed), or in plain memory without one.
  FeatureBuffer(std::shared_ptr<const audio::LogMelSpectrogram> extractor, std::size_t windows,
                backend::Backend* backend = nullptr);

  // Computes window i's features from its samples. Calls for different windows may run on
  // different threads at once. Samples the extractor refuses (not finite numbers) leave the
  // window's error (and zeros) instead of an exception: the other windows are not the worse for it.
  void compute(std::size_t i, std::span<const float> samples);

  std::size_t size() const { return errors_.size(); }
  std::size_t per_window() const { return per_window_; }
  // Windows [first, first + count), one after another.
  std::span<const float> windows(std::size_t first, std::size_t count) const;
  // Why window i has no features (empty: it has them).
  const std::string& error(std::size_t i) const { return errors_.at(i); }

 private:
  std::shared_ptr<const audio::LogMelSpectrogram> extractor_;
  std::size_t per_window_;
  backend::HostBuffer values_;
  std::vector<std::string> errors_;
};

// Where one window's features are.
struct FeatureRef {
  std::shared_ptr<const FeatureBuffer> buffer;
  std::size_t index = 0;
};

// The features of a batch as one span: the windows' own buffer where they lie there one after
// another in the batch's order (no copy: the usual case), else gathered into `scratch`, taken
// from `backend`'s memory for uploads (plain memory without one).
std::span<const float> gather_features(std::span<const FeatureRef> windows,
                                       backend::HostBuffer& scratch,
                                       backend::Backend* backend = nullptr);

}  // namespace ifw::pipeline
