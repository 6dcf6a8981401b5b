// AudioDecoder for builds without FFmpeg (IFW_ENGINE_ONLY: GPU hosts with only the CUDA toolkit):
// 16 kHz WAV files through WavReader; anything else is refused with the reason.
#include <ifw/error.hpp>

#include "audio/audio_decoder.hpp"
#include "audio/wav_reader.hpp"

namespace ifw::audio {

struct AudioDecoder::State {
  explicit State(const std::string& path) : reader(path) {}
  WavReader reader;
};

AudioDecoder::AudioDecoder(const std::string& path) : state_(std::make_unique<State>(path)) {}

AudioDecoder::~AudioDecoder() = default;

std::size_t AudioDecoder::read(std::span<float> out) {
  return state_->reader.read(out);
}

std::int64_t AudioDecoder::position() const {
  return state_->reader.position();
}

bool AudioDecoder::seekable() const {
  return state_->reader.seekable();
}

bool AudioDecoder::seeks_exactly() const {
  return state_->reader.seekable();  // a sample's bytes are at a known offset
}

std::int64_t AudioDecoder::seek(std::int64_t sample) {
  return state_->reader.seek(sample);
}

double AudioDecoder::duration_seconds() const {
  const std::int64_t frames = state_->reader.frames();
  return frames < 0 ? -1.0 : static_cast<double>(frames) / WavReader::kSampleRate;
}

const std::string& AudioDecoder::path() const {
  return state_->reader.path();
}

std::string AudioDecoder::description() const {
  return state_->reader.description();
}

int AudioDecoder::damaged_packets() const {
  return state_->reader.damaged();
}

bool AudioDecoder::duration_is_estimate() const {
  return false;
}

}  // namespace ifw::audio
