// GPT-2's byte-level alphabet: every byte has a printable stand-in character, which is how
// tokenizer.json and vocab.json spell the byte strings of tokens.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ifw::model {

// The UTF-8 spelling of byte b's stand-in character.
const std::string& byte_level_char(unsigned char b);

// Byte string spelled by `text` in the byte-level alphabet; nullopt when a character of `text`
// is not in the alphabet (or `text` is not valid UTF-8).
std::optional<std::string> byte_level_decode(std::string_view text);

std::string byte_level_encode(std::string_view bytes);

}  // namespace ifw::model
