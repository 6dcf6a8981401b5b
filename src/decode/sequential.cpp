#include "decode/sequential.hpp"

#include <algorithm>

#include <fmt/format.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

namespace ifw::decode {

std::vector<WindowPass> decode_sequential(const engine::WhisperModel& model,
                                          std::span<const float> mel, int total_frames,
                                          const GreedyOptions& options, TokenId timestamp_begin) {
  const int n_mels = model.config().num_mel_bins;
  if (total_frames < 1 ||
      mel.size() != static_cast<std::size_t>(n_mels) * static_cast<std::size_t>(total_frames)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("mel holds {} values, not {} bins x {} frames", mel.size(), n_mels,
                            total_frames));
  }
  std::vector<WindowPass> passes;
  std::vector<float> window(static_cast<std::size_t>(n_mels) * kFramesPerWindow);
  for (int seek = 0; seek < total_frames;) {
    WindowPass pass;
    pass.start_frame = seek;
    pass.frames = std::min(total_frames - seek, kFramesPerWindow);
    // The window's frames, zero-padded to 30 s as the reference pads its input features.
    std::fill(window.begin(), window.end(), 0.0f);
    for (int c = 0; c < n_mels; ++c) {
      const float* src =
          mel.data() + static_cast<std::size_t>(c) * static_cast<std::size_t>(total_frames) + seek;
      std::copy_n(src, pass.frames,
                  window.begin() + static_cast<std::ptrdiff_t>(c) * kFramesPerWindow);
    }
    const backend::Tensor states = model.encode(window, 1);
    pass.result = std::move(greedy_decode(model, states, options).front());
    pass.tokens = pass.result.tokens;
    if (pass.result.ended && !pass.tokens.empty()) pass.tokens.pop_back();
    pass.split = split_segments(pass.tokens, timestamp_begin, seek, pass.frames);
    seek += pass.split.frames_consumed;
    passes.push_back(std::move(pass));
  }
  return passes;
}

std::vector<TokenId> concatenated_tokens(const std::vector<WindowPass>& passes) {
  std::vector<TokenId> out;
  for (const WindowPass& p : passes) {
    for (const Segment& s : p.split.segments)
      out.insert(out.end(), s.tokens.begin(), s.tokens.end());
  }
  return out;
}

}  // namespace ifw::decode
