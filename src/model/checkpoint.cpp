#include "model/checkpoint.hpp"

#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <ifw/error.hpp>

namespace ifw::model {
namespace {

using Shape = std::vector<std::int64_t>;

void add_linear(std::vector<ExpectedTensor>& out, const std::string& prefix, std::int64_t n_out,
                std::int64_t n_in, bool bias = true) {
  out.push_back({prefix + ".weight", {n_out, n_in}});
  if (bias) out.push_back({prefix + ".bias", {n_out}});
}

void add_layer_norm(std::vector<ExpectedTensor>& out, const std::string& prefix, std::int64_t d) {
  out.push_back({prefix + ".weight", {d}});
  out.push_back({prefix + ".bias", {d}});
}

void add_attention(std::vector<ExpectedTensor>& out, const std::string& prefix, std::int64_t d) {
  add_linear(out, prefix + ".k_proj", d, d, /*bias=*/false);  // Whisper's keys have no bias
  add_linear(out, prefix + ".v_proj", d, d);
  add_linear(out, prefix + ".q_proj", d, d);
  add_linear(out, prefix + ".out_proj", d, d);
}

std::string shape_text(const Shape& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// At most `limit` items of a list for an error message, then how many more.
std::string list_some(const std::vector<std::string>& items, std::size_t limit = 6) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < limit; ++i) {
    out += (i == 0 ? "" : "; ") + items[i];
  }
  if (items.size() > limit) out += fmt::format("; and {} more", items.size() - limit);
  return out;
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const WhisperConfig& c) {
  const std::int64_t d = c.d_model;
  std::vector<ExpectedTensor> out;
  const std::string e = "model.encoder";
  out.push_back({e + ".conv1.weight", {d, c.num_mel_bins, 3}});
  out.push_back({e + ".conv1.bias", {d}});
  out.push_back({e + ".conv2.weight", {d, d, 3}});
  out.push_back({e + ".conv2.bias", {d}});
  out.push_back({e + ".embed_positions.weight", {c.max_source_positions, d}});
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", e, i);
    add_attention(out, p + ".self_attn", d);
    add_layer_norm(out, p + ".self_attn_layer_norm", d);
    add_linear(out, p + ".fc1", c.encoder_ffn_dim, d);
    add_linear(out, p + ".fc2", d, c.encoder_ffn_dim);
    add_layer_norm(out, p + ".final_layer_norm", d);
  }
  add_layer_norm(out, e + ".layer_norm", d);

  const std::string k = "model.decoder";
  out.push_back({k + ".embed_tokens.weight", {c.vocab_size, d}});
  out.push_back({k + ".embed_positions.weight", {c.max_target_positions, d}});
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", k, i);
    add_attention(out, p + ".self_attn", d);
    add_layer_norm(out, p + ".self_attn_layer_norm", d);
    add_attention(out, p + ".encoder_attn", d);
    add_layer_norm(out, p + ".encoder_attn_layer_norm", d);
    add_linear(out, p + ".fc1", c.decoder_ffn_dim, d);
    add_linear(out, p + ".fc2", d, c.decoder_ffn_dim);
    add_layer_norm(out, p + ".final_layer_norm", d);
  }
  add_layer_norm(out, k + ".layer_norm", d);
  out.push_back({"proj_out.weight", {c.vocab_size, d}, /*required=*/!c.tie_word_embeddings});
  return out;
}

Checkpoint::Checkpoint(const WeightFiles& weights, const WhisperConfig& config) {
  // Checkpoints saved from WhisperModel (not ...ForConditionalGeneration) lack the "model." prefix.
  if (weights.find("model.encoder.conv1.weight") == nullptr &&
      weights.find("encoder.conv1.weight") != nullptr) {
    prefix_ = "";
  } else {
    prefix_ = "model.";
  }
  const auto file_name = [&](const std::string& canonical) {
    if (canonical.rfind("model.", 0) == 0) return prefix_ + canonical.substr(6);
    return canonical;
  };

  std::vector<std::string> missing, misshaped, unsupported;
  std::set<std::string> used;
  std::map<backend::DType, std::int64_t> bytes_by_dtype;
  for (const ExpectedTensor& want : expected_tensors(config)) {
    const std::string name = file_name(want.name);
    const TensorView* t = weights.find(name);
    if (t == nullptr) {
      if (want.required) missing.push_back(fmt::format("{} {}", name, shape_text(want.shape)));
      continue;
    }
    used.insert(name);
    if (t->shape != want.shape) {
      misshaped.push_back(fmt::format("{} is {} in {}, config.json implies {}", name,
                                      t->shape_string(), t->file->filename().string(),
                                      shape_text(want.shape)));
    }
    if (!t->dtype) {
      unsupported.push_back(
          fmt::format("{} is {} in {}", name, t->dtype_name, t->file->filename().string()));
    } else {
      bytes_by_dtype[*t->dtype] += static_cast<std::int64_t>(t->data.size());
    }
    tensors_.emplace(want.name, t);
    parameter_count_ += t->element_count();
    byte_count_ += static_cast<std::int64_t>(t->data.size());
  }
  std::vector<std::string> unexpected;
  for (const TensorView* t : weights.all()) {
    if (!used.contains(t->name)) {
      unexpected.push_back(
          fmt::format("{} {} in {}", t->name, t->shape_string(), t->file->filename().string()));
    }
  }

  std::vector<std::string> problems;
  if (!misshaped.empty()) {
    problems.push_back(fmt::format("config and weights disagree: {}", list_some(misshaped)));
  }
  if (!missing.empty()) {
    problems.push_back(fmt::format("{} tensor(s) missing: {}", missing.size(), list_some(missing)));
  }
  if (!unsupported.empty()) {
    problems.push_back(
        fmt::format("unsupported dtype (ifw reads F32, F16, BF16): {}", list_some(unsupported)));
  }
  if (!unexpected.empty()) {
    problems.push_back(
        fmt::format("{} unexpected tensor(s) that a Whisper model of this config "
                    "does not have: {}",
                    unexpected.size(), list_some(unexpected)));
  }
  if (!problems.empty()) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("weights do not match the model: {}", fmt::join(problems, "; ")));
  }
  std::int64_t best = -1;
  for (const auto& [dtype, bytes] : bytes_by_dtype) {
    if (bytes > best) {
      best = bytes;
      dominant_dtype_ = dtype;
    }
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::at(const std::string& name) const {
  const TensorView* t = find(name);
  if (t == nullptr) {
    throw Error(ErrorKind::kInvalidModel, fmt::format("checkpoint has no tensor \"{}\"", name));
  }
  return *t;
}

}  // namespace ifw::model
