#include "support/model_builder.hpp"

#include <cstring>

#include <fmt/format.h>

#include "backend/dtype.hpp"
#include "model/languages.hpp"
#include "model/tokenizer/byte_level.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

std::string encode_values(const std::vector<float>& values, const std::string& dtype) {
  std::string bytes;
  for (const float v : values) {
    if (dtype == "F32") {
      char b[4];
      std::memcpy(b, &v, 4);
      bytes.append(b, 4);
    } else {
      const std::uint16_t h =
          dtype == "F16" ? backend::float_to_half(v) : backend::float_to_bfloat16(v);
      bytes.push_back(static_cast<char>(h & 0xFF));
      bytes.push_back(static_cast<char>(h >> 8));
    }
  }
  return bytes;
}

// Deterministic values in [-scale, scale] (a linear congruential generator; the numbers only
// need to differ between tensors).
std::vector<float> values(std::int64_t n, std::uint32_t seed, float scale, float offset = 0.0f) {
  std::vector<float> out(static_cast<std::size_t>(n));
  std::uint32_t x = seed * 2654435761u + 1;
  for (float& v : out) {
    x = x * 1664525u + 1013904223u;
    v = offset + scale * (static_cast<float>(x >> 8) / 8388608.0f - 1.0f);
  }
  return out;
}

const std::vector<std::pair<std::string, std::string>>& merges() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {" ", "t"}, {"h", "e"}, {" t", "he"}, {"l", "l"}, {" ", "w"}};
  return m;
}

std::vector<std::string> special_contents() {
  std::vector<std::string> s = {"<|endoftext|>", "<|startoftranscript|>"};
  for (int i = 0; i < 99; ++i)
    s.push_back(
        fmt::format("<|{}|>", model::whisper_languages()[static_cast<std::size_t>(i)].code));
  for (const char* t : {"<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                        "<|nospeech|>", "<|notimestamps|>"}) {
    s.emplace_back(t);
  }
  for (int k = 0; k <= 1500; ++k)
    s.push_back(fmt::format("<|{}.{:02}|>", k * 2 / 100, k * 2 % 100));
  return s;
}

}  // namespace

