#include "audio/mel_filters.hpp"

#include <algorithm>
#include <cmath>

namespace ifw::audio {
namespace {

// Slaney's scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
constexpr double kMinLogHz = 1000.0;
constexpr double kMinLogMel = 15.0;
const double kLogStep = 27.0 / std::log(6.4);

double hz_to_mel(double hz) {
  return hz < kMinLogHz ? 3.0 * hz / 200.0 : kMinLogMel + std::log(hz / kMinLogHz) * kLogStep;
}

double mel_to_hz(double mel) {
  return mel < kMinLogMel ? 200.0 * mel / 3.0 : kMinLogHz * std::exp((mel - kMinLogMel) / kLogStep);
}

}  // namespace

std::vector<double> slaney_mel_filters(int n_mels, int n_fft, int sample_rate) {
  const int n_bins = n_fft / 2 + 1;
  const double nyquist = sample_rate / 2.0;
  // n_mels + 2 band edges, evenly spaced in mels.
  const double mel_lo = hz_to_mel(0.0), mel_hi = hz_to_mel(nyquist);
  std::vector<double> edges(static_cast<std::size_t>(n_mels) + 2);
  for (std::size_t i = 0; i < edges.size(); ++i) {
    edges[i] = mel_to_hz(mel_lo + (mel_hi - mel_lo) * static_cast<double>(i) /
                                      static_cast<double>(n_mels + 1));
  }
  std::vector<double> filters(static_cast<std::size_t>(n_mels) * static_cast<std::size_t>(n_bins));
  for (int m = 0; m < n_mels; ++m) {
    const double lo = edges[static_cast<std::size_t>(m)];
    const double mid = edges[static_cast<std::size_t>(m) + 1];
    const double hi = edges[static_cast<std::size_t>(m) + 2];
    const double area_norm = 2.0 / (hi - lo);
    for (int k = 0; k < n_bins; ++k) {
      const double f = nyquist * k / (n_bins - 1);
      const double rising = (f - lo) / (mid - lo);
      const double falling = (hi - f) / (hi - mid);
      filters[static_cast<std::size_t>(m) * static_cast<std::size_t>(n_bins) +
              static_cast<std::size_t>(k)] = std::max(0.0, std::min(rising, falling)) * area_norm;
    }
  }
  return filters;
}

}  // namespace ifw::audio
