// ifw::inspect_model: the public summary of a model folder.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <ifw/model_info.hpp>

#include "model/model_folder.hpp"
#include "model/variants.hpp"

namespace ifw {

ModelInfo inspect_model(const std::filesystem::path& model_dir) {
  const model::ModelFolder folder(model_dir);
  const model::WhisperConfig& c = folder.config();
  const model::Tokenizer& tok = folder.tokenizer();
  ModelInfo info;
  info.path = folder.dir();
  info.variant = model::variant_name(c, tok.multilingual());
  info.n_mels = c.num_mel_bins;
  info.d_model = c.d_model;
  info.encoder_layers = c.encoder_layers;
  info.encoder_heads = c.encoder_attention_heads;
  info.encoder_ffn = c.encoder_ffn_dim;
  info.decoder_layers = c.decoder_layers;
  info.decoder_heads = c.decoder_attention_heads;
  info.decoder_ffn = c.decoder_ffn_dim;
  info.audio_positions = c.max_source_positions;
  info.text_positions = c.max_target_positions;
  info.dtype = std::string(backend::dtype_name(folder.checkpoint().dominant_dtype()));
  for (const auto& f : folder.weights().files())
    info.weight_files.push_back(f->path().filename().string());
  info.parameter_count = folder.checkpoint().parameter_count();
  info.weight_bytes = folder.checkpoint().byte_count();
  info.tokenizer_source = tok.source();
  info.vocab_size = tok.size();
  info.multilingual = tok.multilingual();
  for (const auto& [code, id] : tok.specials().languages)
    info.languages.push_back(code);
  for (const model::AlignmentHead& h : *folder.generation().alignment_heads) {
    info.alignment_heads.emplace_back(h.layer, h.head);
  }
  info.alignment_heads_default = folder.alignment_heads_default();
  return info;
}

std::string format_model_info(const ModelInfo& m) {
  std::string heads;
  for (const auto& [layer, head] : m.alignment_heads)
    heads += fmt::format(" {}:{}", layer, head);
  const auto languages =
      m.languages.size() <= 12
          ? fmt::format("{}", fmt::join(m.languages, " "))
          : fmt::format("{} ... {}", fmt::join(m.languages.begin(), m.languages.begin() + 10, " "),
                        m.languages.back());
  return fmt::format(
      "model       {}\n"
      "variant     {}\n"
      "encoder     {} layers, d_model {}, {} heads, ffn {}, {} mel bins, {} positions\n"
      "decoder     {} layers, d_model {}, {} heads, ffn {}, {} positions\n"
      "weights     {}, {} parameters ({:.1f} MiB) in {}\n"
      "vocabulary  {} tokens, {} from {}\n"
      "languages   {}: {}\n"
      "alignment   {} heads (layer:head){}{}\n",
      m.path.string(), m.variant, m.encoder_layers, m.d_model, m.encoder_heads, m.encoder_ffn,
      m.n_mels, m.audio_positions, m.decoder_layers, m.d_model, m.decoder_heads, m.decoder_ffn,
      m.text_positions, m.dtype, m.parameter_count,
      static_cast<double>(m.weight_bytes) / (1024.0 * 1024.0), fmt::join(m.weight_files, ", "),
      m.vocab_size, m.multilingual ? "multilingual" : "English-only", m.tokenizer_source,
      m.languages.size(), languages, m.alignment_heads.size(), heads,
      m.alignment_heads_default ? " (default: generation_config.json names none)" : "");
}

std::string model_info_json(const ModelInfo& m) {
  nlohmann::ordered_json j;
  j["path"] = m.path.string();
  j["variant"] = m.variant;
  j["architecture"] = {
      {"n_mels", m.n_mels},
      {"d_model", m.d_model},
      {"encoder_layers", m.encoder_layers},
      {"encoder_attention_heads", m.encoder_heads},
      {"encoder_ffn_dim", m.encoder_ffn},
      {"decoder_layers", m.decoder_layers},
      {"decoder_attention_heads", m.decoder_heads},
      {"decoder_ffn_dim", m.decoder_ffn},
      {"max_source_positions", m.audio_positions},
      {"max_target_positions", m.text_positions},
  };
  j["dtype"] = m.dtype;
  j["weight_files"] = m.weight_files;
  j["parameter_count"] = m.parameter_count;
  j["weight_bytes"] = m.weight_bytes;
  j["tokenizer"] = m.tokenizer_source;
  j["vocab_size"] = m.vocab_size;
  j["multilingual"] = m.multilingual;
  j["languages"] = m.languages;
  nlohmann::ordered_json heads = nlohmann::ordered_json::array();
  for (const auto& [layer, head] : m.alignment_heads)
    heads.push_back({layer, head});
  j["alignment_heads"] = heads;
  j["alignment_heads_default"] = m.alignment_heads_default;
  return j.dump(2) + "\n";
}

}  // namespace ifw
