// Decoding a batch of windows token by token: the most likely allowed token (greedy), or a token
// drawn from the allowed distribution at a temperature (openai/whisper's fallback).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "decode/logits_rules.hpp"
#include "engine/whisper_model.hpp"

namespace ifw::decode {

struct GreedyOptions {
  // e.g. <|startoftranscript|><|en|><|transcribe|><|notimestamps|>, shared by every item...
  std::vector<TokenId> prompt;
  // ...or one per item (a language each, previous text each).
  std::vector<std::vector<TokenId>> item_prompts;
  int max_new_tokens = 224;
  const DecodingRules* rules = nullptr;  // nullptr: plain argmax over the whole vocabulary
  std::vector<TokenId> end_tokens;       // generation of an item stops at any of these
  // openai's no-speech probability: this token's probability at <|startoftranscript|>.
  std::optional<TokenId> no_speech_token;
  TokenId start_of_transcript = -1;  // where in the prompt to read it (default: the first token)
  // Collect the cross-attention of these heads for every position (for token timestamps).
  std::vector<model::AlignmentHead> alignment_heads;
  double temperature = 0.0;  // above 0: sample from softmax(logits / temperature)
  // Asked between steps; when it says stop, decoding ends and every result is marked stopped.
  std::function<bool()> stop;
  std::uint64_t seed = 0;  // for sampling; results are reproducible for a seed
};

struct GreedyResult {
  std::vector<TokenId> tokens;  // generated, the final end token included when one came
  bool ended = false;           // an end token came (rather than the length limit)
  double sum_logprob = 0.0;     // log-probabilities of the generated tokens, rules applied
  double no_speech_prob = 0.0;
  int prompt_length = 0;
  bool stopped = false;  // decoding was told to stop before this window was finished
  // Per alignment head: (prompt + generated - 1) rows of encoder-length weights, row-major.
  std::vector<std::vector<float>> alignment;
};

std::vector<GreedyResult> greedy_decode(const engine::WhisperModel& model,
                                        const backend::Tensor& encoder_states,
                                        const GreedyOptions& options);

}  // namespace ifw::decode
