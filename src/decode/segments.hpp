// Splitting one window's decoded tokens into timed segments at Whisper's timestamp tokens, and
// where the next window must start: the reference's rules (transformers' _retrieve_segment).
#pragma once

#include <span>
#include <vector>

#include "decode/logits_rules.hpp"

namespace ifw::decode {

struct Segment {
  double start = 0.0;  // seconds from the start of the audio
  double end = 0.0;
  std::vector<TokenId> tokens;  // the timestamp tokens that bound it included
};

struct WindowSegments {
  std::vector<Segment> segments;
  int frames_consumed = 0;  // mel frames (10 ms each) to advance before the next window
};

// `tokens`: the window's generated tokens without a final end of text. `window_start_frame`:
// where the window begins in the audio; `window_frames`: how many frames of audio it holds
// (3000 for a full 30 s window).
// - No pair of consecutive timestamps: one segment, the whole window is consumed.
// - Otherwise a segment ends at each such pair. When the text ends on a lone timestamp, the
//   window is consumed; when it ends inside an unfinished segment, the next window starts at the
//   last complete segment's end (what the reference does; always at least one frame forward).
//   With `keep_unfinished` (windows that are never decoded again: the batched strategy cuts the
//   audio in fixed windows) that unfinished text becomes a last segment up to the window's end,
//   and the window is consumed: dropping it would lose words at every such cut.
WindowSegments split_segments(std::span<const TokenId> tokens, TokenId timestamp_begin,
                              int window_start_frame, int window_frames,
                              bool keep_unfinished = false);

}  // namespace ifw::decode
