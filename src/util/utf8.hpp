// UTF-8 checks and repairs shared by the tokenizer, the JSON readers and error messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ifw::util {

// One step of a strict UTF-8 decoder (Unicode table 3-7: no overlongs, no surrogates, <= U+10FFFF).
struct Utf8Step {
  enum class Status { kOk, kInvalid, kTruncated };
  Status status;
  std::size_t length;   // bytes consumed; for kInvalid/kTruncated the maximal ill-formed subpart
  char32_t code_point;  // valid only for kOk
};
Utf8Step decode_utf8_step(std::string_view text, std::size_t pos) noexcept;

// Byte offset of the first byte that is not part of well-formed UTF-8, if any.
std::optional<std::size_t> find_invalid_utf8(std::string_view text) noexcept;

// Replaces every ill-formed subsequence with U+FFFD, as Python's errors="replace" does.
std::string to_valid_utf8(std::string_view bytes);

// Length of a trailing, well-formed but unfinished character (0 when the text ends cleanly).
std::size_t incomplete_utf8_suffix(std::string_view bytes) noexcept;

void append_utf8(std::string& out, char32_t code_point);

// The text quoted for an error message: printable, control and invalid bytes escaped, long text
// cut.
std::string quote_for_message(std::string_view text, std::size_t max_bytes = 80);

}  // namespace ifw::util
