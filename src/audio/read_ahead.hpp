// A file's audio decoded ahead of its use on background threads, so that decoding overlaps the
// model's work: beside a GPU, one core decodes a podcast's MP3 at ~550x realtime, slower than
// the GPU transcribes it.
//
// A file that can be read from any point (seekable, with a duration its container states) is
// decoded in segments on several threads at once. Each segment's decoder starts a little before
// its segment, and where two segments meet their samples are compared: equal, the later one
// takes over; different (the container's seek was not exact) or not comparable (silence there),
// the earlier decoder reads on through the segment instead. Either way the samples are those of
// a reading from the start, to the codec's rounding. Anything else (standard input, durations
// guessed from the bit rate, short files) is read by one thread ahead of use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "audio/audio_decoder.hpp"

namespace ifw::audio {

struct ReadAheadOptions {
  int threads = 1;                // decoders at work at once on segments of one file
  double ahead_seconds = 240.0;   // decoded audio held ahead of the reader, at most
  double segment_seconds = 60.0;  // audio per segment
};

struct ReadAheadStats {
  int segments = 0;  // segments read so far
  int joined = 0;    // of which decoded after a seek and taken over once their start matched
  int read_on = 0;   // of which read on by the decoder before them (the start did not match)
};

class ReadAhead {
 public:
  // Takes over `decoder`, just opened (nothing read yet), and starts reading.
  ReadAhead(std::unique_ptr<AudioDecoder> decoder, ReadAheadOptions options);
  ~ReadAhead();  // stops and joins the threads
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // As AudioDecoder::read: fills `out`, fewer samples only at the end of the audio; a decoder's
  // ifw::Error is thrown once the samples before it were handed out.
  std::size_t read(std::span<float> out);

  // Damaged packets in the segments taken so far (each counted once; all of them once read()
  // returned fewer samples than asked).
  int damaged_packets() const;
  // Whether segments were planned in parallel (false: one thread reads ahead).
  bool parallel() const;
  ReadAheadStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace ifw::audio
