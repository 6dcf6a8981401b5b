// Whisper's log-mel spectrogram of one 30 s window (FFTW single precision).
#pragma once

#include <memory>
#include <span>
#include <vector>

namespace ifw::audio {

class LogMelSpectrogram {
 public:
  // n_mels: 80 or 128 in published models; any count from 1 to 512 is computed.
  explicit LogMelSpectrogram(int n_mels);
  ~LogMelSpectrogram();
  LogMelSpectrogram(const LogMelSpectrogram&) = delete;
  LogMelSpectrogram& operator=(const LogMelSpectrogram&) = delete;

  // Up to 30 s of 16 kHz mono samples (zero-padded or trimmed to 30 s) -> [n_mels][3000].
  // Thread-safe: calls share only read-only state. Throws ifw::Error for a non-finite sample.
  std::vector<float> compute(std::span<const float> samples) const;
  void compute(std::span<const float> samples, std::span<float> out) const;

  int n_mels() const { return n_mels_; }

 private:
  struct Plan;
  int n_mels_;
  std::vector<float> filters_;  // [n_mels][201]
  std::vector<float> window_;   // periodic Hann, 400
  std::unique_ptr<Plan> plan_;
};

}  // namespace ifw::audio
