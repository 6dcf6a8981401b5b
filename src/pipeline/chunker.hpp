// Cuts a stream of samples into windows of at most 30 s, each ending at the quietest moment near
// its end, so that words are rarely cut in two. Holds at most one window and its lookahead.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

namespace ifw::pipeline {

struct AudioWindow {
  std::int64_t start_sample = 0;  // in the file, at 16 kHz
  std::vector<float> samples;     // at most 30 s
  bool last = false;              // no audio follows
};

struct ChunkerOptions {
  double window_seconds = 30.0;
  double search_seconds = 5.0;  // a cut is sought in the last seconds of a full window
};

class Chunker {
 public:
  // `read` fills its span and returns how many samples it wrote (0 at the end of the stream).
  using Reader = std::function<std::size_t(std::span<float>)>;
  Chunker(Reader read, ChunkerOptions options = {});

  std::optional<AudioWindow> next();

  // Where, in [begin, end) of `samples`, the quietest 20 ms lies (the cut point).
  static std::size_t quietest_point(const std::vector<float>& samples, std::size_t begin,
                                    std::size_t end);

 private:
  Reader read_;
  ChunkerOptions options_;
  std::vector<float> buffer_;  // samples from buffer_start_ on, not yet in a window
  std::int64_t buffer_start_ = 0;
  bool eof_ = false;
};

}  // namespace ifw::pipeline
