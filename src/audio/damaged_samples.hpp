// Floating-point audio can hold NaN, infinite or absurdly large samples (damaged or badly written
// files), which would make every feature of their window NaN (a power spectrum past float's
// range): they become silence, and the piece counts as damaged, so that the file's transcript
// says it is incomplete. 10^6 is 120 dB above full scale; files that store floats on the 16-bit
// scale (up to 32768) stay as they are.
#pragma once

#include <cmath>
#include <span>

namespace ifw::audio {

// Silences the damaged samples of `samples`; whether there were any.
inline bool silence_damaged_samples(std::span<float> samples) {
  constexpr float kLargest = 1e6f;
  bool found = false;
  for (float& s : samples) {
    if (!(std::fabs(s) <= kLargest)) {  // NaN compares false
      s = 0.0f;
      found = true;
    }
  }
  return found;
}

}  // namespace ifw::audio
