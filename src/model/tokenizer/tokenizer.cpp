#include "model/tokenizer/tokenizer.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "model/invalid_model.hpp"
#include "model/languages.hpp"
#include "util/utf8.hpp"

namespace ifw::model {
namespace {

// "<|1.24|>" -> 62 (hundredths / 2); nullopt for anything else.
std::optional<int> parse_timestamp_index(std::string_view content) {
  if (content.size() < 8 || !content.starts_with("<|") || !content.ends_with("|>"))
    return std::nullopt;
  const std::string_view body = content.substr(2, content.size() - 4);
  const auto dot = body.find('.');
  if (dot == std::string_view::npos || dot == 0 || body.size() - dot != 3) return std::nullopt;
  int whole = 0;
  for (const char c : body.substr(0, dot)) {
    if (c < '0' || c > '9' || whole > 1000) return std::nullopt;
    whole = whole * 10 + (c - '0');
  }
  const char d1 = body[dot + 1], d2 = body[dot + 2];
  if (d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9') return std::nullopt;
  const int hundredths = whole * 100 + (d1 - '0') * 10 + (d2 - '0');
  if (hundredths % 2 != 0) return std::nullopt;
  return hundredths / 2;
}

std::string timestamp_content(int index) {
  const int hundredths = index * 2;
  return fmt::format("<|{}.{:02}|>", hundredths / 100, hundredths % 100);
}

}  // namespace

bool looks_like_control_token(std::string_view text) {
  return text.size() >= 5 && text.starts_with("<|") && text.ends_with("|>") &&
         text.substr(2, text.size() - 4).find('|') == std::string_view::npos;
}

Tokenizer Tokenizer::from_parts(TokenizerParts parts) {
  const std::string& src = parts.source;
  // A vocabulary entry spelled like a control token (GPT-2 keeps <|endoftext|> in vocab.json)
  // is one.
  for (auto it = parts.regular.begin(); it != parts.regular.end();) {
    if (looks_like_control_token(it->second)) {
      const auto [s, inserted] = parts.special.emplace(it->first, it->second);
      if (!inserted && s->second != it->second) {
        invalid_model(src, fmt::format("id {} is both {} and {}", it->first,
                                       util::quote_for_message(it->second),
                                       util::quote_for_message(s->second)));
      }
      it = parts.regular.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [id, content] : parts.special) {
    if (const auto r = parts.regular.find(id); r != parts.regular.end()) {
      invalid_model(
          src, fmt::format("id {} is both the token {} and the special token {}", id,
                           util::quote_for_message(r->second), util::quote_for_message(content)));
    }
    if (id < 0) invalid_model(src, fmt::format("special token {} has negative id {}", content, id));
  }

  const TokenId max_regular = parts.regular.empty() ? -1 : parts.regular.rbegin()->first;
  const TokenId max_special = parts.special.empty() ? -1 : parts.special.rbegin()->first;
  const TokenId count = std::max(max_regular, max_special) + 1;
  if (parts.regular.empty() || parts.regular.begin()->first < 0) {
    invalid_model(src, "the vocabulary is empty or has negative ids");
  }
  // Ids must run 0..count-1 without gaps (the two maps hold distinct ids). Checked before
  // allocating, so that one absurd id cannot cost gigabytes.
  if (static_cast<std::size_t>(count) != parts.regular.size() + parts.special.size()) {
    TokenId expected = 0;
    auto r = parts.regular.begin();
    auto s = parts.special.begin();
    while (true) {
      if (r != parts.regular.end() && r->first == expected) {
        ++r;
      } else if (s != parts.special.end() && s->first == expected) {
        ++s;
      } else {
        break;
      }
      ++expected;
    }
    invalid_model(src, fmt::format("no token has id {}: ids must run from 0 to {} without gaps",
                                   expected, count - 1));
  }
  std::vector<Token> tokens(static_cast<std::size_t>(count));
  BytesToId by_bytes;
  by_bytes.reserve(parts.regular.size());
  for (auto& [id, bytes] : parts.regular) {
    const auto [it, inserted] = by_bytes.emplace(bytes, id);
    if (!inserted) {
      invalid_model(src, fmt::format("ids {} and {} spell the same bytes {}", it->second, id,
                                     util::quote_for_message(bytes)));
    }
    tokens[static_cast<std::size_t>(id)] = {std::move(bytes), false};
  }
  for (auto& [id, content] : parts.special) {
    tokens[static_cast<std::size_t>(id)] = {std::move(content), true};
  }
  for (int b = 0; b < 256; ++b) {
    if (!by_bytes.contains(std::string(1, static_cast<char>(b)))) {
      invalid_model(
          src, fmt::format("byte 0x{:02x} is not a token; a byte-level BPE vocabulary must hold "
                           "all 256 bytes",
                           b));
    }
  }

  std::vector<Bpe::MergeRule> rules;
  if (parts.ranking == Bpe::Ranking::kMergeList) {
    if (parts.merges.empty()) invalid_model(src, "the merge list is empty");
    rules.reserve(parts.merges.size());
    std::set<std::pair<TokenId, TokenId>> seen;
    for (std::size_t rank = 0; rank < parts.merges.size(); ++rank) {
      const auto& [left, right] = parts.merges[rank];
      const auto l = by_bytes.find(left);
      const auto r = by_bytes.find(right);
      const auto m = by_bytes.find(left + right);
      if (l == by_bytes.end() || r == by_bytes.end() || m == by_bytes.end()) {
        const std::string& absent = l == by_bytes.end()   ? left
                                    : r == by_bytes.end() ? right
                                                          : left + right;
        invalid_model(
            src, fmt::format("merge {} ({} + {}) uses {}, which is not in the vocabulary", rank,
                             util::quote_for_message(left), util::quote_for_message(right),
                             util::quote_for_message(absent)));
      }
      if (!seen.emplace(l->second, r->second).second) {
        invalid_model(src,
                      fmt::format("merge {} ({} + {}) appears twice", rank,
                                  util::quote_for_message(left), util::quote_for_message(right)));
      }
      rules.push_back({l->second, r->second, m->second});
    }
  }
  Bpe bpe(std::move(by_bytes), parts.ranking, rules, parts.whole_piece_first);
  PreTokenizer pre(std::move(parts.split_pattern), parts.add_prefix_space, src);
  Tokenizer t(std::move(parts.source), std::move(tokens), std::move(bpe), std::move(pre));
  t.find_special_tokens();
  return t;
}

Tokenizer::Tokenizer(std::string source, std::vector<Token> tokens, Bpe bpe,
                     PreTokenizer pre_tokenizer)
    : source_(std::move(source)),
      tokens_(std::move(tokens)),
      bpe_(std::move(bpe)),
      pre_tokenizer_(std::move(pre_tokenizer)) {}

void Tokenizer::find_special_tokens() {
  std::map<int, TokenId> timestamps;  // index -> id
  for (TokenId id = 0; id < size(); ++id) {
    const Token& t = tokens_[static_cast<std::size_t>(id)];
    if (!t.special) continue;
    special_by_content_.emplace(t.bytes, id);
    if (const auto index = parse_timestamp_index(t.bytes)) timestamps.emplace(*index, id);
  }
  const auto find = [&](std::string_view content) -> std::optional<TokenId> {
    const auto it = special_by_content_.find(content);
    if (it == special_by_content_.end()) return std::nullopt;
    return it->second;
  };
  const auto require = [&](std::string_view content) {
    const auto id = find(content);
    if (!id) invalid_model(source_, fmt::format("Whisper's special token {} is missing", content));
    return *id;
  };
  WhisperSpecialTokens& s = specials_;
  s.end_of_text = require("<|endoftext|>");
  s.start_of_transcript = require("<|startoftranscript|>");
  s.translate = require("<|translate|>");
  s.transcribe = require("<|transcribe|>");
  s.no_timestamps = require("<|notimestamps|>");
  s.start_of_lm = find("<|startoflm|>");
  s.start_of_prev = find("<|startofprev|>");
  s.no_speech = find("<|nospeech|>");
  if (!s.no_speech) s.no_speech = find("<|nocaptions|>");
  for (const Language& lang : whisper_languages()) {
    if (const auto id = find(fmt::format("<|{}|>", lang.code)))
      s.languages.emplace_back(lang.code, *id);
  }
  std::sort(s.languages.begin(), s.languages.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });

  if (timestamps.empty()) {
    // Older tokenizer files stop at <|notimestamps|>; the model's timestamp ids follow it.
    if (s.no_timestamps != size() - 1) {
      invalid_model(source_,
                    "has no timestamp tokens and <|notimestamps|> is not its last token, so "
                    "where they belong is unknown");
    }
    constexpr int kTimestampCount = 1501;  // 0.00 ... 30.00 s
    for (int k = 0; k < kTimestampCount; ++k) {
      tokens_.push_back({timestamp_content(k), true});
      special_by_content_.emplace(tokens_.back().bytes, size() - 1);
    }
    s.timestamp_begin = s.no_timestamps + 1;
    s.timestamp_count = kTimestampCount;
    return;
  }
  // Timestamps: <|0.00|> first, then every 0.02 s at consecutive ids.
  s.timestamp_begin = timestamps.begin()->second;
  s.timestamp_count = static_cast<int>(timestamps.size());
  if (timestamps.begin()->first != 0) {
    invalid_model(source_, fmt::format("the first timestamp token is {}, expected <|0.00|>",
                                       tokens_[static_cast<std::size_t>(s.timestamp_begin)].bytes));
  }
  for (const auto& [index, id] : timestamps) {
    if (id != s.timestamp_begin + index) {
      invalid_model(
          source_,
          fmt::format("timestamp token {} has id {}, expected {} (consecutive from "
                      "<|0.00|> = {})",
                      timestamp_content(index), id, s.timestamp_begin + index, s.timestamp_begin));
    }
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text) const {
  if (const auto bad = util::find_invalid_utf8(text)) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("text is not valid UTF-8 at byte {} (0x{:02x})", *bad,
                            static_cast<unsigned char>(text[*bad])));
  }
  std::string prefixed;
  if (pre_tokenizer_.add_prefix_space() && !text.empty() && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  for (const std::string_view piece : pre_tokenizer_.split(text))
    bpe_.encode(piece, ids);
  return ids;
}

std::string Tokenizer::decode_bytes(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string out;
  for (const TokenId id : ids) {
    const std::string& bytes = token_bytes(id);  // throws for an id outside the vocabulary
    if (skip_special_tokens && tokens_[static_cast<std::size_t>(id)].special) continue;
    out += bytes;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  return util::to_valid_utf8(decode_bytes(ids, skip_special_tokens));
}

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && id < size() && tokens_[static_cast<std::size_t>(id)].special;
}

bool Tokenizer::is_timestamp(TokenId id) const {
  return id >= specials_.timestamp_begin &&
         id < specials_.timestamp_begin + specials_.timestamp_count;
}

std::optional<double> Tokenizer::timestamp_seconds(TokenId id) const {
  if (!is_timestamp(id)) return std::nullopt;
  return (id - specials_.timestamp_begin) * 0.02;
}

const std::string& Tokenizer::token_bytes(TokenId id) const {
  if (id < 0 || id >= size()) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("token id {} is outside the vocabulary (0 to {})", id, size() - 1));
  }
  return tokens_[static_cast<std::size_t>(id)].bytes;
}

