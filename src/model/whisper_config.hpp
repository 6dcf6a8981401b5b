// config.json: the architecture of a Whisper checkpoint, with transformers' defaults for absent
// fields.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ifw::model {

struct WhisperConfig {
  int vocab_size = 51865;
  int num_mel_bins = 80;
  int d_model = 384;
  int encoder_layers = 4;
  int encoder_attention_heads = 6;
  int encoder_ffn_dim = 1536;
  int decoder_layers = 4;
  int decoder_attention_heads = 6;
  int decoder_ffn_dim = 1536;
  int max_source_positions = 1500;  // encoder positions: 3000 mel frames after the stride-2 conv
  int max_target_positions = 448;   // decoder positions
  std::string activation_function = "gelu";
  bool scale_embedding = false;
  bool tie_word_embeddings = true;  // proj_out shares decoder.embed_tokens
  int decoder_start_token_id = 50257;
  int pad_token_id = 50256;
  int bos_token_id = 50256;
  int eos_token_id = 50256;
  // Older checkpoints keep decoding rules here; generation_config.json takes precedence.
  std::optional<std::vector<int>> suppress_tokens;
  // transformers' default (220, 50256) fits only the English-only vocabulary; when no file
  // names them, ModelFolder uses openai/whisper's rule instead (the " " token and end of text).
  std::optional<std::vector<int>> begin_suppress_tokens;
  int median_filter_width = 7;
  std::string torch_dtype;  // informational: what the checkpoint says it stores

  int encoder_head_dim() const { return d_model / encoder_attention_heads; }
  int decoder_head_dim() const { return d_model / decoder_attention_heads; }
};

// `source` names the document in errors (usually the file path).
WhisperConfig parse_whisper_config(const nlohmann::json& json, const std::string& source);
WhisperConfig load_whisper_config(const std::filesystem::path& file);

}  // namespace ifw::model
