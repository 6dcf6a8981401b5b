// Decoding a log-mel spectrogram window after window, each window starting where the previous
// one's last complete segment ended: the loop of the reference's generate() (which it runs for
// 30 s inputs too, so a window whose text stops mid-segment is decoded again from there).
#pragma once

#include <span>
#include <vector>

#include "decode/greedy.hpp"
#include "decode/segments.hpp"

namespace ifw::decode {

struct WindowPass {
  int start_frame = 0;          // where the window begins in the input
  int frames = 0;               // input frames it covers (the rest of the 30 s is zero-padded)
  GreedyResult result;          // the raw greedy decoding
  std::vector<TokenId> tokens;  // generated tokens without a final end of text
  WindowSegments split;
};

// mel: [n_mels][total_frames]. Greedy decoding with `options` in every window.
std::vector<WindowPass> decode_sequential(const engine::WhisperModel& model,
                                          std::span<const float> mel, int total_frames,
                                          const GreedyOptions& options, TokenId timestamp_begin);

// Every pass's tokens, concatenated segment by segment (the reference's returned sequence).
std::vector<TokenId> concatenated_tokens(const std::vector<WindowPass>& passes);

}  // namespace ifw::decode
