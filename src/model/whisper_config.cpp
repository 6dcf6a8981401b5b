#include "model/whisper_config.hpp"

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "util/json.hpp"

namespace ifw::model {
namespace {

constexpr std::int64_t kMaxDim = 1 << 16;
constexpr std::int64_t kMaxVocab = 1 << 24;

std::vector<int> to_int_vector(const std::vector<std::int64_t>& values, const util::JsonObject& obj,
                               std::string_view key) {
  std::vector<int> out;
  out.reserve(values.size());
  for (const std::int64_t v : values) {
    if (v < 0 || v >= kMaxVocab) obj.fail(key, fmt::format("holds {}, not a token id", v));
    out.push_back(static_cast<int>(v));
  }
  return out;
}

}  // namespace

WhisperConfig parse_whisper_config(const nlohmann::json& json, const std::string& source) {
  const util::JsonObject obj(json, source);
  WhisperConfig c;

  if (const auto type = obj.get_string("model_type"); type && *type != "whisper") {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: model_type is \"{}\", not a Whisper model", source, *type));
  }
  const auto dim = [&](std::string_view key, int fallback) {
    return static_cast<int>(obj.int_in_range(key, fallback, 1, kMaxDim));
  };
  const auto token = [&](std::string_view key, int fallback) {
    return static_cast<int>(obj.int_in_range(key, fallback, 0, kMaxVocab - 1));
  };
  c.vocab_size = static_cast<int>(obj.int_in_range("vocab_size", c.vocab_size, 1, kMaxVocab));
  c.num_mel_bins = dim("num_mel_bins", c.num_mel_bins);
  c.d_model = dim("d_model", c.d_model);
  c.encoder_layers = dim("encoder_layers", c.encoder_layers);
  c.encoder_attention_heads = dim("encoder_attention_heads", c.encoder_attention_heads);
  c.encoder_ffn_dim = dim("encoder_ffn_dim", c.encoder_ffn_dim);
  c.decoder_layers = dim("decoder_layers", c.decoder_layers);
  c.decoder_attention_heads = dim("decoder_attention_heads", c.decoder_attention_heads);
  c.decoder_ffn_dim = dim("decoder_ffn_dim", c.decoder_ffn_dim);
  c.max_source_positions = dim("max_source_positions", c.max_source_positions);
  c.max_target_positions = dim("max_target_positions", c.max_target_positions);
  c.activation_function = obj.get_string("activation_function").value_or(c.activation_function);
  c.scale_embedding = obj.get_bool("scale_embedding").value_or(c.scale_embedding);
  c.tie_word_embeddings = obj.get_bool("tie_word_embeddings").value_or(c.tie_word_embeddings);
  c.decoder_start_token_id = token("decoder_start_token_id", c.decoder_start_token_id);
  c.pad_token_id = token("pad_token_id", c.pad_token_id);
  c.bos_token_id = token("bos_token_id", c.bos_token_id);
  c.eos_token_id = token("eos_token_id", c.eos_token_id);
  if (auto v = obj.get_int_list("suppress_tokens")) {
    c.suppress_tokens = to_int_vector(*v, obj, "suppress_tokens");
  }
  if (auto v = obj.get_int_list("begin_suppress_tokens")) {
    c.begin_suppress_tokens = to_int_vector(*v, obj, "begin_suppress_tokens");
  }
  c.median_filter_width = static_cast<int>(obj.int_in_range("median_filter_width", 7, 1, 101));
  if (c.median_filter_width % 2 == 0) {
    obj.fail("median_filter_width", fmt::format("is {}, must be odd", c.median_filter_width));
  }
  c.torch_dtype = obj.get_string("torch_dtype").value_or(obj.get_string("dtype").value_or(""));

  if (c.activation_function != "gelu") {
    throw Error(
        ErrorKind::kUnsupported,
        fmt::format("{}: activation_function \"{}\" is not supported (Whisper uses \"gelu\")",
                    source, c.activation_function));
  }
  if (c.d_model % c.encoder_attention_heads != 0) {
    obj.fail("encoder_attention_heads", fmt::format("is {}, which does not divide d_model {}",
                                                    c.encoder_attention_heads, c.d_model));
  }
  if (c.d_model % c.decoder_attention_heads != 0) {
    obj.fail("decoder_attention_heads", fmt::format("is {}, which does not divide d_model {}",
                                                    c.decoder_attention_heads, c.d_model));
  }
  for (const auto& [key, id] : {std::pair{"decoder_start_token_id", c.decoder_start_token_id},
                                std::pair{"eos_token_id", c.eos_token_id}}) {
    if (id >= c.vocab_size) {
      obj.fail(key, fmt::format("is {}, outside the vocabulary of {} tokens", id, c.vocab_size));
    }
  }
  return c;
}

WhisperConfig load_whisper_config(const std::filesystem::path& file) {
  return parse_whisper_config(util::read_json_file(file), file.string());
}

}  // namespace ifw::model
