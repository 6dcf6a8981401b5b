// The languages Whisper knows, in the order of their tokens.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace ifw::model {

struct Language {
  std::string_view code;  // "en"
  std::string_view name;  // "english"
};

// All 100 (large-v3 and later); older multilingual vocabularies use the first 99.
std::span<const Language> whisper_languages() noexcept;
std::optional<int> language_index(std::string_view code) noexcept;
std::optional<int> language_index_by_name(std::string_view name) noexcept;

}  // namespace ifw::model
