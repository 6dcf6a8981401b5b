#include "decode/logits_rules.hpp"

#include <algorithm>
#include <limits>

namespace ifw::decode {
namespace {

constexpr float kForbidden = -std::numeric_limits<float>::infinity();
constexpr std::int32_t kVocabularyEnd = std::numeric_limits<std::int32_t>::max();

void forbid_each(std::span<float> logits, std::span<const TokenId> tokens) {
  for (const TokenId t : tokens) {
    if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
      logits[static_cast<std::size_t>(t)] = kForbidden;
  }
}

void add_range(backend::RowRules& r, std::int32_t begin, std::int32_t end) {
  r.forbidden[r.ranges][0] = begin;
  r.forbidden[r.ranges][1] = end;
  ++r.ranges;
}

}  // namespace

// Whisper's timestamp rules (openai/whisper ApplyTimestampRules, transformers
// WhisperTimeStampLogitsProcessor) as ranges (at most 3) and the vote.
backend::RowRules row_rules(const DecodingRules& r, std::span<const TokenId> seq) {
  backend::RowRules out;
  out.first = seq.empty() ? 1 : 0;
  if (!r.timestamps) return out;
  out.timestamp_vote = 1;
  out.timestamp_begin = r.timestamp_begin;
  add_range(out, r.no_timestamps, r.no_timestamps + 1);  // chosen by the prompt, not sampled

  // Timestamps come in pairs, except directly before end of text.
  const bool last_was_timestamp = !seq.empty() && seq.back() >= r.timestamp_begin;
  const bool penultimate_was_timestamp = seq.size() < 2 || seq[seq.size() - 2] >= r.timestamp_begin;
  if (last_was_timestamp) {
    if (penultimate_was_timestamp) {
      add_range(out, r.timestamp_begin, kVocabularyEnd);  // text must follow
    } else {
      add_range(out, 0, r.end_of_text);  // the pair must close (or the text end)
    }
  }
  // Timestamps never decrease (and <|0.00|> is not repeated).
  TokenId last_timestamp = -1;
  for (const TokenId t : seq) {
    if (t >= r.timestamp_begin) last_timestamp = t;
  }
  if (last_timestamp >= 0) {
    const TokenId limit =
        last_was_timestamp && !penultimate_was_timestamp ? last_timestamp : last_timestamp + 1;
    add_range(out, r.timestamp_begin, limit);
  }
  // The first token is a timestamp, and not too late.
  if (seq.empty()) {
    add_range(out, 0, r.timestamp_begin);
    if (r.max_initial_timestamp_index)
      add_range(out, r.timestamp_begin + *r.max_initial_timestamp_index + 1, kVocabularyEnd);
  }
  return out;
}

std::vector<std::uint8_t> token_flags(const DecodingRules& rules, std::size_t vocabulary) {
  std::vector<std::uint8_t> flags(vocabulary, 0);
  const auto flag = [&](std::span<const TokenId> tokens, std::uint8_t f) {
    for (const TokenId t : tokens) {
      if (t >= 0 && static_cast<std::size_t>(t) < vocabulary)
        flags[static_cast<std::size_t>(t)] |= f;
    }
  };
  flag(rules.suppress_tokens, backend::kTokenForbidden);
  flag(rules.begin_suppress_tokens, backend::kTokenForbiddenFirst);
  return flags;
}

void apply_rules(const DecodingRules& rules, std::span<const TokenId> generated,
                 std::span<float> logits) {
  if (generated.empty()) forbid_each(logits, rules.begin_suppress_tokens);
  forbid_each(logits, rules.suppress_tokens);
  backend::apply_row_rules({}, row_rules(rules, generated), logits);
}

TokenId argmax(std::span<const float> logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double log_probability(std::span<const float> logits, TokenId token) {
  return static_cast<double>(logits[static_cast<std::size_t>(token)]) -
         backend::log_sum_exp(logits);
}

}  // namespace ifw::decode
