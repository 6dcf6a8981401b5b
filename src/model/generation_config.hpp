// generation_config.json: Whisper's decoding rules and special-token ids, as the checkpoint states
// them. Absent fields stay empty here; ModelFolder fills them from config.json and the tokenizer.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ifw::model {

struct AlignmentHead {
  int layer = 0;
  int head = 0;
  friend bool operator==(const AlignmentHead&, const AlignmentHead&) = default;
};

struct GenerationConfig {
  std::optional<std::vector<AlignmentHead>> alignment_heads;
  std::optional<std::vector<int>> suppress_tokens;
  std::optional<std::vector<int>> begin_suppress_tokens;
  std::optional<int> decoder_start_token_id;
  // One id or a list (transformers accepts both); generation stops at any of them.
  std::optional<std::vector<int>> eos_token_ids;
  std::optional<int> pad_token_id;
  std::optional<int> no_timestamps_token_id;
  std::optional<int> prev_sot_token_id;
  std::optional<bool> is_multilingual;
  std::map<std::string, int> lang_to_id;  // "<|en|>" -> 50259
  std::map<std::string, int> task_to_id;  // "transcribe" -> 50359
  int max_initial_timestamp_index = 50;   // 1.0 s, as openai/whisper
  int max_length = 448;
  bool return_timestamps = false;
};

GenerationConfig parse_generation_config(const nlohmann::json& json, const std::string& source);
GenerationConfig load_generation_config(const std::filesystem::path& file);

}  // namespace ifw::model
