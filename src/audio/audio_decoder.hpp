// Any audio or video file FFmpeg reads, as a stream of 16 kHz mono float samples: the first
// audio stream, decoded and resampled piece by piece, never the whole file in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace ifw::audio {

class AudioDecoder {
 public:
  // Opens `path` ("-" reads standard input). Throws ifw::Error naming the file: missing,
  // unreadable, not a media file, or without an audio stream.
  explicit AudioDecoder(const std::string& path);
  ~AudioDecoder();
  AudioDecoder(const AudioDecoder&) = delete;
  AudioDecoder& operator=(const AudioDecoder&) = delete;

  // Fills `out` with the next samples; returns how many (fewer than out.size() only at the end
  // of the stream, 0 once it is over). Throws ifw::Error when reading fails.
  std::size_t read(std::span<float> out);

  // Where reading is: the stream position (16 kHz samples from the start of the audio) of the
  // next sample read() returns.
  std::int64_t position() const;

  // Moves reading to at most `sample` (16 kHz samples from the start of the audio): to the
  // first frame the container finds at or before it, trimmed to its first input sample that lies
  // exactly on the 16 kHz grid (at most 10 ms in at 44.1 kHz). Returns the new position(), or -1
  // when the file cannot be read from there (a stream, a refused seek, nothing decodable after it);
  // the decoder must then not be read any more. Samples right after a seek may differ slightly from
  // a reading from the start (codec and resampler state start empty), and the container's
  // timestamps decide where reading lands: callers check overlaps where exactness matters.
  std::int64_t seek(std::int64_t sample);
  // Whether seek() can work: a file, not standard input or a pipe.
  bool seekable() const;
  // Whether seek() lands exactly: seekable, and the container's timestamps resolve a single
  // input sample (Matroska's milliseconds do not).
  bool seeks_exactly() const;

  // The container's duration in seconds, or a negative value when it does not say (a stream).
  double duration_seconds() const;
  const std::string& path() const;
  std::string description() const;  // "mp3, 44100 Hz, 2 channels"
  // Packets the decoder could not decode (damaged or truncated data), and decoded frames with NaN,
  // infinite or absurd (beyond 10^6) samples (read as silence); decoding went on.
  int damaged_packets() const;
  // Whether the duration was guessed from the bit rate (variable-rate files without an index),
  // rather than read from the container.
  bool duration_is_estimate() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ifw::audio
