#include "pipeline/voice_activity.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ifw/audio.hpp>

namespace ifw::pipeline {
namespace {

constexpr std::size_t kLevelFrame = kSampleRate / 50;  // 20 ms

}  // namespace

std::size_t VoiceActivity::first_speech(std::span<const float> samples, std::size_t from) const {
  if (from >= samples.size()) return samples.size();
  const std::size_t frames = (samples.size() - from) / kLevelFrame;
  if (frames == 0) return samples.size();
  std::vector<double> level(frames);
  for (std::size_t f = 0; f < frames; ++f) {
    double energy = 0.0;
    for (std::size_t i = from + f * kLevelFrame; i < from + (f + 1) * kLevelFrame; ++i)
      energy += double{samples[i]} * samples[i];
    level[f] = 10.0 * std::log10(energy / kLevelFrame + 1e-12);
  }
  // The noise floor: the level the quieter tenth of the frames stays under.
  std::vector<double> sorted = level;
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(frames / 10),
                   sorted.end());
  const double floor = sorted[frames / 10];
  const double threshold = std::max(options_.min_level_db, floor + options_.above_floor_db);
  // A window all of one loudness (constant speech, or constant noise) has no floor to stand
  // above: it counts as speech when loud enough at all.
  const bool uniform =
      *std::max_element(level.begin(), level.end()) - floor < options_.above_floor_db;
  for (std::size_t f = 0; f < frames; ++f) {
    if (level[f] > threshold || (uniform && level[f] > options_.min_level_db)) {
      const auto pad = static_cast<std::size_t>(options_.padding_seconds * kSampleRate);
      const std::size_t start = from + f * kLevelFrame;
      return start > from + pad ? start - pad : from;
    }
  }
  return samples.size();
}

}  // namespace ifw::pipeline
