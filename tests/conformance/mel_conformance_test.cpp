// Log-mel features of the JFK recording against the reference's, for 80 and 128 bins.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include <ifw/audio.hpp>

#include "support/golden.hpp"

namespace ifw::test {
namespace {

class MelConformance : public ::testing::TestWithParam<int> {};

TEST_P(MelConformance, MatchesTheReferenceWithin2e4) {
  IFW_REQUIRE_GOLDEN();
  const int n_mels = GetParam();
  const auto pcm = read_f32_file(*golden_dir() / "reference" / "jfk_16k.f32");
  ASSERT_EQ(pcm.size(), 176000u);
  const auto reference =
      read_f32_file(*golden_dir() / "reference" / ("jfk_mel" + std::to_string(n_mels) + ".f32"));
  ASSERT_EQ(reference.size(), static_cast<std::size_t>(n_mels) * kFramesPerWindow);

  const std::vector<float> mel = log_mel_spectrogram(pcm, n_mels);
  ASSERT_EQ(mel.size(), reference.size());
  double max_diff = 0.0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < mel.size(); ++i) {
    const double d = std::fabs(static_cast<double>(mel[i]) - reference[i]);
    if (d > max_diff) {
      max_diff = d;
      worst = i;
    }
  }
  RecordProperty("max_abs_diff", std::to_string(max_diff));
  EXPECT_LE(max_diff, 2e-4) << "worst at bin " << worst / kFramesPerWindow << ", frame "
                            << worst % kFramesPerWindow << ": " << mel[worst] << " vs "
                            << reference[worst];
  std::cout << "[ mel " << n_mels << " ] max |diff| = " << max_diff << "\n";
}

INSTANTIATE_TEST_SUITE_P(Bins, MelConformance, ::testing::Values(80, 128),
                         [](const auto& param_info) {
                           return "mel" + std::to_string(param_info.param);
                         });

}  // namespace
}  // namespace ifw::test
