#include "pipeline/words.hpp"

#include <algorithm>

#include <ifw/error.hpp>

#include "util/utf8.hpp"

namespace ifw::pipeline {

bool splits_on_characters(const std::string& language) {
  static const char* kLanguages[] = {"zh", "ja", "th", "lo", "my", "yue"};
  return std::any_of(std::begin(kLanguages), std::end(kLanguages),
                     [&](const char* l) { return language == l; });
}

std::vector<Word> words_from_tokens(const model::Tokenizer& tokenizer,
                                    std::span<const model::TokenId> tokens,
                                    std::span<const double> times, bool split_on_characters) {
  if (times.size() != tokens.size()) {
    throw Error(ErrorKind::kInvalidArgument, "words: one time per token is needed");
  }
  std::vector<Word> words;
  std::string pending_bytes;  // an unfinished character's bytes
  std::size_t pending_first = 0;
  const auto end_time = [&](std::size_t next) {
    return next < times.size() ? times[next] : times.back();
  };
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokenizer.is_special(tokens[i])) {
      pending_bytes.clear();
      continue;
    }
    if (pending_bytes.empty()) pending_first = i;
    const model::TokenId one[] = {tokens[i]};
    pending_bytes += tokenizer.decode_bytes(one);
    if (util::incomplete_utf8_suffix(pending_bytes) > 0) continue;  // wait for the rest
    const std::string text = util::to_valid_utf8(pending_bytes);
    pending_bytes.clear();
    const bool starts_word = words.empty() || split_on_characters || text.front() == ' ';
    if (starts_word) {
      words.push_back({text, times[pending_first], end_time(i + 1)});
    } else {
      words.back().text += text;
      words.back().end = end_time(i + 1);
    }
  }
  for (Word& w : words)
    w.end = std::max(w.end, w.start);
  return words;
}

}  // namespace ifw::pipeline
