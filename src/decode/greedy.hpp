// Greedy decoding of a batch of windows: every item starts from the same prompt and takes the
// most likely allowed token until end of text or the length limit.
#pragma once

#include <optional>
#include <vector>

#include "decode/logits_rules.hpp"
#include "engine/whisper_model.hpp"

namespace ifw::decode {

struct GreedyOptions {
  std::vector<TokenId> prompt;  // e.g. <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
  int max_new_tokens = 224;
  const DecodingRules* rules = nullptr;  // nullptr: plain argmax over the whole vocabulary
  std::vector<TokenId> end_tokens;       // generation of an item stops at any of these
  // The probability of this token at the prompt position `no_speech_row` (openai's no-speech
  // probability, read at <|startoftranscript|>).
  std::optional<TokenId> no_speech_token;
  int no_speech_row = 0;
  // Collect the cross-attention of these heads for every position (for token timestamps).
  std::vector<model::AlignmentHead> alignment_heads;
};

struct GreedyResult {
  std::vector<TokenId> tokens;  // generated, the final end token included when one came
  bool ended = false;           // an end token came (rather than the length limit)
  double sum_logprob = 0.0;     // log-probabilities of the generated tokens, rules applied
  double no_speech_prob = 0.0;
  // Per alignment head: (prompt + generated - 1) rows of encoder-length weights, row-major.
  std::vector<std::vector<float>> alignment;
};

std::vector<GreedyResult> greedy_decode(const engine::WhisperModel& model,
                                        const backend::Tensor& encoder_states,
                                        const GreedyOptions& options);

}  // namespace ifw::decode
