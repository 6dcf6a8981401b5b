#include "decode/greedy.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <ifw/error.hpp>

namespace ifw::decode {

std::vector<GreedyResult> greedy_decode(const engine::WhisperModel& model,
                                        const backend::Tensor& encoder_states,
                                        const GreedyOptions& options) {
  if (options.prompt.empty()) throw Error(ErrorKind::kInvalidArgument, "decoding needs a prompt");
  const int batch = static_cast<int>(encoder_states.dim(0));
  const int max_positions = model.config().max_target_positions;
  const int prompt_len = static_cast<int>(options.prompt.size());
  const int max_new = std::min(options.max_new_tokens, max_positions - prompt_len);
  if (max_new < 1) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("a prompt of {} tokens leaves no room in the decoder's {} positions",
                            prompt_len, max_positions));
  }
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
  const bool want_no_speech = options.no_speech_token.has_value();

  engine::DecoderSession session(model, encoder_states);
  engine::AlignmentCapture capture;
  capture.heads = options.alignment_heads;
  engine::AlignmentCapture* capture_ptr = capture.heads.empty() ? nullptr : &capture;

  std::vector<GreedyResult> results(static_cast<std::size_t>(batch));
  std::vector<int> active(static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b)
    active[static_cast<std::size_t>(b)] = b;

  // Chooses the next token of `item` from its logits row and records it.
  const auto choose = [&](int item, std::span<float> row) {
    GreedyResult& r = results[static_cast<std::size_t>(item)];
    if (options.rules != nullptr) apply_rules(*options.rules, r.tokens, row);
    const TokenId next = argmax(row);
    r.sum_logprob += log_probability(row, next);
    r.tokens.push_back(next);
    if (std::find(options.end_tokens.begin(), options.end_tokens.end(), next) !=
        options.end_tokens.end()) {
      r.ended = true;
    }
  };

  // The prompt, for every item at once.
  std::vector<TokenId> tokens;
  for (int b = 0; b < batch; ++b)
    tokens.insert(tokens.end(), options.prompt.begin(), options.prompt.end());
  const engine::LogitRows rows =
      want_no_speech ? engine::LogitRows::kAll : engine::LogitRows::kLast;
  std::vector<float> logits = session.forward(tokens, prompt_len, active, rows, capture_ptr);
  const std::size_t rows_per_item = want_no_speech ? static_cast<std::size_t>(prompt_len) : 1;
  for (int b = 0; b < batch; ++b) {
    float* item_rows = logits.data() + static_cast<std::size_t>(b) * rows_per_item * vocab;
    if (want_no_speech) {
      const std::span<const float> row(
          item_rows + static_cast<std::size_t>(options.no_speech_row) * vocab, vocab);
      results[static_cast<std::size_t>(b)].no_speech_prob =
          std::exp(log_probability(row, *options.no_speech_token));
    }
    choose(b, std::span<float>(item_rows + (rows_per_item - 1) * vocab, vocab));
  }

  // One token per step for every item still going.
  for (int step = 1; step < max_new; ++step) {
    std::erase_if(active, [&](int b) { return results[static_cast<std::size_t>(b)].ended; });
    if (active.empty()) break;
    tokens.clear();
    for (const int b : active)
      tokens.push_back(results[static_cast<std::size_t>(b)].tokens.back());
    logits = session.forward(tokens, 1, active, engine::LogitRows::kLast, capture_ptr);
    for (std::size_t i = 0; i < active.size(); ++i) {
      choose(active[i], std::span<float>(logits.data() + i * vocab, vocab));
    }
  }

  if (capture_ptr != nullptr) {
    for (int b = 0; b < batch; ++b) {
      if (static_cast<std::size_t>(b) < capture.weights.size()) {
        results[static_cast<std::size_t>(b)].alignment =
            std::move(capture.weights[static_cast<std::size_t>(b)]);
      }
    }
  }
  return results;
}

}  // namespace ifw::decode
