// Where the reference corpus (../shared/golden) is, and small readers for its files.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ifw::test {

// $IFW_GOLDEN_DIR, else ../shared/golden next to the checkout; nullopt when it does not exist.
std::optional<std::filesystem::path> golden_dir();
// openai/whisper's data files: $IFW_WHISPER_DATA_DIR, else <golden>/../data/openai-whisper.
std::optional<std::filesystem::path> whisper_data_dir();
// Every model folder under <golden>/models (sorted); empty without the corpus.
std::vector<std::string> golden_model_names();
// The parameter of a suite run per corpus model when there is none; its tests skip, saying why.
inline constexpr const char* kNoCorpus = "no_reference_corpus";
// `names`, or kNoCorpus alone when it is empty (GoogleTest rejects a suite without parameters).
std::vector<std::string> corpus_params(std::vector<std::string> names);
std::vector<float> read_f32_file(const std::filesystem::path& path);
// For command lines, once the corpus is known to be there: the real 11 s recording
// (openai-whisper's jfk.flac) and a corpus model's folder.
std::string jfk();
std::string golden_model(const std::string& name);
// A GoogleTest parameter name made of the characters it allows ("tiny-random-v2" ->
// "tiny_random_v2").
std::string test_name(std::string text);
// Whether `text` contains `part` (for error-message assertions with clear failure output).
::testing::AssertionResult contains(const std::string& text, const std::string& part);

}  // namespace ifw::test

// Skips the current test, saying why, when the reference corpus is absent.
#define IFW_REQUIRE_GOLDEN()                                                                   \
  do {                                                                                         \
    if (!::ifw::test::golden_dir()) {                                                          \
      GTEST_SKIP() << "reference corpus not found: set IFW_GOLDEN_DIR or check out ../shared " \
                      "beside the project";                                                    \
    }                                                                                          \
  } while (0)
