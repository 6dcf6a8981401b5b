// What a Whisper model folder holds, read and validated without running the model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ifw {

struct ModelInfo {
  std::filesystem::path path;
  std::string variant;  // "tiny", "large-v3-turbo", "distil-large-v3", ... or "custom"

  // Architecture
  int n_mels = 0;
  int d_model = 0;
  int encoder_layers = 0;
  int encoder_heads = 0;
  int encoder_ffn = 0;
  int decoder_layers = 0;
  int decoder_heads = 0;
  int decoder_ffn = 0;
  int audio_positions = 0;  // max_source_positions
  int text_positions = 0;   // max_target_positions

  // Weights
  std::string dtype;                      // dominant storage type: "float32", "float16", "bfloat16"
  std::vector<std::string> weight_files;  // relative to path
  std::int64_t parameter_count = 0;
  std::int64_t weight_bytes = 0;

  // Vocabulary
  std::string tokenizer_source;  // which file(s) the tokenizer came from
  int vocab_size = 0;
  bool multilingual = false;
  std::vector<std::string> languages;                // language codes, in token order
  std::vector<std::pair<int, int>> alignment_heads;  // (decoder layer, head)
  bool alignment_heads_default = false;  // true when generation_config.json did not name them
};

// Reads and validates every file of the folder (configs, weights, tokenizer).
// Throws ifw::Error naming the file, field or tensor at fault.
ModelInfo inspect_model(const std::filesystem::path& model_dir);

// Human-readable summary, several lines, and the same as a JSON document.
std::string format_model_info(const ModelInfo& info);
std::string model_info_json(const ModelInfo& info);

}  // namespace ifw
