// Where a file's windows come from, for the two strategies:
// - ChunkedWindows (batched): 30 s windows cut at quiet points, all independent, so any number
//   of them can be decoded at once.
// - SeekingWindows (sequential, as openai/whisper): each window starts where the previous one's
//   last complete segment ended, so one is decoded at a time per file.
// Both stream the audio and hold at most a window and its lookahead; with voice activity
// detection they skip silent stretches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "pipeline/chunker.hpp"
#include "pipeline/voice_activity.hpp"

namespace ifw::pipeline {

class WindowSource {
 public:
  virtual ~WindowSource() = default;
  // The next window to decode; nullopt when none is available now (all were handed out, or the
  // next depends on a window still being decoded). Throws ifw::Error when reading fails.
  virtual std::optional<AudioWindow> next() = 0;
  // The window that starts at `start_sample` and holds `length` samples was decoded; its text
  // reached `frames_consumed` mel frames (10 ms) into it. (By position: a window's samples may be
  // gone by then, once its features were computed.)
  virtual void done(std::int64_t start_sample, std::size_t length, int frames_consumed) = 0;
  // No window will come any more.
  virtual bool exhausted() const = 0;
  // Samples of the file read so far (its duration once exhausted).
  virtual std::int64_t samples_read() const = 0;
};

// `read`: the file's samples (a decoder's or a read-ahead's read); it must outlive the source.
// `vad`: skip silence (nullptr: keep everything).
std::unique_ptr<WindowSource> chunked_windows(Chunker::Reader read, const VoiceActivity* vad);
std::unique_ptr<WindowSource> seeking_windows(Chunker::Reader read, const VoiceActivity* vad);

}  // namespace ifw::pipeline
