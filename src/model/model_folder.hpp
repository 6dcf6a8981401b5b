// A Whisper model folder as the Hugging Face Hub ships it, read and cross-checked in full:
// config.json, generation_config.json, preprocessor_config.json, the tokenizer and the weights.
#pragma once

#include <filesystem>
#include <memory>

#include "model/checkpoint.hpp"
#include "model/generation_config.hpp"
#include "model/preprocessor_config.hpp"
#include "model/safetensors.hpp"
#include "model/tokenizer/tokenizer.hpp"
#include "model/whisper_config.hpp"

namespace ifw::model {

class ModelFolder {
 public:
  // Throws ifw::Error naming the file, field or tensor at fault.
  explicit ModelFolder(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const WhisperConfig& config() const { return config_; }
  // Every optional field filled: from generation_config.json, else config.json, else the tokenizer
  // and openai/whisper's defaults (see the *_default flags).
  const GenerationConfig& generation() const { return generation_; }
  const PreprocessorConfig& preprocessor() const { return preprocessor_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const WeightFiles& weights() const { return weights_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }

  bool alignment_heads_default() const { return alignment_heads_default_; }
  bool suppress_tokens_default() const { return suppress_tokens_default_; }

 private:
  void resolve_generation(bool has_file);

  std::filesystem::path dir_;
  WhisperConfig config_;
  GenerationConfig generation_;
  PreprocessorConfig preprocessor_;
  Tokenizer tokenizer_;
  WeightFiles weights_;
  std::unique_ptr<Checkpoint> checkpoint_;  // views into weights_
  bool alignment_heads_default_ = false;
  bool suppress_tokens_default_ = false;
};

}  // namespace ifw::model
