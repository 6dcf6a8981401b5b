// A RIFF/WAVE file of 16 kHz samples read in pieces as mono floats: what builds without FFmpeg
// (the engine-only build of GPU hosts, IFW_ENGINE_ONLY) read instead of every format. PCM of 8,
// 16, 24 or 32 bits and IEEE floats of 32 or 64 bits, plain or WAVE_FORMAT_EXTENSIBLE, any
// number of channels (averaged to mono). Other rates need resampling, which FFmpeg's build does.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ifw::audio {

class WavReader {
 public:
  static constexpr int kSampleRate = 16000;

  // Opens `path` ("-" reads standard input). Throws ifw::Error naming the file and what is
  // wrong: missing, not a WAVE file, an encoding or rate it does not read.
  explicit WavReader(const std::string& path);

  // Fills `out` with the next samples; fewer only at the end (a file shorter than its header
  // says ends there and counts as damaged). NaN, infinite and absurd float samples read as
  // silence and count as damaged (damaged_samples.hpp).
  std::size_t read(std::span<float> out);
  // The next sample read() returns.
  std::int64_t position() const { return position_; }
  // Moves to `sample` exactly (clamped to the audio); -1 when the input is not seekable.
  std::int64_t seek(std::int64_t sample);
  bool seekable() const { return seekable_; }
  // Samples per channel the header announces (-1: unknown, a stream's header).
  std::int64_t frames() const { return frames_; }
  const std::string& path() const { return path_; }
  std::string description() const;  // "wav, pcm 16-bit, 16000 Hz, 2 channels"
  // Reads that met damaged data (absurd samples, a truncated file).
  int damaged() const { return damaged_; }

 private:
  struct Closer {
    void operator()(std::FILE* f) const;
  };
  void fail(const std::string& what) const;
  void read_exact(void* data, std::size_t bytes, const char* what);
  std::size_t read_piece(std::span<float> out);

  std::string path_;
  std::unique_ptr<std::FILE, Closer> owned_;  // null for standard input
  std::FILE* file_ = nullptr;
  bool seekable_ = false;
  bool is_float_ = false;
  int bits_ = 0;
  int channels_ = 0;
  std::int64_t data_offset_ = 0;  // of the first sample in the file
  std::int64_t frames_ = -1;
  std::int64_t position_ = 0;
  bool ended_ = false;
  int damaged_ = 0;
  std::vector<unsigned char> raw_;  // one read's bytes
};

}  // namespace ifw::audio
