// Where a model's weights come from: a validated checkpoint (converted to float32), or random
// values for benchmarking an architecture without downloading it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/tensor.hpp"
#include "model/checkpoint.hpp"
#include "model/whisper_config.hpp"

namespace ifw::engine {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor named as in Hugging Face checkpoints ("model.encoder.conv1.weight"), as float32.
  virtual std::vector<float> read(const std::string& name, const backend::Shape& shape) = 0;
  // Whether the source holds this (optional) tensor, e.g. an untied "proj_out.weight".
  virtual bool has(const std::string& name) const = 0;
};

class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(const model::Checkpoint& checkpoint) : checkpoint_(checkpoint) {}
  std::vector<float> read(const std::string& name, const backend::Shape& shape) override;
  bool has(const std::string& name) const override { return checkpoint_.find(name) != nullptr; }

 private:
  const model::Checkpoint& checkpoint_;
};

// Uniform random weights scaled like a trained model's (sqrt(3 / fan_in)), layer norms near 1,
// sinusoidal encoder positions. Deterministic for a seed; fast enough for large-v3.
class RandomWeights final : public WeightSource {
 public:
  explicit RandomWeights(std::uint64_t seed) : seed_(seed) {}
  std::vector<float> read(const std::string& name, const backend::Shape& shape) override;
  bool has(const std::string& name) const override;

 private:
  std::uint64_t seed_;
};

// The architectures of the published models, for benchmarks: tiny, base, small, medium,
// large-v3, large-v3-turbo (and "large-v2"). Throws ifw::Error for an unknown name.
model::WhisperConfig published_architecture(const std::string& name);
std::vector<std::string> published_architecture_names();

}  // namespace ifw::engine
