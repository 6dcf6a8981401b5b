// Whisper's audio front end: 16 kHz mono float samples -> log-mel features of one 30 s window.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace ifw {

inline constexpr int kSampleRate = 16000;
inline constexpr int kWindowSeconds = 30;
inline constexpr std::size_t kWindowSamples = std::size_t{kSampleRate} * kWindowSeconds;  // 480000
inline constexpr int kHopLength = 160;
inline constexpr int kFftSize = 400;
inline constexpr int kFramesPerWindow = static_cast<int>(kWindowSamples / kHopLength);  // 3000

// Log-mel spectrogram of up to 30 s of audio, exactly as Whisper's feature extractor computes it:
// the samples are zero-padded (or trimmed) to 30 s, and the result is [n_mels][3000] row-major.
// n_mels is 80 (tiny ... large-v2) or 128 (large-v3 and later). Throws ifw::Error for an
// unsupported bin count or a sample that is not a finite number.
std::vector<float> log_mel_spectrogram(std::span<const float> samples, int n_mels);

}  // namespace ifw
