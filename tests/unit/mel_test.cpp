// The log-mel front end on signals whose features are known in closed form.
#include <algorithm>
#include <cmath>
#include <numbers>
#include <thread>

#include <gtest/gtest.h>

#include <ifw/audio.hpp>

#include "audio/log_mel.hpp"
#include "audio/mel_filters.hpp"
#include "support/expect_error.hpp"

namespace ifw::test {
namespace {

std::vector<float> sine(double hz, double seconds, double amplitude) {
  std::vector<float> s(static_cast<std::size_t>(seconds * kSampleRate));
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = static_cast<float>(
        amplitude * std::sin(2.0 * std::numbers::pi * hz * static_cast<double>(i) / kSampleRate));
  }
  return s;
}

float at(const std::vector<float>& mel, int bin, int frame) {
  return mel[static_cast<std::size_t>(bin) * kFramesPerWindow + static_cast<std::size_t>(frame)];
}

TEST(LogMel, SilenceIsTheFloorEverywhere) {
  // log10(1e-10) = -10, clamped to itself, then (x + 4) / 4.
  for (const int n_mels : {80, 128}) {
    const auto mel = log_mel_spectrogram(std::vector<float>(16000, 0.0f), n_mels);
    ASSERT_EQ(mel.size(), static_cast<std::size_t>(n_mels) * kFramesPerWindow);
    for (const float v : mel)
      ASSERT_FLOAT_EQ(v, -1.5f);
  }
  EXPECT_EQ(log_mel_spectrogram({}, 80), log_mel_spectrogram(std::vector<float>(480000, 0.0f), 80));
}

TEST(LogMel, PureToneLightsTheFilterAroundItsFrequency) {
  const auto filters = audio::slaney_mel_filters(80, kFftSize, kSampleRate);
  // The filter with the largest weight on the FFT bin of 1 kHz (bin 25: 40 Hz per bin).
  int expected = 0;
  for (int m = 1; m < 80; ++m) {
    if (filters[static_cast<std::size_t>(m) * 201 + 25] >
        filters[static_cast<std::size_t>(expected) * 201 + 25])
      expected = m;
  }
  const auto mel = log_mel_spectrogram(sine(1000.0, 10.0, 0.5), 80);
  const int frame = 500;  // 5 s in
  int loudest = 0;
  for (int m = 1; m < 80; ++m) {
    if (at(mel, m, frame) > at(mel, loudest, frame)) loudest = m;
  }
  EXPECT_EQ(loudest, expected);
  const float max = *std::max_element(mel.begin(), mel.end());
  EXPECT_NEAR(at(mel, loudest, frame), max, 1e-3);
  // Far from the tone the spectrum sits at the clamp, 8 log10 units (2 after scaling) below max.
  EXPECT_NEAR(at(mel, 79, frame), max - 2.0f, 1e-5);
  // After the tone stops (10 s), frames are silent, at the same floor.
  EXPECT_NEAR(at(mel, loudest, 2000), max - 2.0f, 1e-5);
}

TEST(LogMel, ClippedAndOverdrivenInputStaysFinite) {
  auto square = sine(440.0, 30.0, 5.0);
  for (float& v : square)
    v = std::clamp(v, -1.0f, 1.0f);  // hard-clipped to full scale
  const auto clipped = log_mel_spectrogram(square, 128);
  const auto overdriven = log_mel_spectrogram(sine(440.0, 30.0, 1000.0), 128);
  for (const auto* mel : {&clipped, &overdriven}) {
    const auto [lo, hi] = std::minmax_element(mel->begin(), mel->end());
    EXPECT_TRUE(std::isfinite(*lo) && std::isfinite(*hi));
    EXPECT_LE(*hi - *lo, 2.0f + 1e-5f);  // the dynamic range is clamped to 8 log10 units
  }
  // Clipping adds harmonics: bins above the fundamental carry energy a clean tone lacks.
  const auto clean = log_mel_spectrogram(sine(440.0, 30.0, 1.0), 128);
  EXPECT_GT(at(clipped, 100, 1500), at(clean, 100, 1500));
}

TEST(LogMel, LongerInputIsTrimmedToThirtySeconds) {
  const auto tone = sine(300.0, 40.0, 0.3);
  const auto trimmed =
      std::vector<float>(tone.begin(), tone.begin() + static_cast<long>(kWindowSamples));
  EXPECT_EQ(log_mel_spectrogram(tone, 80), log_mel_spectrogram(trimmed, 80));
}

TEST(LogMel, RejectsNonFiniteSamplesAndBadBinCounts) {
  std::vector<float> s(1000, 0.1f);
  s[123] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_IFW_ERROR(log_mel_spectrogram(s, 80), "audio sample 123 is nan");
  s[123] = std::numeric_limits<float>::infinity();
  EXPECT_IFW_ERROR(log_mel_spectrogram(s, 80), "audio sample 123 is inf");
  EXPECT_IFW_ERROR(log_mel_spectrogram(s, 0), "mel bin count 0 is out of range");
  EXPECT_IFW_ERROR(log_mel_spectrogram(s, 4096), "mel bin count 4096");
  audio::LogMelSpectrogram extractor(80);
  std::vector<float> wrong(10);
  EXPECT_IFW_ERROR(extractor.compute(s, wrong), "holds 10 values");
}

TEST(MelFilters, SlaneyTrianglesWithUnitArea) {
  const auto f = audio::slaney_mel_filters(80, 400, 16000);
  ASSERT_EQ(f.size(), 80u * 201u);
  int previous_peak = -1;
  for (int m = 0; m < 80; ++m) {
    const auto row = f.begin() + static_cast<long>(m) * 201;
    EXPECT_TRUE(std::all_of(row, row + 201, [](double v) { return v >= 0.0; }));
    const int peak = static_cast<int>(std::max_element(row, row + 201) - row);
    EXPECT_GE(peak, previous_peak);  // centres rise with the filter index
    previous_peak = peak;
  }
  // The DC bin is outside every triangle; the top filter reaches the Nyquist bin's neighbour.
  EXPECT_EQ(f[0], 0.0);
  EXPECT_GT(f[79 * 201 + 199], 0.0);
}

TEST(LogMel, ThreadSafeAcrossConcurrentCalls) {
  const auto tone = sine(700.0, 5.0, 0.4);
  const auto expected = log_mel_spectrogram(tone, 80);
  std::vector<std::thread> threads;
  std::vector<int> equal(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back(
        [&, t] { equal[static_cast<std::size_t>(t)] = log_mel_spectrogram(tone, 80) == expected; });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(equal, (std::vector<int>{1, 1, 1, 1}));
}

}  // namespace
}  // namespace ifw::test
