// The three file formats a Whisper tokenizer comes in, each read into TokenizerParts.
#include <algorithm>
#include <functional>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "model/invalid_model.hpp"
#include "model/languages.hpp"
#include "model/tokenizer/byte_level.hpp"
#include "model/tokenizer/tokenizer.hpp"
#include "util/json.hpp"
#include "util/utf8.hpp"

namespace ifw::model {
namespace {

std::string from_byte_level(const std::string& source, const std::string& text, const char* what) {
  auto bytes = byte_level_decode(text);
  if (!bytes) {
    invalid_model(source, fmt::format("{} {} is not spelled in the byte-level alphabet", what,
                                      util::quote_for_message(text)));
  }
  return std::move(*bytes);
}

// "a b" -> ("a", "b"): exactly two fields separated by one space.
std::optional<std::pair<std::string_view, std::string_view>> split_pair(std::string_view text) {
  const auto space = text.find(' ');
  if (space == std::string_view::npos || text.find(' ', space + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  return std::pair{text.substr(0, space), text.substr(space + 1)};
}

// Calls f(line number, first, second) for each non-empty line of `text` that is two fields
// separated by one space; any other line is an error naming `source`, the line and `expected`.
void for_each_pair_line(
    const std::string& source, std::string_view text, std::string_view expected,
    const std::function<void(std::size_t, std::string_view, std::string_view)>& f) {
  std::size_t line_no = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t eol = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const auto pair = split_pair(line);
    if (!pair) {
      invalid_model(source, fmt::format("line {}: expected {}, got {}", line_no, expected,
                                        util::quote_for_message(line)));
    }
    f(line_no, pair->first, pair->second);
  }
}

void add_regular(TokenizerParts& parts, const std::string& source, TokenId id, std::string bytes) {
  const auto [it, inserted] = parts.regular.emplace(id, std::move(bytes));
  if (!inserted) invalid_model(source, fmt::format("id {} is used by more than one token", id));
}

TokenId token_id_value(const std::string& source, const std::string& token,
                       const nlohmann::json& v) {
  const auto id = util::as_integer(v);
  if (!id || *id < 0 || *id >= (1 << 24)) {
    invalid_model(source, fmt::format("token {} has id {}, expected a non-negative integer",
                                      util::quote_for_message(token), util::json_excerpt(v)));
  }
  return static_cast<TokenId>(*id);
}

void read_vocab_object(TokenizerParts& parts, const std::string& source,
                       const nlohmann::json& vocab) {
  if (!vocab.is_object() || vocab.empty())
    invalid_model(source, "the vocabulary must be a non-empty object");
  for (const auto& [token, value] : vocab.items()) {
    add_regular(parts, source, token_id_value(source, token, value),
                from_byte_level(source, token, "token"));
  }
}

void add_special(TokenizerParts& parts, const std::string& source, TokenId id,
                 const std::string& content) {
  // An added token may repeat a vocabulary entry with the same id (GPT-2's <|endoftext|>).
  if (const auto r = parts.regular.find(id); r != parts.regular.end()) {
    if (r->second != content) {
      invalid_model(
          source,
          fmt::format("added token {} has id {}, which the vocabulary gives to {}",
                      util::quote_for_message(content), id, util::quote_for_message(r->second)));
    }
    parts.regular.erase(r);
  }
  const auto [it, inserted] = parts.special.emplace(id, content);
  if (!inserted && it->second != content) {
    invalid_model(
        source, fmt::format("id {} is given to both {} and {}", id,
                            util::quote_for_message(it->second), util::quote_for_message(content)));
  }
}

void read_pre_tokenizer(TokenizerParts& parts, const util::JsonObject& root) {
  const std::string& src = root.source();
  const nlohmann::json* pre = root.find("pre_tokenizer");
  if (pre == nullptr)
    invalid_model(src, "pre_tokenizer is missing; Whisper's tokenizer splits with a regex");
  const auto byte_level = [&](const nlohmann::json& p, bool regex_expected) {
    const util::JsonObject o(p, src + ": pre_tokenizer");
    parts.add_prefix_space = o.get_bool("add_prefix_space").value_or(false);
    if (o.get_bool("use_regex").value_or(true) != regex_expected) {
      o.fail("use_regex", regex_expected ? "must be true for a lone ByteLevel pre-tokenizer"
                                         : "must be false after a Split");
    }
  };
  const auto type = util::JsonObject(*pre, src + ": pre_tokenizer").get_string("type").value_or("");
  if (type == "ByteLevel") {
    byte_level(*pre, true);
    parts.split_pattern = std::string(kGpt2SplitPattern);
    return;
  }
  const auto type_of = [](const nlohmann::json& v) {
    const auto t = v.is_object() ? v.find("type") : v.end();
    return t != v.end() && t->is_string() ? t->get<std::string>() : std::string();
  };
  const auto list_it = pre->is_object() ? pre->find("pretokenizers") : pre->end();
  if (type == "Sequence" && list_it != pre->end()) {
    const nlohmann::json& list = *list_it;
    if (list.is_array() && list.size() == 2 && type_of(list[0]) == "Split" &&
        type_of(list[1]) == "ByteLevel") {
      const util::JsonObject split(list[0], src + ": pre_tokenizer Split");
      const nlohmann::json* pattern = split.find("pattern");
      if (pattern == nullptr || !pattern->is_object() || !pattern->contains("Regex") ||
          !(*pattern)["Regex"].is_string()) {
        split.fail("pattern", "must be {\"Regex\": \"...\"}");
      }
      if (split.get_string("behavior").value_or("") != "Isolated" ||
          split.get_bool("invert").value_or(false)) {
        split.fail("behavior", "must be \"Isolated\" (not inverted) for Whisper's tokenizer");
      }
      parts.split_pattern = (*pattern)["Regex"].get<std::string>();
      byte_level(list[1], false);
      return;
    }
  }
  throw Error(
      ErrorKind::kUnsupported,
      fmt::format("{}: pre_tokenizer {} is not Whisper's (ByteLevel, or Split then ByteLevel)", src,
                  util::json_excerpt(*pre, 120)));
}

std::string read_base64(const std::string& source, std::size_t line, std::string_view text) {
  // Padding is optional here, as in Python's decoder: the multilingual vocabulary spells its
  // empty token (rank 50256) as a lone "=".
  std::string_view body = text;
  while (!body.empty() && body.back() == '=')
    body.remove_suffix(1);
  if (text.size() - body.size() > 2 || body.size() % 4 == 1) {
    invalid_model(source, fmt::format("line {}: {} is not base64 (length)", line,
                                      util::quote_for_message(text)));
  }
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : body) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else
      invalid_model(source,
                    fmt::format("line {}: {} is not base64", line, util::quote_for_message(text)));
    buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

// rank -> bytes, checked to be 0..n-1 with distinct byte strings.
std::map<TokenId, std::string> read_tiktoken_ranks(const std::filesystem::path& file) {
  const std::string source = file.string();
  const std::string text = util::read_text_file(file);
  std::map<TokenId, std::string> ranks;
  for_each_pair_line(
      source, text, "\"<base64 token> <rank>\"",
      [&](std::size_t line_no, std::string_view token, std::string_view rank_text) {
        if (rank_text.empty() || rank_text.size() > 8 ||
            !std::all_of(rank_text.begin(), rank_text.end(),
                         [](char c) { return c >= '0' && c <= '9'; })) {
          invalid_model(source, fmt::format("line {}: rank {} is not a non-negative integer",
                                            line_no, util::quote_for_message(rank_text)));
        }
        TokenId rank = 0;
        for (const char c : rank_text)
          rank = rank * 10 + (c - '0');
        if (!ranks.emplace(rank, read_base64(source, line_no, token)).second) {
          invalid_model(source, fmt::format("line {}: rank {} appears twice", line_no, rank));
        }
      });
  if (ranks.empty()) invalid_model(source, "holds no tokens");
  if (ranks.rbegin()->first != static_cast<TokenId>(ranks.size()) - 1) {
    TokenId expected = 0;
    for (const auto& [rank, bytes] : ranks) {
      if (rank != expected) break;
      ++expected;
    }
    invalid_model(source, fmt::format("rank {} is missing: ranks must run from 0 to {}", expected,
                                      ranks.size() - 1));
  }
  return ranks;
}

// Whisper's special tokens after a tiktoken vocabulary, in openai/whisper's order.
Tokenizer tiktoken_tokenizer(const std::filesystem::path& file,
                             std::map<TokenId, std::string> ranks, int num_languages) {
  const auto languages = whisper_languages();
  if (num_languages < 1 || num_languages > static_cast<int>(languages.size())) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: {} languages requested; Whisper has 1 to {}", file.string(),
                            num_languages, languages.size()));
  }
  TokenizerParts parts;
  parts.source = file.string();
  parts.ranking = Bpe::Ranking::kTokenRank;
  parts.whole_piece_first = true;
  parts.regular = std::move(ranks);
  auto next = static_cast<TokenId>(parts.regular.size());
  const auto special = [&](std::string content) {
    parts.special.emplace(next++, std::move(content));
  };
  special("<|endoftext|>");
  special("<|startoftranscript|>");
  for (int i = 0; i < num_languages; ++i) {
    special(fmt::format("<|{}|>", languages[static_cast<std::size_t>(i)].code));
  }
  for (const char* s : {"<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                        "<|nospeech|>", "<|notimestamps|>"}) {
    special(s);
  }
  for (int k = 0; k <= 1500; ++k)
    special(fmt::format("<|{}.{:02}|>", k * 2 / 100, k * 2 % 100));
  return Tokenizer::from_parts(std::move(parts));
}

// Whisper's tiktoken layout: ranks, then end of text, start of transcript, languages, then
// translate, transcribe, start of LM, start of previous, no speech, no timestamps, 1501 times.
constexpr int kSpecialsBesideLanguages = 1 + 1 + 6 + 1501;

}  // namespace

