// Statistics of a decoded window that the fallback rules of long-form transcription use.
#pragma once

#include <string_view>

namespace ifw::decode {

// len(text) / len(zlib(text)) in bytes: repetitive (hallucinated) text compresses well.
double compression_ratio(std::string_view text);

// openai/whisper's average log-probability: the sum over the tokens, the end token included,
// divided by (text tokens + 1).
inline double average_logprob(double sum_logprob, std::size_t text_tokens) {
  return sum_logprob / static_cast<double>(text_tokens + 1);
}

}  // namespace ifw::decode
