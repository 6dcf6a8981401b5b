// The tensors a Whisper checkpoint must hold, derived from its config, checked against the files.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/safetensors.hpp"
#include "model/whisper_config.hpp"

namespace ifw::model {

struct ExpectedTensor {
  std::string name;  // canonical Hugging Face name, e.g. "model.encoder.conv1.weight"
  std::vector<std::int64_t> shape;
  bool required = true;  // proj_out.weight is optional when tied to the token embedding
};

// Every tensor the architecture in `config` implies, in a fixed order.
std::vector<ExpectedTensor> expected_tensors(const WhisperConfig& config);

// A checkpoint whose tensors all match the config: each present, right shape, a dtype ifw
// computes with, and none left over. Holds views into `weights`, which must outlive it.
class Checkpoint {
 public:
  // Throws ifw::Error listing every missing, mis-shaped, unsupported or unexpected tensor.
  Checkpoint(const WeightFiles& weights, const WhisperConfig& config);

  // Canonical name -> view; nullptr for an optional tensor the files do not hold.
  const TensorView* find(const std::string& name) const;
  const TensorView& at(const std::string& name) const;

  std::int64_t parameter_count() const { return parameter_count_; }
  std::int64_t byte_count() const { return byte_count_; }
  // Storage type holding most of the bytes (a checkpoint may keep norms in float32).
  backend::DType dominant_dtype() const { return dominant_dtype_; }
  // The prefix the files use: "model." (WhisperForConditionalGeneration) or "" (WhisperModel).
  const std::string& name_prefix() const { return prefix_; }

 private:
  std::map<std::string, const TensorView*> tensors_;
  std::int64_t parameter_count_ = 0;
  std::int64_t byte_count_ = 0;
  backend::DType dominant_dtype_ = backend::DType::kF32;
  std::string prefix_;
};

}  // namespace ifw::model
