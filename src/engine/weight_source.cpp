#include "engine/weight_source.hpp"

#include <cmath>
#include <numbers>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <ifw/error.hpp>

namespace ifw::engine {

std::vector<float> CheckpointWeights::read(const std::string& name, const backend::Shape& shape) {
  const model::TensorView& t = checkpoint_.at(name);
  if (t.shape != shape) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("tensor {} is {}, the model needs {}", name, t.shape_string(),
                            backend::shape_string(shape)));
  }
  std::vector<float> values(static_cast<std::size_t>(t.element_count()));
  backend::convert_to_float(*t.dtype, t.data, values);
  return values;
}

namespace {

// splitmix64: a fast, well-mixed generator; quality is irrelevant beyond "not degenerate".
std::uint64_t mix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

bool RandomWeights::has(const std::string& name) const {
  return name != "proj_out.weight";
}

std::vector<float> RandomWeights::read(const std::string& name, const backend::Shape& shape) {
  std::vector<float> values(static_cast<std::size_t>(backend::element_count(shape)));
  std::uint64_t state = seed_ ^ std::hash<std::string>{}(name);
  const bool norm = name.find("layer_norm") != std::string::npos;
  if (name == "model.encoder.embed_positions.weight") {
    // Sinusoidal, as in real checkpoints: keeps encoder activations realistic.
    const std::int64_t d = shape[1], half = d / 2;
    const double step = std::log(10000.0) / static_cast<double>(half - 1);
    for (std::int64_t t = 0; t < shape[0]; ++t) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(t) * std::exp(-step * static_cast<double>(i));
        values[static_cast<std::size_t>(t * d + i)] = static_cast<float>(std::sin(angle));
        values[static_cast<std::size_t>(t * d + half + i)] = static_cast<float>(std::cos(angle));
      }
    }
    return values;
  }
  std::int64_t fan_in = 1;
  for (std::size_t i = 1; i < shape.size(); ++i)
    fan_in *= shape[i];
  const float scale =
      shape.size() >= 2 ? static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in))) : 0.1f;
  const float offset = norm && name.ends_with(".weight") ? 1.0f : 0.0f;
  for (float& v : values) {
    const auto r = static_cast<float>(mix(state) >> 40) / static_cast<float>(1 << 24);  // [0, 1)
    v = offset + scale * (2.0f * r - 1.0f);
  }
  return values;
}

namespace {

struct Architecture {
  const char* name;
  int d_model, heads, encoder_layers, decoder_layers, n_mels, vocab;
};
constexpr Architecture kArchitectures[] = {
    {"tiny", 384, 6, 4, 4, 80, 51865},
    {"base", 512, 8, 6, 6, 80, 51865},
    {"small", 768, 12, 12, 12, 80, 51865},
    {"medium", 1024, 16, 24, 24, 80, 51865},
    {"large-v2", 1280, 20, 32, 32, 80, 51865},
    {"large-v3", 1280, 20, 32, 32, 128, 51866},
    {"large-v3-turbo", 1280, 20, 32, 4, 128, 51866},
};

}  // namespace

std::vector<std::string> published_architecture_names() {
  std::vector<std::string> names;
  for (const Architecture& a : kArchitectures)
    names.emplace_back(a.name);
  return names;
}

model::WhisperConfig published_architecture(const std::string& name) {
  for (const Architecture& a : kArchitectures) {
    if (name != a.name) continue;
    model::WhisperConfig c;
    c.d_model = a.d_model;
    c.encoder_attention_heads = c.decoder_attention_heads = a.heads;
    c.encoder_layers = a.encoder_layers;
    c.decoder_layers = a.decoder_layers;
    c.encoder_ffn_dim = c.decoder_ffn_dim = 4 * a.d_model;
    c.num_mel_bins = a.n_mels;
    c.vocab_size = a.vocab;
    c.decoder_start_token_id = 50258;
    c.eos_token_id = c.pad_token_id = c.bos_token_id = 50257;
    return c;
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("unknown architecture \"{}\"; known: {}", name,
                          fmt::join(published_architecture_names(), ", ")));
}

}  // namespace ifw::engine