Tokenizer Tokenizer::from_tokenizer_json(const std::filesystem::path& file) {
  const std::string src = file.string();
  const nlohmann::json json = util::read_json_file(file);
  const util::JsonObject root(json, src);
  if (const nlohmann::json* n = root.find("normalizer")) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: normalizer {} is not supported (Whisper's tokenizer has none)",
                            src, util::json_excerpt(*n)));
  }
  if (const nlohmann::json* d = root.find("decoder");
      d != nullptr && !(d->is_object() && d->contains("type") && (*d)["type"] == "ByteLevel")) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: decoder {} is not supported (Whisper's is ByteLevel)", src,
                            util::json_excerpt(*d)));
  }
  const nlohmann::json* model_json = root.find("model");
  if (model_json == nullptr) root.fail("model", "is missing");
  const util::JsonObject model(*model_json, src + ": model");
  if (model.get_string("type").value_or("BPE") != "BPE") {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: model type \"{}\" is not supported (Whisper's is BPE)", src,
                            *model.get_string("type")));
  }
  if (const auto dropout = model.get_number("dropout"); dropout && *dropout != 0.0) {
    throw Error(ErrorKind::kUnsupported, fmt::format("{}: BPE dropout {} is for training; "
                                                     "inference needs it off",
                                                     src, *dropout));
  }
  if (model.get_bool("byte_fallback").value_or(false) ||
      !model.get_string("continuing_subword_prefix").value_or("").empty() ||
      !model.get_string("end_of_word_suffix").value_or("").empty()) {
    throw Error(ErrorKind::kUnsupported,
                src +
                    ": model options byte_fallback / continuing_subword_prefix / "
                    "end_of_word_suffix are not byte-level BPE as Whisper uses it");
  }

  TokenizerParts parts;
  parts.source = src;
  parts.ranking = Bpe::Ranking::kMergeList;
  parts.whole_piece_first = model.get_bool("ignore_merges").value_or(false);
  const nlohmann::json* vocab = model.find("vocab");
  if (vocab == nullptr) model.fail("vocab", "is missing");
  read_vocab_object(parts, src, *vocab);

  const nlohmann::json* merges = model.find("merges");
  if (merges == nullptr || !merges->is_array()) model.fail("merges", "must be a list");
  parts.merges.reserve(merges->size());
  for (std::size_t i = 0; i < merges->size(); ++i) {
    const nlohmann::json& m = (*merges)[i];
    std::string left, right;
    if (m.is_string()) {  // "a b"
      const auto& text = m.get_ref<const std::string&>();
      const auto pair = split_pair(text);
      if (!pair) {
        model.fail("merges",
                   fmt::format("item {} is {}, expected two tokens separated by one space", i,
                               util::quote_for_message(text)));
      }
      left = pair->first;
      right = pair->second;
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      model.fail("merges", fmt::format("item {} is {}, expected \"a b\" or [\"a\", \"b\"]", i,
                                       util::json_excerpt(m)));
    }
    parts.merges.emplace_back(from_byte_level(src, left, "merge part"),
                              from_byte_level(src, right, "merge part"));
  }

  if (const nlohmann::json* added = root.find("added_tokens")) {
    if (!added->is_array()) root.fail("added_tokens", "must be a list");
    for (const nlohmann::json& a : *added) {
      const util::JsonObject token(a, src + ": added_tokens");
      const auto content = token.get_string("content");
      if (!content) token.fail("content", "is missing");
      const TokenId id =
          token_id_value(src, *content, a.contains("id") ? a["id"] : nlohmann::json());
      // The Hub's Whisper tokenizers add the 1501 timestamp tokens as non-special, but they are
      // control tokens all the same; any "<|...|>" is one. Another non-special added token would
      // have to be split out of text before BPE, which Whisper never needs.
      if (!token.get_bool("special").value_or(false) && !looks_like_control_token(*content)) {
        throw Error(ErrorKind::kUnsupported,
                    fmt::format("{}: added token {} (id {}) is neither special nor a Whisper "
                                "control token; ifw does not split such tokens out of text",
                                src, util::quote_for_message(*content), id));
      }
      add_special(parts, src, id, *content);
    }
  }
  read_pre_tokenizer(parts, root);
  return from_parts(std::move(parts));
}

