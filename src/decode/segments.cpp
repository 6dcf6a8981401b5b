#include "decode/segments.hpp"

#include <algorithm>

namespace ifw::decode {
namespace {

constexpr double kSecondsPerFrame = 0.01;  // mel hop: 160 samples at 16 kHz
constexpr double kSecondsPerTimestamp = 0.02;
constexpr int kFramesPerTimestamp = 2;  // the encoder's stride

}  // namespace

WindowSegments split_segments(std::span<const TokenId> tokens, TokenId timestamp_begin,
                              int window_start_frame, int window_frames, bool keep_unfinished) {
  WindowSegments out;
  const double offset = window_start_frame * kSecondsPerFrame;
  const auto n = tokens.size();
  const auto is_timestamp = [&](std::size_t i) { return tokens[i] >= timestamp_begin; };
  const auto seconds = [&](TokenId t) {
    return offset + (t - timestamp_begin) * kSecondsPerTimestamp;
  };

  // Segment boundaries: right after each pair of consecutive timestamps.
  std::vector<std::size_t> slices;
  for (std::size_t i = 1; i < n; ++i) {
    if (is_timestamp(i - 1) && is_timestamp(i)) slices.push_back(i);
  }
  const bool single_timestamp_ending = n >= 2 && !is_timestamp(n - 2) && is_timestamp(n - 1);

  if (slices.empty()) {
    Segment s;
    s.start = offset;
    double last = window_frames * kSecondsPerFrame;  // no timestamps: the window's audio
    for (std::size_t i = n; i-- > 0;) {
      if (is_timestamp(i)) {
        // A timestamp but no pair: the last one ends the segment (unless it is <|0.00|>).
        if (tokens[i] != timestamp_begin)
          last = (tokens[i] - timestamp_begin) * kSecondsPerTimestamp;
        break;
      }
    }
    s.end = offset + last;
    s.tokens.assign(tokens.begin(), tokens.end());
    out.segments.push_back(std::move(s));
    out.frames_consumed = window_frames;
    return out;
  }

  if (single_timestamp_ending) {
    slices.push_back(n);
  } else {
    slices.back() += 1;  // the last segment keeps its closing timestamp
  }
  std::size_t last_slice = 0;
  for (std::size_t k = 0; k < slices.size(); ++k) {
    const std::size_t current = slices[k];
    const bool is_last = k + 1 == slices.size();
    Segment s;
    s.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(last_slice),
                    tokens.begin() + static_cast<std::ptrdiff_t>(current));
    s.start = seconds(s.tokens.front());
    s.end = seconds(s.tokens[s.tokens.size() - (!is_last || single_timestamp_ending ? 1 : 2)]);
    out.segments.push_back(std::move(s));
    last_slice = current;
  }
  if (single_timestamp_ending) {
    out.frames_consumed = window_frames;
  } else if (keep_unfinished) {
    if (last_slice < n) {
      Segment s;
      s.tokens.assign(tokens.begin() + static_cast<std::ptrdiff_t>(last_slice), tokens.end());
      s.start = seconds(tokens[last_slice - 1]);
      s.end = std::max(s.start, offset + window_frames * kSecondsPerFrame);
      out.segments.push_back(std::move(s));
    }
    out.frames_consumed = window_frames;
  } else {
    const TokenId last_timestamp = tokens[last_slice - 2];
    out.frames_consumed = (last_timestamp - timestamp_begin) * kFramesPerTimestamp;
    // The reference would decode the same window forever after a lone <|0.00|> pair.
    if (out.frames_consumed <= 0) out.frames_consumed = window_frames;
  }
  return out;
}

}  // namespace ifw::decode
