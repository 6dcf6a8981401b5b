// Whisper's decoding rules, applied to one row of logits before the next token is chosen, in
// the reference's order: begin-suppression, suppression, then the timestamp rules.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "backend/token_choice.hpp"

namespace ifw::decode {

using TokenId = std::int32_t;

struct DecodingRules {
  std::vector<TokenId> suppress_tokens;        // never generated
  std::vector<TokenId> begin_suppress_tokens;  // not as the first generated token
  bool timestamps = false;                     // apply the timestamp rules
  TokenId end_of_text = -1;
  TokenId no_timestamps = -1;
  TokenId timestamp_begin = -1;  // "<|0.00|>"; every id from here on is a timestamp
  std::optional<int> max_initial_timestamp_index;
};

// Sets the logits of forbidden tokens to -inf. `generated`: the tokens produced so far after
// the prompt (empty before the first one).
void apply_rules(const DecodingRules& rules, std::span<const TokenId> generated,
                 std::span<float> logits);

// The same rules in the form a backend applies them: per token flags (built once per decoding)
// and, per row, what the tokens generated so far forbid (`first` for an empty `generated`).
std::vector<std::uint8_t> token_flags(const DecodingRules& rules, std::size_t vocabulary);
backend::RowRules row_rules(const DecodingRules& rules, std::span<const TokenId> generated);

// Index of the largest logit (the first one on ties, as torch.argmax).
TokenId argmax(std::span<const float> logits);
// log softmax(logits)[token], computed in double precision.
double log_probability(std::span<const float> logits, TokenId token);

}  // namespace ifw::decode