Tokenizer Tokenizer::from_vocab_and_merges(
    const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt,
    const std::optional<std::filesystem::path>& added_tokens_json) {
  TokenizerParts parts;
  parts.source = vocab_json.string() + " + " + merges_txt.filename().string();
  parts.ranking = Bpe::Ranking::kMergeList;
  parts.whole_piece_first = false;
  read_vocab_object(parts, vocab_json.string(), util::read_json_file(vocab_json));

  const std::string merges_src = merges_txt.string();
  for_each_pair_line(
      merges_src, util::read_text_file(merges_txt), "two tokens separated by one space",
      [&](std::size_t, std::string_view left, std::string_view right) {
        parts.merges.emplace_back(from_byte_level(merges_src, std::string(left), "merge part"),
                                  from_byte_level(merges_src, std::string(right), "merge part"));
      });

  if (added_tokens_json) {
    const std::string added_src = added_tokens_json->string();
    const nlohmann::json added = util::read_json_file(*added_tokens_json);
    if (!added.is_object()) invalid_model(added_src, "must be an object of token -> id");
    for (const auto& [content, value] : added.items()) {
      const TokenId id = token_id_value(added_src, content, value);
      if (!looks_like_control_token(content)) {
        throw Error(ErrorKind::kUnsupported,
                    fmt::format("{}: added token {} (id {}) is not a Whisper control token; ifw "
                                "does not split such tokens out of text",
                                added_src, util::quote_for_message(content), id));
      }
      add_special(parts, added_src, id, content);
    }
    parts.source += " + " + added_tokens_json->filename().string();
  }
  return from_parts(std::move(parts));
}

