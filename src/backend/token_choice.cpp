#include "backend/token_choice.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"

namespace ifw::backend {
namespace {

constexpr float kForbidden = -std::numeric_limits<float>::infinity();

void forbid(std::span<float> logits, std::int64_t begin, std::int64_t end) {
  begin = std::clamp<std::int64_t>(begin, 0, static_cast<std::int64_t>(logits.size()));
  end = std::clamp<std::int64_t>(end, begin, static_cast<std::int64_t>(logits.size()));
  std::fill(logits.begin() + begin, logits.begin() + end, kForbidden);
}

}  // namespace

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

void apply_row_rules(std::span<const std::uint8_t> flags, const RowRules& rules,
                     std::span<float> logits) {
  const std::size_t n = std::min(flags.size(), logits.size());
  const std::uint8_t mask =
      rules.first != 0 ? (kTokenForbidden | kTokenForbiddenFirst) : kTokenForbidden;
  for (std::size_t i = 0; i < n; ++i) {
    if ((flags[i] & mask) != 0) logits[i] = kForbidden;
  }
  for (int r = 0; r < std::clamp(rules.ranges, 0, 4); ++r)
    forbid(logits, rules.forbidden[r][0], rules.forbidden[r][1]);
  if (rules.timestamp_vote == 0) return;
  const auto ts_begin = static_cast<std::size_t>(
      std::clamp<std::int64_t>(rules.timestamp_begin, 0, static_cast<std::int64_t>(logits.size())));
  const double total = log_sum_exp(logits);
  const double timestamp_logprob = log_sum_exp(logits.subspan(ts_begin)) - total;
  float max_text = kForbidden;
  for (std::size_t i = 0; i < ts_begin; ++i)
    max_text = std::max(max_text, logits[i]);
  const double max_text_logprob = static_cast<double>(max_text) - total;
  if (timestamp_logprob > max_text_logprob) forbid(logits, 0, rules.timestamp_begin);
}

TokenChoice choose_token(std::span<const std::uint8_t> flags, const RowRules& rules,
                         std::span<float> logits) {
  TokenChoice c;
  if (logits.empty()) return c;
  apply_row_rules(flags, rules, logits);
  c.token =
      static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  c.logprob = static_cast<double>(logits[static_cast<std::size_t>(c.token)]) - log_sum_exp(logits);
  return c;
}

void Backend::choose_tokens(const Tensor& logits, std::span<const std::uint8_t> flags,
                            std::span<const RowRules> rules, std::span<TokenChoice> out) {
  if (logits.rank() != 2 || logits.dtype() != DType::kF32 ||
      rules.size() != static_cast<std::size_t>(logits.dim(0)) || out.size() != rules.size() ||
      (!flags.empty() && flags.size() != static_cast<std::size_t>(logits.dim(1)))) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("choose_tokens: logits {} with {} rules, {} choices and {} flags",
                            shape_string(logits.shape()), rules.size(), out.size(), flags.size()));
  }
  const auto vocab = static_cast<std::size_t>(logits.dim(1));
  std::vector<float> host(static_cast<std::size_t>(logits.numel()));
  download(logits, host);
  for (std::size_t r = 0; r < rules.size(); ++r)
    out[r] = choose_token(flags, rules[r], std::span<float>(host.data() + r * vocab, vocab));
}

}  // namespace ifw::backend
