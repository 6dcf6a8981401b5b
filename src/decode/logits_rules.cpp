#include "decode/logits_rules.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ifw::decode {
namespace {

constexpr float kForbidden = -std::numeric_limits<float>::infinity();

void forbid(std::span<float> logits, std::int64_t begin, std::int64_t end) {
  begin = std::clamp<std::int64_t>(begin, 0, static_cast<std::int64_t>(logits.size()));
  end = std::clamp<std::int64_t>(end, begin, static_cast<std::int64_t>(logits.size()));
  std::fill(logits.begin() + begin, logits.begin() + end, kForbidden);
}

void forbid_each(std::span<float> logits, std::span<const TokenId> tokens) {
  for (const TokenId t : tokens) {
    if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
      logits[static_cast<std::size_t>(t)] = kForbidden;
  }
}

// log(sum(exp(x))) over a range, in double; -inf when every entry is -inf.
double log_sum_exp(std::span<const float> x) {
  float max = kForbidden;
  for (const float v : x)
    max = std::max(max, v);
  if (max == kForbidden) return -std::numeric_limits<double>::infinity();
  double sum = 0.0;
  for (const float v : x)
    sum += std::exp(static_cast<double>(v) - max);
  return max + std::log(sum);
}

// Whisper's timestamp rules (openai/whisper ApplyTimestampRules, transformers
// WhisperTimeStampLogitsProcessor).
void timestamp_rules(const DecodingRules& r, std::span<const TokenId> seq,
                     std::span<float> logits) {
  logits[static_cast<std::size_t>(r.no_timestamps)] =
      kForbidden;  // chosen by the prompt, not sampled

  // Timestamps come in pairs, except directly before end of text.
  const bool last_was_timestamp = !seq.empty() && seq.back() >= r.timestamp_begin;
  const bool penultimate_was_timestamp = seq.size() < 2 || seq[seq.size() - 2] >= r.timestamp_begin;
  if (last_was_timestamp) {
    if (penultimate_was_timestamp) {
      forbid(logits, r.timestamp_begin,
             static_cast<std::int64_t>(logits.size()));  // text must follow
    } else {
      forbid(logits, 0, r.end_of_text);  // the pair must close (or the text end)
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
    forbid(logits, r.timestamp_begin, limit);
  }
  // The first token is a timestamp, and not too late.
  if (seq.empty()) {
    forbid(logits, 0, r.timestamp_begin);
    if (r.max_initial_timestamp_index) {
      forbid(logits, r.timestamp_begin + *r.max_initial_timestamp_index + 1,
             static_cast<std::int64_t>(logits.size()));
    }
  }
  // When all timestamps together are likelier than any single text token, emit a timestamp.
  const auto ts_begin = static_cast<std::size_t>(r.timestamp_begin);
  const double total = log_sum_exp(logits);
  const double timestamp_logprob = log_sum_exp(logits.subspan(ts_begin)) - total;
  float max_text = kForbidden;
  for (std::size_t i = 0; i < ts_begin; ++i)
    max_text = std::max(max_text, logits[i]);
  const double max_text_logprob = static_cast<double>(max_text) - total;
  if (timestamp_logprob > max_text_logprob) forbid(logits, 0, r.timestamp_begin);
}

}  // namespace

void apply_rules(const DecodingRules& rules, std::span<const TokenId> generated,
                 std::span<float> logits) {
  if (generated.empty()) forbid_each(logits, rules.begin_suppress_tokens);
  forbid_each(logits, rules.suppress_tokens);
  if (rules.timestamps) timestamp_rules(rules, generated, logits);
}

TokenId argmax(std::span<const float> logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

double log_probability(std::span<const float> logits, TokenId token) {
  return static_cast<double>(logits[static_cast<std::size_t>(token)]) - log_sum_exp(logits);
}

}  // namespace ifw::decode
