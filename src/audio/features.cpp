// Public entry point of the audio front end.
#include <map>
#include <memory>
#include <mutex>

#include <ifw/audio.hpp>

#include "audio/log_mel.hpp"

namespace ifw {

std::vector<float> log_mel_spectrogram(std::span<const float> samples, int n_mels) {
  // One extractor per bin count, built on first use and shared (compute() is thread-safe).
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<audio::LogMelSpectrogram>> extractors;
  const audio::LogMelSpectrogram* extractor;
  {
    const std::lock_guard lock(mutex);
    auto& slot = extractors[n_mels];
    if (!slot) {
      try {
        slot = std::make_unique<audio::LogMelSpectrogram>(n_mels);
      } catch (...) {
        extractors.erase(n_mels);
        throw;
      }
    }
    extractor = slot.get();
  }
  return extractor->compute(samples);
}

}  // namespace ifw
