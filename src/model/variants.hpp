// Which published Whisper model an architecture is (the weights may be fine-tuned).
#pragma once

#include <string>

#include "model/whisper_config.hpp"

namespace ifw::model {

// "tiny", "base.en", "large or large-v2", "large-v3", "large-v3-turbo", "distil-large-v3 (2 decoder
// layers)", ... or "custom" for an architecture no published model has.
std::string variant_name(const WhisperConfig& config, bool multilingual);

}  // namespace ifw::model