std::optional<TokenId> Tokenizer::special_token(std::string_view content) const {
  const auto it = special_by_content_.find(content);
  if (it == special_by_content_.end()) return std::nullopt;
  return it->second;
}

std::optional<TokenId> Tokenizer::language_token(std::string_view code) const {
  for (const auto& [c, id] : specials_.languages) {
    if (c == code) return id;
  }
  return std::nullopt;
}

std::optional<std::string> Tokenizer::language_code(TokenId id) const {
  for (const auto& [c, lid] : specials_.languages) {
    if (lid == id) return c;
  }
  return std::nullopt;
}

std::vector<TokenId> Tokenizer::non_speech_tokens() const {
  // openai/whisper tokenizer.py, non_speech_tokens: symbols that are never speech, kept whole
  // when they are one token, and music signs whose first byte token is enough to ban them.
  std::vector<std::string> symbols;
  for (const char* s : {"\"", "#", "(", ")", "*", "+", "/", ":", ";", "<",  "=",  ">",  "@", "[",
                        "\\", "]", "^", "_", "`", "{", "|", "}", "~", "「", "」", "『", "』"}) {
    symbols.emplace_back(s);
  }
  for (const char* s : {"<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", "(\"",
                        "((", "))", "(((", ")))", "[[", "]]",  "{{", "}}", "♪♪", "♪♪♪"}) {
    symbols.emplace_back(s);
  }
  const std::vector<std::string> music = {"♩", "♪", "♫", "♬", "♭", "♮", "♯"};
  std::set<TokenId> result = {encode(" -").front(), encode(" '").front()};
  const auto add = [&](const std::string& symbol, bool always) {
    for (const std::string& text : {symbol, " " + symbol}) {
      const auto ids = encode(text);
      if (!ids.empty() && (ids.size() == 1 || always)) result.insert(ids.front());
    }
  };
  for (const auto& s : symbols)
    add(s, false);
  for (const auto& s : music)
    add(s, true);
  return {result.begin(), result.end()};
}

std::string TextStream::push(TokenId id) {
  const TokenId one[] = {id};
  pending_ += tokenizer_.decode_bytes(one, skip_special_);
  const std::size_t keep = util::incomplete_utf8_suffix(pending_);
  std::string out =
      util::to_valid_utf8(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string TextStream::finish() {
  std::string out = util::to_valid_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace ifw::model
