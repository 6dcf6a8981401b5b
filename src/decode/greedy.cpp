#include "decode/greedy.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include <fmt/format.h>

#include <ifw/error.hpp>

namespace ifw::decode {
namespace {

// A token drawn from softmax(logits / temperature); forbidden (-inf) tokens are never drawn.
TokenId sample(std::span<const float> logits, double temperature, std::mt19937_64& rng) {
  const float max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> weights(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    weights[i] = std::exp((static_cast<double>(logits[i]) - max) / temperature);
  }
  std::discrete_distribution<TokenId> pick(weights.begin(), weights.end());
  return pick(rng);
}

}  // namespace

std::vector<GreedyResult> greedy_decode(const engine::WhisperModel& model,
                                        const backend::Tensor& encoder_states,
                                        const GreedyOptions& options) {
  const int batch = static_cast<int>(encoder_states.dim(0));
  if (!options.item_prompts.empty() && static_cast<int>(options.item_prompts.size()) != batch) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{} prompts for {} windows", options.item_prompts.size(), batch));
  }
  const auto prompt_of = [&](int b) -> const std::vector<TokenId>& {
    return options.item_prompts.empty() ? options.prompt
                                        : options.item_prompts[static_cast<std::size_t>(b)];
  };
  const int max_positions = model.config().max_target_positions;
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
  const bool want_no_speech = options.no_speech_token.has_value();

  engine::DecoderSession session(model, encoder_states);
  engine::AlignmentCapture capture;
  capture.heads = options.alignment_heads;
  engine::AlignmentCapture* capture_ptr = capture.heads.empty() ? nullptr : &capture;
  std::mt19937_64 rng(options.seed);

  std::vector<GreedyResult> results(static_cast<std::size_t>(batch));
  std::vector<int> limit(static_cast<std::size_t>(batch));  // new tokens each item may take
  for (int b = 0; b < batch; ++b) {
    const int len = static_cast<int>(prompt_of(b).size());
    if (len == 0) throw Error(ErrorKind::kInvalidArgument, "decoding needs a prompt");
    limit[static_cast<std::size_t>(b)] = std::min(options.max_new_tokens, max_positions - len);
    if (limit[static_cast<std::size_t>(b)] < 1) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("a prompt of {} tokens leaves no room in the decoder's {} positions",
                              len, max_positions));
    }
    results[static_cast<std::size_t>(b)].prompt_length = len;
  }

  // Records the next token of `item`; false when the item is finished.
  const auto record = [&](int item, TokenId next, double logprob) {
    GreedyResult& r = results[static_cast<std::size_t>(item)];
    r.sum_logprob += logprob;
    r.tokens.push_back(next);
    r.ended = std::find(options.end_tokens.begin(), options.end_tokens.end(), next) !=
              options.end_tokens.end();
    return !r.ended && static_cast<int>(r.tokens.size()) < limit[static_cast<std::size_t>(item)];
  };
  // Chooses the next token of `item` from its logits row on the host and records it.
  const auto choose = [&](int item, std::span<float> row) {
    GreedyResult& r = results[static_cast<std::size_t>(item)];
    if (options.rules != nullptr) apply_rules(*options.rules, r.tokens, row);
    const TokenId next =
        options.temperature > 0.0 ? sample(row, options.temperature, rng) : argmax(row);
    return record(item, next, log_probability(row, next));
  };
  // Greedy steps choose where the logits are (the same rules, one row each).
  const std::vector<std::uint8_t> flags =
      options.rules != nullptr ? token_flags(*options.rules, vocab) : std::vector<std::uint8_t>();

  // The prompts, items with prompts of one length and <|startoftranscript|> at one place together.
  std::map<std::pair<int, int>, std::vector<int>> groups;
  for (int b = 0; b < batch; ++b) {
    const auto& p = prompt_of(b);
    const auto sot = std::find(p.begin(), p.end(), options.start_of_transcript);
    const int sot_row = sot == p.end() ? 0 : static_cast<int>(sot - p.begin());
    groups[{static_cast<int>(p.size()), sot_row}].push_back(b);
  }
  std::vector<int> active;
  for (const auto& [key, items] : groups) {
    const auto [len, sot_row] = key;
    std::vector<TokenId> tokens;
    for (const int b : items)
      tokens.insert(tokens.end(), prompt_of(b).begin(), prompt_of(b).end());
    std::vector<int> rows;
    if (want_no_speech && sot_row != len - 1) rows.push_back(sot_row);
    rows.push_back(len - 1);
    std::vector<float> logits =
        session.forward(tokens, len, items, std::span<const int>(rows), capture_ptr);
    for (std::size_t i = 0; i < items.size(); ++i) {
      float* item_rows = logits.data() + i * rows.size() * vocab;
      if (want_no_speech) {
        const std::span<const float> row(item_rows,
                                         vocab);  // the first row is <|startoftranscript|>'s
        results[static_cast<std::size_t>(items[i])].no_speech_prob =
            std::exp(log_probability(row, *options.no_speech_token));
      }
      if (choose(items[i], std::span<float>(item_rows + (rows.size() - 1) * vocab, vocab))) {
        active.push_back(items[i]);
      }
    }
  }
  std::sort(active.begin(), active.end());

  // One token per step for every item still going.
  std::vector<TokenId> tokens;
  while (!active.empty()) {
    if (options.stop && options.stop()) {
      for (GreedyResult& r : results)
        r.stopped = true;
      break;
    }
    tokens.clear();
    for (const int b : active)
      tokens.push_back(results[static_cast<std::size_t>(b)].tokens.back());
    std::vector<int> still;
    if (options.temperature > 0.0) {
      std::vector<float> logits =
          session.forward(tokens, 1, active, engine::LogitRows::kLast, capture_ptr);
      for (std::size_t i = 0; i < active.size(); ++i) {
        if (choose(active[i], std::span<float>(logits.data() + i * vocab, vocab)))
          still.push_back(active[i]);
      }
    } else {
      std::vector<backend::RowRules> rules;
      for (const int b : active) {
        rules.push_back(options.rules != nullptr
                            ? row_rules(*options.rules, results[static_cast<std::size_t>(b)].tokens)
                            : backend::RowRules{});
      }
      const std::vector<backend::TokenChoice> chosen =
          session.choose(tokens, active, flags, rules, capture_ptr);
      for (std::size_t i = 0; i < active.size(); ++i) {
        if (record(active[i], chosen[i].token, chosen[i].logprob)) still.push_back(active[i]);
      }
    }
    active = std::move(still);
  }

  if (capture_ptr != nullptr) {
    for (int b = 0; b < batch && static_cast<std::size_t>(b) < capture.weights.size(); ++b) {
      results[static_cast<std::size_t>(b)].alignment =
          std::move(capture.weights[static_cast<std::size_t>(b)]);
    }
  }
  return results;
}

}  // namespace ifw::decode
