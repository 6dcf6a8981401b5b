#include "model/tokenizer/pretokenizer.hpp"

#include <fmt/format.h>
#include <pcre2.h>

#include <ifw/error.hpp>

namespace ifw::model {
namespace {

// Unicode's White_Space property, which the reference tokenizers' regex engines use for \s.
// PCRE2's \s also matches U+180E (MONGOLIAN VOWEL SEPARATOR, a format character since Unicode
// 6.3), which would split text differently; so \s and \S are spelled out before compiling.
constexpr std::string_view kWhiteSpace = R"(\t\n\x0B\f\r\x{85}\p{Z})";

std::string with_unicode_white_space(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (next == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

struct PreTokenizer::Compiled {
  struct CodeDeleter {
    void operator()(pcre2_code* code) const { pcre2_code_free(code); }
  };
  struct MatchDataDeleter {
    void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
  };
  std::unique_ptr<pcre2_code, CodeDeleter> code;
};

PreTokenizer::PreTokenizer(std::string pattern, bool add_prefix_space, const std::string& source)
    : pattern_(std::move(pattern)),
      add_prefix_space_(add_prefix_space),
      compiled_(std::make_unique<Compiled>()) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // UTF + UCP: \s, \p{L}, \p{N} follow Unicode, as in the reference tokenizers' regex engines.
  const std::string compiled_pattern = with_unicode_white_space(pattern_);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled_pattern.data()), compiled_pattern.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: pre-tokenizer pattern does not compile at offset {}: {}", source,
                            error_offset, reinterpret_cast<const char*>(message)));
  }
  compiled_->code.reset(code);
  // JIT is an optimisation only; without it (e.g. unsupported CPU) the interpreter matches the
  // same.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
}

PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

std::vector<std::string_view> PreTokenizer::split(std::string_view text) const {
  std::vector<std::string_view> pieces;
  if (text.empty()) return pieces;
  std::unique_ptr<pcre2_match_data, Compiled::MatchDataDeleter> match(
      pcre2_match_data_create_from_pattern(compiled_->code.get(), nullptr));
  if (!match) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(compiled_->code.get(), subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                               match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("pre-tokenizer failed at byte {}: {}", pos,
                              reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const std::size_t begin = ovector[0];
    std::size_t end = ovector[1];
    if (begin > pos) pieces.push_back(text.substr(pos, begin - pos));  // unmatched gap
    if (end == begin) {
      // An empty match would loop forever: take one whole character as its own piece.
      end = begin + 1;
      while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
        ++end;
    }
    pieces.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  if (pos < text.size()) pieces.push_back(text.substr(pos));
  return pieces;
}

}  // namespace ifw::model
