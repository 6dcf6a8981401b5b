#include "audio/log_mel.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>

#include <fftw3.h>
#include <fmt/format.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "audio/mel_filters.hpp"
#include "backend/cpu/blas.hpp"

namespace ifw::audio {
namespace {

constexpr int kBins = kFftSize / 2 + 1;  // 201
constexpr int kPad = kFftSize / 2;       // reflect padding on each side (center=True)

// FFTW's planner is not thread-safe; execution with the new-array interface is. A namespace-scope
// mutex is constant-initialised, so it outlives every static extractor that locks it on exit.
constinit std::mutex planner_mutex;

struct FftwFree {
  void operator()(void* p) const { fftwf_free(p); }
};
template <typename T>
using FftwBuffer = std::unique_ptr<T[], FftwFree>;

template <typename T>
FftwBuffer<T> fftw_alloc(std::size_t n) {
  auto* p = static_cast<T*>(fftwf_malloc(sizeof(T) * n));
  if (p == nullptr) throw std::bad_alloc();
  return FftwBuffer<T>(p);
}

}  // namespace

struct LogMelSpectrogram::Plan {
  fftwf_plan plan = nullptr;
  Plan() {
    // Planned on scratch arrays of the alignment every fftwf_malloc buffer has.
    auto in = fftw_alloc<float>(kFftSize);
    auto out = fftw_alloc<fftwf_complex>(kBins);
    const std::lock_guard lock(planner_mutex);
    plan = fftwf_plan_dft_r2c_1d(kFftSize, in.get(), out.get(), FFTW_ESTIMATE);
    if (plan == nullptr) throw Error(ErrorKind::kIo, "FFTW could not plan a 400-point FFT");
  }
  ~Plan() {
    const std::lock_guard lock(planner_mutex);
    fftwf_destroy_plan(plan);
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
};

LogMelSpectrogram::LogMelSpectrogram(int n_mels) : n_mels_(n_mels) {
  if (n_mels < 1 || n_mels > 512) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("mel bin count {} is out of range (1 to 512; Whisper uses 80 or 128)", n_mels));
  }
  const std::vector<double> filters = slaney_mel_filters(n_mels, kFftSize, kSampleRate);
  filters_.assign(filters.begin(), filters.end());
  window_.resize(kFftSize);
  for (int n = 0; n < kFftSize; ++n) {
    window_[static_cast<std::size_t>(n)] =
        static_cast<float>(0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * n / kFftSize));
  }
  plan_ = std::make_unique<Plan>();
}

LogMelSpectrogram::~LogMelSpectrogram() = default;

std::vector<float> LogMelSpectrogram::compute(std::span<const float> samples) const {
  std::vector<float> out(static_cast<std::size_t>(n_mels_) * kFramesPerWindow);
  compute(samples, out);
  return out;
}

void LogMelSpectrogram::compute(std::span<const float> samples, std::span<float> out) const {
  if (out.size() != static_cast<std::size_t>(n_mels_) * kFramesPerWindow) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("log-mel output holds {} values, expected {} x {}", out.size(), n_mels_,
                            kFramesPerWindow));
  }
  if (samples.size() > kWindowSamples) samples = samples.first(kWindowSamples);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    if (!std::isfinite(samples[i])) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("audio sample {} is {}, not a finite number", i, samples[i]));
    }
  }

  // The window zero-padded to 30 s, then reflect-padded by half an FFT on both sides.
  constexpr std::size_t kPadded = kWindowSamples + 2 * kPad;
  std::vector<float> padded(kPadded, 0.0f);
  std::copy(samples.begin(), samples.end(), padded.begin() + kPad);
  for (int i = 0; i < kPad; ++i) {
    padded[static_cast<std::size_t>(kPad - 1 - i)] = padded[static_cast<std::size_t>(kPad + 1 + i)];
    padded[kPadded - kPad + static_cast<std::size_t>(i)] =
        padded[kPadded - kPad - 2 - static_cast<std::size_t>(i)];
  }

  // Power spectrum of each frame: [3000][201]. (The reference computes 3001 frames and drops
  // the last.)
  std::vector<float> power(static_cast<std::size_t>(kFramesPerWindow) * kBins);
  auto frame = fftw_alloc<float>(kFftSize);
  auto spectrum = fftw_alloc<fftwf_complex>(kBins);
  for (int t = 0; t < kFramesPerWindow; ++t) {
    const float* src = padded.data() + static_cast<std::size_t>(t) * kHopLength;
    for (int n = 0; n < kFftSize; ++n)
      frame[n] = src[n] * window_[static_cast<std::size_t>(n)];
    fftwf_execute_dft_r2c(plan_->plan, frame.get(), spectrum.get());
    float* row = power.data() + static_cast<std::size_t>(t) * kBins;
    for (int k = 0; k < kBins; ++k)
      row[k] = spectrum[k][0] * spectrum[k][0] + spectrum[k][1] * spectrum[k][1];
  }

  // mel[m][t] = sum_k filters[m][k] * power[t][k]
  backend::cpu::blas().sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_mels_, kFramesPerWindow,
                             kBins, 1.0f, filters_.data(), kBins, power.data(), kBins, 0.0f,
                             out.data(), kFramesPerWindow);

  float max_log = -std::numeric_limits<float>::infinity();
  for (float& v : out) {
    v = std::log10(std::max(v, 1e-10f));
    max_log = std::max(max_log, v);
  }
  const float floor = max_log - 8.0f;
  for (float& v : out)
    v = (std::max(v, floor) + 4.0f) / 4.0f;
}

}  // namespace ifw::audio
