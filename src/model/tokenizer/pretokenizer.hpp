// Splits text into the pieces that BPE encodes one by one, with the GPT-2/Whisper pattern
// (Unicode letter and number classes) or the pattern a tokenizer.json names. PCRE2 runs it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ifw::model {

// GPT-2's pattern, which Whisper's tokenizers use.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class PreTokenizer {
 public:
  // Throws ifw::Error (kInvalidModel) when the pattern does not compile; `source` names its file.
  PreTokenizer(std::string pattern, bool add_prefix_space, const std::string& source);
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // Pieces in order; together they are exactly `text` (unmatched gaps become pieces too).
  // `text` must be valid UTF-8.
  std::vector<std::string_view> split(std::string_view text) const;
  bool add_prefix_space() const { return add_prefix_space_; }
  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::string pattern_;
  bool add_prefix_space_ = false;
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace ifw::model