Tokenizer Tokenizer::from_tiktoken(const std::filesystem::path& file, int num_languages) {
  return tiktoken_tokenizer(file, read_tiktoken_ranks(file), num_languages);
}

Tokenizer load_folder_tokenizer(const std::filesystem::path& dir, int vocab_size) {
  std::error_code ec;
  if (std::filesystem::exists(dir / "tokenizer.json", ec)) {
    return Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  }
  const bool has_vocab = std::filesystem::exists(dir / "vocab.json", ec);
  const bool has_merges = std::filesystem::exists(dir / "merges.txt", ec);
  if (has_vocab && has_merges) {
    std::optional<std::filesystem::path> added;
    if (std::filesystem::exists(dir / "added_tokens.json", ec)) added = dir / "added_tokens.json";
    return Tokenizer::from_vocab_and_merges(dir / "vocab.json", dir / "merges.txt", added);
  }
  if (has_vocab != has_merges) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: {} is present but {} is missing (and there is no tokenizer.json)",
                            dir.string(), has_vocab ? "vocab.json" : "merges.txt",
                            has_vocab ? "merges.txt" : "vocab.json"));
  }
  std::vector<std::filesystem::path> tiktoken;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".tiktoken") tiktoken.push_back(entry.path());
  }
  if (tiktoken.size() > 1) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: {} .tiktoken files and no tokenizer.json: which one is meant is "
                            "ambiguous",
                            dir.string(), tiktoken.size()));
  }
  if (tiktoken.size() == 1) {
    auto ranks = read_tiktoken_ranks(tiktoken.front());
    const int languages = vocab_size - static_cast<int>(ranks.size()) - kSpecialsBesideLanguages;
    if (languages < 1 || languages > static_cast<int>(whisper_languages().size())) {
      throw Error(ErrorKind::kInvalidModel,
                  fmt::format("{}: has {} tokens, which with Whisper's special tokens cannot make "
                              "config.json's vocab_size {}",
                              tiktoken.front().string(), ranks.size(), vocab_size));
    }
    return tiktoken_tokenizer(tiktoken.front(), std::move(ranks), languages);
  }
  throw Error(ErrorKind::kInvalidModel,
              fmt::format("{}: no tokenizer: expected tokenizer.json, vocab.json + merges.txt, or "
                          "a .tiktoken file",
                          dir.string()));
}

}  // namespace ifw::model
