// Synthetic Whisper model folders, written in the Hugging Face layout with a tiny architecture
// and a tiny byte-level vocabulary, so that loading and every malformed variant can be tested
// without the reference corpus.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ifw::test {

// One tensor to write: `bytes` must hold exactly what dtype x shape needs (or deliberately not).
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "I64", ...
  std::vector<std::int64_t> shape;
  std::string bytes;
};

// A safetensors file's bytes: header as the reference writer lays it out (padded with spaces to
// 8 bytes), tensors in the given order.
std::string build_safetensors(const std::vector<SafetensorsEntry>& tensors,
                              const nlohmann::json& metadata = nlohmann::json::object());
// The same, with a caller-supplied header (for malformed headers).
std::string build_safetensors_raw(const std::string& header, const std::string& data);

// Architecture of the synthetic models.
struct SyntheticArch {
  int d_model = 8;
  int heads = 2;
  int encoder_layers = 1;
  int decoder_layers = 2;
  int ffn = 16;
  int n_mels = 80;
};

// Byte-level vocabulary: 256 bytes, 5 merges ("Ġt", "he", "Ġthe", "ll", "Ġw"), then Whisper's
// special tokens with 99 languages and 1501 timestamps.
inline constexpr int kSyntheticRegularTokens = 261;
inline constexpr int kSyntheticVocabSize = kSyntheticRegularTokens + 1608;
inline constexpr int kSyntheticEndOfText = kSyntheticRegularTokens;
inline constexpr int kSyntheticStartOfTranscript = kSyntheticRegularTokens + 1;
inline constexpr int kSyntheticNoTimestamps = kSyntheticRegularTokens + 106;

enum class TokenizerFormat { kTokenizerJson, kVocabAndMerges, kTiktoken };

struct SyntheticModelOptions {
  SyntheticArch arch;
  std::string dtype = "F32";
  int shards = 1;  // more than one writes model.safetensors.index.json
  bool store_proj_out = false;
  bool tie_word_embeddings = true;
  bool generation_config = true;
  bool preprocessor_config = true;
  TokenizerFormat tokenizer = TokenizerFormat::kTokenizerJson;
};

nlohmann::json synthetic_config(const SyntheticArch& arch = {});
nlohmann::json synthetic_generation_config(const SyntheticArch& arch = {});
nlohmann::json synthetic_preprocessor_config(const SyntheticArch& arch = {});
nlohmann::json synthetic_tokenizer_json();
// Every tensor of the architecture, deterministic values, in the reference's canonical order.
std::vector<SafetensorsEntry> synthetic_tensors(const SyntheticArch& arch, const std::string& dtype,
                                                bool with_proj_out = false);

void write_json(const std::filesystem::path& file, const nlohmann::json& value);
// The synthetic vocabulary's files in one format: tokenizer.json; vocab.json + merges.txt +
// added_tokens.json; or synthetic.tiktoken.
void write_synthetic_tokenizer(const std::filesystem::path& dir, TokenizerFormat format);
// Writes a complete, valid model folder into `dir` (which must exist).
void write_synthetic_model(const std::filesystem::path& dir,
                           const SyntheticModelOptions& options = {});

}  // namespace ifw::test
