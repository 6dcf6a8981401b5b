#include "support/golden.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>

namespace ifw::test {

std::optional<std::filesystem::path> golden_dir() {
  const char* env = std::getenv("IFW_GOLDEN_DIR");
  const std::filesystem::path dir = env != nullptr && *env != '\0' ? env : IFW_DEFAULT_GOLDEN_DIR;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::nullopt;
  return std::filesystem::canonical(dir, ec);
}

std::optional<std::filesystem::path> whisper_data_dir() {
  std::filesystem::path dir;
  if (const char* env = std::getenv("IFW_WHISPER_DATA_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  } else if (const auto golden = golden_dir()) {
    dir = *golden / ".." / "data" / "openai-whisper";
  } else {
    return std::nullopt;
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::nullopt;
  return std::filesystem::canonical(dir, ec);
}

std::vector<std::string> golden_model_names() {
  std::vector<std::string> names;
  const auto dir = golden_dir();
  std::error_code ec;
  if (!dir || !std::filesystem::is_directory(*dir / "models", ec)) return names;
  for (const auto& entry : std::filesystem::directory_iterator(*dir / "models")) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<float> read_f32_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  const auto bytes = static_cast<std::size_t>(in.tellg());
  if (bytes % sizeof(float) != 0)
    throw std::runtime_error(path.string() + ": size is not a multiple of 4");
  std::vector<float> data(bytes / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(bytes));
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return data;
}

std::string test_name(std::string text) {
  for (char& c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return text;
}

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "\"" << text << "\"\n  does not contain \"" << part << "\"";
}

std::vector<std::string> corpus_params(std::vector<std::string> names) {
  if (names.empty()) names.push_back(kNoCorpus);
  return names;
}

std::string jfk() {
  return (*whisper_data_dir() / "jfk.flac").string();
}

std::string golden_model(const std::string& name) {
  return (*golden_dir() / "models" / name).string();
}

}  // namespace ifw::test
