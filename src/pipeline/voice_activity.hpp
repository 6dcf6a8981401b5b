// Energy-based voice activity: which 20 ms frames of audio are loud enough, relative to the
// recording's own noise floor, to hold speech. Used to skip silent stretches, against the text
// Whisper hallucinates on silence.
#pragma once

#include <cstddef>
#include <span>

namespace ifw::pipeline {

struct VoiceActivityOptions {
  double min_level_db = -55.0;   // frames quieter than this (dBFS) are never speech
  double above_floor_db = 12.0;  // speech stands this far above the quieter tenth of the frames
  double padding_seconds = 0.3;  // kept around speech, so that word edges are not cut
};

class VoiceActivity {
 public:
  explicit VoiceActivity(VoiceActivityOptions options = {}) : options_(options) {}
  // Index of the first sample from which speech (with its padding) starts at or after `from`;
  // samples.size() when there is none.
  std::size_t first_speech(std::span<const float> samples, std::size_t from) const;
  bool has_speech(std::span<const float> samples) const {
    return first_speech(samples, 0) < samples.size();
  }

 private:
  VoiceActivityOptions options_;
};

}  // namespace ifw::pipeline