std::string build_safetensors_raw(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string build_safetensors(const std::vector<SafetensorsEntry>& tensors,
                              const nlohmann::json& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::string data;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  return build_safetensors_raw(h, data);
}

nlohmann::json synthetic_config(const SyntheticArch& a) {
  return {{"architectures", {"WhisperForConditionalGeneration"}},
          {"model_type", "whisper"},
          {"vocab_size", kSyntheticVocabSize},
          {"num_mel_bins", a.n_mels},
          {"d_model", a.d_model},
          {"encoder_layers", a.encoder_layers},
          {"decoder_layers", a.decoder_layers},
          {"encoder_attention_heads", a.heads},
          {"decoder_attention_heads", a.heads},
          {"encoder_ffn_dim", a.ffn},
          {"decoder_ffn_dim", a.ffn},
          {"max_source_positions", 1500},
          {"max_target_positions", 448},
          {"activation_function", "gelu"},
          {"scale_embedding", false},
          {"tie_word_embeddings", true},
          {"bos_token_id", kSyntheticEndOfText},
          {"eos_token_id", kSyntheticEndOfText},
          {"pad_token_id", kSyntheticEndOfText},
          {"decoder_start_token_id", kSyntheticStartOfTranscript},
          {"torch_dtype", "float32"}};
}

nlohmann::json synthetic_generation_config(const SyntheticArch& a) {
  nlohmann::json lang_to_id = nlohmann::json::object();
  for (int i = 0; i < 99; ++i) {
    lang_to_id[fmt::format("<|{}|>",
                           model::whisper_languages()[static_cast<std::size_t>(i)].code)] =
        kSyntheticStartOfTranscript + 1 + i;
  }
  return {{"alignment_heads", {{a.decoder_layers - 1, 0}, {a.decoder_layers - 1, a.heads - 1}}},
          {"begin_suppress_tokens", {32, kSyntheticEndOfText}},  // " " is byte 32 here
          {"suppress_tokens", {1, 2, 7}},
          {"decoder_start_token_id", kSyntheticStartOfTranscript},
          {"eos_token_id", kSyntheticEndOfText},
          {"pad_token_id", kSyntheticEndOfText},
          {"is_multilingual", false},
          {"lang_to_id", lang_to_id},
          {"task_to_id",
           {{"translate", kSyntheticStartOfTranscript + 100},
            {"transcribe", kSyntheticStartOfTranscript + 101}}},
          {"no_timestamps_token_id", kSyntheticNoTimestamps},
          {"prev_sot_token_id", kSyntheticStartOfTranscript + 103},
          {"max_initial_timestamp_index", 50},
          {"max_length", 448}};
}

nlohmann::json synthetic_preprocessor_config(const SyntheticArch& a) {
  return {{"chunk_length", 30},
          {"feature_extractor_type", "WhisperFeatureExtractor"},
          {"feature_size", a.n_mels},
          {"hop_length", 160},
          {"n_fft", 400},
          {"n_samples", 480000},
          {"nb_max_frames", 3000},
          {"padding_side", "right"},
          {"padding_value", 0.0},
          {"return_attention_mask", false},
          {"sampling_rate", 16000}};
}

nlohmann::json synthetic_tokenizer_json() {
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b)
    vocab[model::byte_level_char(static_cast<unsigned char>(b))] = b;
  nlohmann::json merge_list = nlohmann::json::array();
  int id = 256;
  for (const auto& [l, r] : merges()) {
    const auto left = model::byte_level_encode(l), right = model::byte_level_encode(r);
    vocab[left + right] = id++;
    merge_list.push_back(left + " " + right);
  }
  nlohmann::json added = nlohmann::json::array();
  for (const auto& content : special_contents()) {
    added.push_back({{"id", id++},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern",
            {{"Regex",
              R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", false},
        {"use_regex", true}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merge_list}}}};
}

std::vector<SafetensorsEntry> synthetic_tensors(const SyntheticArch& a, const std::string& dtype,
                                                bool with_proj_out) {
  std::vector<SafetensorsEntry> out;
  std::uint32_t seed = 1;
  const std::int64_t d = a.d_model;
  const auto add = [&](const std::string& name, std::vector<std::int64_t> shape, float scale = 0.5f,
                       float offset = 0.0f) {
    std::int64_t n = 1;
    for (const auto s : shape)
      n *= s;
    out.push_back(
        {name, dtype, std::move(shape), encode_values(values(n, seed++, scale, offset), dtype)});
  };
  const auto linear = [&](const std::string& p, std::int64_t o, std::int64_t i, bool bias = true) {
    add(p + ".weight", {o, i});
    if (bias) add(p + ".bias", {o}, 0.1f);
  };
  const auto norm = [&](const std::string& p) {
    add(p + ".weight", {d}, 0.2f, 1.0f);
    add(p + ".bias", {d}, 0.1f);
  };
  const auto attention = [&](const std::string& p) {
    linear(p + ".k_proj", d, d, false);
    linear(p + ".v_proj", d, d);
    linear(p + ".q_proj", d, d);
    linear(p + ".out_proj", d, d);
  };
  const std::string e = "model.encoder";
  add(e + ".conv1.weight", {d, a.n_mels, 3});
  add(e + ".conv1.bias", {d}, 0.1f);
  add(e + ".conv2.weight", {d, d, 3});
  add(e + ".conv2.bias", {d}, 0.1f);
  add(e + ".embed_positions.weight", {1500, d});
  for (int i = 0; i < a.encoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", e, i);
    attention(p + ".self_attn");
    norm(p + ".self_attn_layer_norm");
    linear(p + ".fc1", a.ffn, d);
    linear(p + ".fc2", d, a.ffn);
    norm(p + ".final_layer_norm");
  }
  norm(e + ".layer_norm");
  const std::string k = "model.decoder";
  add(k + ".embed_tokens.weight", {kSyntheticVocabSize, d});
  add(k + ".embed_positions.weight", {448, d});
  for (int i = 0; i < a.decoder_layers; ++i) {
    const std::string p = fmt::format("{}.layers.{}", k, i);
    attention(p + ".self_attn");
    norm(p + ".self_attn_layer_norm");
    attention(p + ".encoder_attn");
    norm(p + ".encoder_attn_layer_norm");
    linear(p + ".fc1", a.ffn, d);
    linear(p + ".fc2", d, a.ffn);
    norm(p + ".final_layer_norm");
  }
  norm(k + ".layer_norm");
  if (with_proj_out) add("proj_out.weight", {kSyntheticVocabSize, d});
  return out;
}

void write_json(const std::filesystem::path& file, const nlohmann::json& value) {
  write_file(file, value.dump(1));
}

void write_synthetic_tokenizer(const std::filesystem::path& dir, TokenizerFormat format) {
  const nlohmann::json tokenizer = synthetic_tokenizer_json();
  switch (format) {
    case TokenizerFormat::kTokenizerJson:
      write_json(dir / "tokenizer.json", tokenizer);
      break;
    case TokenizerFormat::kVocabAndMerges: {
      write_json(dir / "vocab.json", tokenizer["model"]["vocab"]);
      std::string merges_txt = "#version: 0.2\n";
      for (const auto& m : tokenizer["model"]["merges"])
        merges_txt += m.get<std::string>() + "\n";
      write_file(dir / "merges.txt", merges_txt);
      nlohmann::json added = nlohmann::json::object();
      for (const auto& a : tokenizer["added_tokens"])
        added[a["content"].get<std::string>()] = a["id"];
      write_json(dir / "added_tokens.json", added);
      break;
    }
    case TokenizerFormat::kTiktoken: {
      std::string text;
      static constexpr char kB64[] =
          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      const auto base64 = [](const std::string& bytes) {
        std::string out;
        for (std::size_t i = 0; i < bytes.size(); i += 3) {
          std::uint32_t v = static_cast<std::uint8_t>(bytes[i]) << 16;
          if (i + 1 < bytes.size())
            v |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(bytes[i + 1])) << 8;
          if (i + 2 < bytes.size()) v |= static_cast<std::uint8_t>(bytes[i + 2]);
          out += kB64[(v >> 18) & 63];
          out += kB64[(v >> 12) & 63];
          out += i + 1 < bytes.size() ? kB64[(v >> 6) & 63] : '=';
          out += i + 2 < bytes.size() ? kB64[v & 63] : '=';
        }
        return out;
      };
      for (int b = 0; b < 256; ++b)
        text += fmt::format("{} {}\n", base64(std::string(1, static_cast<char>(b))), b);
      int rank = 256;
      for (const auto& [l, r] : merges())
        text += fmt::format("{} {}\n", base64(l + r), rank++);
      write_file(dir / "synthetic.tiktoken", text);
      break;
    }
  }
}

