// Choosing the next token from a row of logits: what Whisper's decoding rules forbid, then the
// most likely allowed token and its log-probability. Written once for the host (the CPU backend
// and any backend's fallback) and mirrored by the CUDA backend's kernel, so that a GPU decodes
// without downloading every logit of every step. The rules themselves (which tokens, which
// ranges) are the decoder's business (decode/logits_rules); this is their plain-data form.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ifw::backend {

// Per token of the vocabulary (TokenFlags::kForbidden...), built once per decoding.
enum TokenFlag : std::uint8_t {
  kTokenForbidden = 1,       // never chosen (suppress_tokens)
  kTokenForbiddenFirst = 2,  // not as the first generated token (begin_suppress_tokens)
};

// What the rules forbid in one row besides the flagged tokens. Plain 32-bit fields: the CUDA
// kernel reads the same layout.
struct RowRules {
  std::int32_t first = 0;  // the first generated token: kTokenForbiddenFirst applies
  // Whisper's timestamp vote: when all allowed timestamps together are likelier than the
  // likeliest allowed text token, text is forbidden.
  std::int32_t timestamp_vote = 0;
  std::int32_t timestamp_begin = 0;  // the first timestamp token (for the vote)
  std::int32_t ranges = 0;           // forbidden token ranges [begin, end) in `forbidden`
  std::int32_t forbidden[4][2] = {};
};

struct TokenChoice {
  std::int32_t token = 0;
  double logprob = 0.0;  // log softmax of the token among the allowed ones
};

// Sets the logits of every token the flags and `rules` forbid to -inf (the vote last).
void apply_row_rules(std::span<const std::uint8_t> flags, const RowRules& rules,
                     std::span<float> logits);
// apply_row_rules, then the most likely token (the first on ties) and its log-probability.
TokenChoice choose_token(std::span<const std::uint8_t> flags, const RowRules& rules,
                         std::span<float> logits);

// log(sum(exp(x))) in double precision; -inf when every entry is -inf.
double log_sum_exp(std::span<const float> x);

}  // namespace ifw::backend
