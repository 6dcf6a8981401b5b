// Words and their times from a window's tokens and per-token times: tokens grouped into whole
// characters, then into words at spaces (or one word per character group for languages written
// without spaces), punctuation kept with the word it follows.
#pragma once

#include <span>
#include <vector>

#include <ifw/transcript.hpp>

#include "model/tokenizer/tokenizer.hpp"

namespace ifw::pipeline {

// `tokens`: a window's generated tokens (timestamps and end of text may be among them);
// `times[i]`: when token i starts, in seconds from the start of the audio (same length).
// Words end where the next token starts.
std::vector<Word> words_from_tokens(const model::Tokenizer& tokenizer,
                                    std::span<const model::TokenId> tokens,
                                    std::span<const double> times, bool split_on_characters);

// Languages written without spaces between words.
bool splits_on_characters(const std::string& language);

}  // namespace ifw::pipeline
