// Spoken-language probabilities of each window: the decoder's distribution over the language
// tokens right after <|startoftranscript|>.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/whisper_model.hpp"

namespace ifw::decode {

struct LanguageProbability {
  std::string code;  // "en"
  double probability = 0.0;
};

// One list per window, most probable first. `languages`: (code, token id) of the vocabulary.
std::vector<std::vector<LanguageProbability>> detect_language(
    const engine::WhisperModel& model, const backend::Tensor& encoder_states,
    engine::TokenId start_of_transcript,
    const std::vector<std::pair<std::string, engine::TokenId>>& languages);

}  // namespace ifw::decode