void write_synthetic_model(const std::filesystem::path& dir, const SyntheticModelOptions& o) {
  auto config = synthetic_config(o.arch);
  config["tie_word_embeddings"] = o.tie_word_embeddings;
  write_json(dir / "config.json", config);
  if (o.generation_config)
    write_json(dir / "generation_config.json", synthetic_generation_config(o.arch));
  if (o.preprocessor_config)
    write_json(dir / "preprocessor_config.json", synthetic_preprocessor_config(o.arch));

  write_synthetic_tokenizer(dir, o.tokenizer);

  auto tensors = synthetic_tensors(o.arch, o.dtype, o.store_proj_out || !o.tie_word_embeddings);
  if (o.shards <= 1) {
    write_file(dir / "model.safetensors", build_safetensors(tensors, {{"format", "pt"}}));
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  const std::size_t per_shard = (tensors.size() + static_cast<std::size_t>(o.shards) - 1) /
                                static_cast<std::size_t>(o.shards);
  std::size_t total = 0;
  for (int s = 0; s < o.shards; ++s) {
    const std::string name = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, o.shards);
    std::vector<SafetensorsEntry> part;
    for (std::size_t i = static_cast<std::size_t>(s) * per_shard;
         i < std::min(tensors.size(), static_cast<std::size_t>(s + 1) * per_shard); ++i) {
      part.push_back(tensors[i]);
      weight_map[tensors[i].name] = name;
      total += tensors[i].bytes.size();
    }
    write_file(dir / name, build_safetensors(part, {{"format", "pt"}}));
  }
  write_json(dir / "model.safetensors.index.json",
             {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

}  // namespace ifw::test
