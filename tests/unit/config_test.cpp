// config.json, generation_config.json and preprocessor_config.json of every published variant,
// with the reference's defaults for absent fields and clear errors for bad ones.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/generation_config.hpp"
#include "model/preprocessor_config.hpp"
#include "model/variants.hpp"
#include "model/whisper_config.hpp"
#include "support/expect_error.hpp"

namespace ifw::test {
namespace {

using model::parse_generation_config;
using model::parse_preprocessor_config;
using model::parse_whisper_config;
using model::WhisperConfig;

TEST(WhisperConfig, AbsentFieldsTakeTransformersDefaults) {
  const WhisperConfig c = parse_whisper_config(nlohmann::json::object(), "config.json");
  EXPECT_EQ(c.vocab_size, 51865);
  EXPECT_EQ(c.num_mel_bins, 80);
  EXPECT_EQ(c.d_model, 384);
  EXPECT_EQ(c.encoder_layers, 4);
  EXPECT_EQ(c.decoder_layers, 4);
  EXPECT_EQ(c.encoder_attention_heads, 6);
  EXPECT_EQ(c.decoder_attention_heads, 6);
  EXPECT_EQ(c.encoder_ffn_dim, 1536);
  EXPECT_EQ(c.decoder_ffn_dim, 1536);
  EXPECT_EQ(c.max_source_positions, 1500);
  EXPECT_EQ(c.max_target_positions, 448);
  EXPECT_EQ(c.decoder_start_token_id, 50257);
  EXPECT_EQ(c.eos_token_id, 50256);
  EXPECT_EQ(c.pad_token_id, 50256);
  EXPECT_FALSE(c.begin_suppress_tokens.has_value());  // resolved against the tokenizer later
  EXPECT_FALSE(c.suppress_tokens.has_value());
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.scale_embedding);
  EXPECT_EQ(c.median_filter_width, 7);
  EXPECT_EQ(c.encoder_head_dim(), 64);
}

struct Published {
  const char* variant;
  nlohmann::json config;
};

// Architecture fields as the Hub's config.json files state them (plus fields ifw ignores).
std::vector<Published> published() {
  const auto make = [](int vocab, int mels, int d, int enc, int dec, int heads, int ffn, int sot,
                       int eot) {
    return nlohmann::json{{"_name_or_path", "openai/whisper"},
                          {"activation_dropout", 0.0},
                          {"activation_function", "gelu"},
                          {"architectures", {"WhisperForConditionalGeneration"}},
                          {"attention_dropout", 0.0},
                          {"begin_suppress_tokens", {220, eot}},
                          {"bos_token_id", eot},
                          {"d_model", d},
                          {"decoder_attention_heads", heads},
                          {"decoder_ffn_dim", ffn},
                          {"decoder_layerdrop", 0.0},
                          {"decoder_layers", dec},
                          {"decoder_start_token_id", sot},
                          {"dropout", 0.0},
                          {"encoder_attention_heads", heads},
                          {"encoder_ffn_dim", ffn},
                          {"encoder_layerdrop", 0.0},
                          {"encoder_layers", enc},
                          {"eos_token_id", eot},
                          {"init_std", 0.02},
                          {"is_encoder_decoder", true},
                          {"max_length", 448},
                          {"max_source_positions", 1500},
                          {"max_target_positions", 448},
                          {"model_type", "whisper"},
                          {"num_hidden_layers", enc},
                          {"num_mel_bins", mels},
                          {"pad_token_id", eot},
                          {"scale_embedding", false},
                          {"torch_dtype", "float32"},
                          {"transformers_version", "4.27.0.dev0"},
                          {"use_cache", true},
                          {"vocab_size", vocab}};
  };
  return {
      {"tiny", make(51865, 80, 384, 4, 4, 6, 1536, 50258, 50257)},
      {"tiny.en", make(51864, 80, 384, 4, 4, 6, 1536, 50257, 50256)},
      {"base", make(51865, 80, 512, 6, 6, 8, 2048, 50258, 50257)},
      {"small.en", make(51864, 80, 768, 12, 12, 12, 3072, 50257, 50256)},
      {"medium", make(51865, 80, 1024, 24, 24, 16, 4096, 50258, 50257)},
      {"large or large-v2", make(51865, 80, 1280, 32, 32, 20, 5120, 50258, 50257)},
      {"large-v3", make(51866, 128, 1280, 32, 32, 20, 5120, 50258, 50257)},
      {"large-v3-turbo", make(51866, 128, 1280, 32, 4, 20, 5120, 50258, 50257)},
      {"distil-large-v3 (2 decoder layers)", make(51866, 128, 1280, 32, 2, 20, 5120, 50258, 50257)},
      {"distil-large-v2 (2 decoder layers)", make(51865, 80, 1280, 32, 2, 20, 5120, 50258, 50257)},
      {"distil-small.en (2 decoder layers)", make(51864, 80, 768, 12, 2, 12, 3072, 50257, 50256)},
      {"distil-medium.en (2 decoder layers)", make(51864, 80, 1024, 24, 2, 16, 4096, 50257, 50256)},
  };
}

TEST(WhisperConfig, EveryPublishedVariantParsesAndIsRecognised) {
  for (const Published& p : published()) {
    SCOPED_TRACE(p.variant);
    const WhisperConfig c = parse_whisper_config(p.config, "config.json");
    EXPECT_EQ(c.d_model, p.config["d_model"].get<int>());
    EXPECT_EQ(c.decoder_layers, p.config["decoder_layers"].get<int>());
    EXPECT_EQ(c.num_mel_bins, p.config["num_mel_bins"].get<int>());
    EXPECT_EQ(c.vocab_size, p.config["vocab_size"].get<int>());
    EXPECT_EQ(c.eos_token_id, p.config["eos_token_id"].get<int>());
    EXPECT_EQ(model::variant_name(c, c.vocab_size >= 51865), p.variant);
  }
  WhisperConfig odd = parse_whisper_config(
      {{"d_model", 128}, {"encoder_attention_heads", 2}, {"decoder_attention_heads", 2}},
      "config.json");
  EXPECT_EQ(model::variant_name(odd, true), "custom");
}

TEST(WhisperConfig, BadValuesNameFileFieldAndValue) {
  EXPECT_IFW_ERROR(parse_whisper_config({{"model_type", "bert"}}, "m/config.json"), "m/config.json",
                   "model_type is \"bert\", not a Whisper model");
  EXPECT_IFW_ERROR(parse_whisper_config({{"d_model", "wide"}}, "config.json"),
                   "field \"d_model\" must be an integer, got \"wide\"");
  EXPECT_IFW_ERROR(parse_whisper_config({{"encoder_layers", 0}}, "config.json"),
                   "field \"encoder_layers\" is 0, expected 1 to");
  EXPECT_IFW_ERROR(
      parse_whisper_config({{"d_model", 100}, {"encoder_attention_heads", 6}}, "config.json"),
      "\"encoder_attention_heads\" is 6, which does not divide d_model 100");
  EXPECT_IFW_ERROR(parse_whisper_config({{"activation_function", "relu"}}, "config.json"),
                   "activation_function \"relu\" is not supported");
  EXPECT_IFW_ERROR(parse_whisper_config({{"median_filter_width", 6}}, "config.json"),
                   "must be odd");
  EXPECT_IFW_ERROR(parse_whisper_config({{"vocab_size", 100}}, "config.json"),
                   "decoder_start_token_id", "outside the vocabulary of 100 tokens");
  EXPECT_IFW_ERROR(parse_whisper_config({{"suppress_tokens", {1, -3}}}, "config.json"), "holds -3");
  EXPECT_IFW_ERROR(parse_whisper_config(nlohmann::json::array(), "config.json"),
                   "expected a JSON object");
  EXPECT_IFW_ERROR(parse_whisper_config({{"tie_word_embeddings", "yes"}}, "config.json"),
                   "must be true or false");
}

TEST(GenerationConfig, ReadsWhispersDecodingFields) {
  const auto g =
      parse_generation_config({{"alignment_heads", {{1, 0}, {1, 1}}},
                               {"begin_suppress_tokens", {220, 50257}},
                               {"suppress_tokens", {1, 2, 7}},
                               {"lang_to_id", {{"<|en|>", 50259}, {"<|zh|>", 50260}}},
                               {"task_to_id", {{"transcribe", 50359}, {"translate", 50358}}},
                               {"no_timestamps_token_id", 50363},
                               {"is_multilingual", true},
                               {"max_initial_timestamp_index", 1},
                               {"return_timestamps", false},
                               {"forced_decoder_ids", {{1, nullptr}, {2, 50359}}}},
                              "generation_config.json");
  ASSERT_TRUE(g.alignment_heads);
  EXPECT_EQ(*g.alignment_heads, (std::vector<model::AlignmentHead>{{1, 0}, {1, 1}}));
  EXPECT_EQ(g.lang_to_id.at("<|zh|>"), 50260);
  EXPECT_EQ(g.task_to_id.at("translate"), 50358);
  EXPECT_EQ(g.no_timestamps_token_id, 50363);
  EXPECT_EQ(g.max_initial_timestamp_index, 1);
  EXPECT_EQ(g.is_multilingual, true);
  EXPECT_EQ(g.suppress_tokens, (std::vector<int>{1, 2, 7}));
}

TEST(GenerationConfig, DefaultsAndErrors) {
  const auto g = parse_generation_config(nlohmann::json::object(), "generation_config.json");
  EXPECT_FALSE(g.alignment_heads);
  EXPECT_FALSE(g.suppress_tokens);
  EXPECT_EQ(g.max_initial_timestamp_index, 50);
  EXPECT_EQ(g.max_length, 448);
  EXPECT_IFW_ERROR(parse_generation_config({{"alignment_heads", {{1}}}}, "g.json"), "g.json",
                   "alignment_heads", "item 0 is [1], expected [layer, head]");
  EXPECT_IFW_ERROR(parse_generation_config({{"alignment_heads", 3}}, "g.json"),
                   "list of [layer, head] pairs");
  EXPECT_IFW_ERROR(parse_generation_config({{"lang_to_id", {{"<|en|>", "x"}}}}, "g.json"),
                   "lang_to_id", "maps \"<|en|>\" to \"x\"");
  EXPECT_IFW_ERROR(parse_generation_config({{"no_timestamps_token_id", -1}}, "g.json"),
                   "is -1, not a token id");
}

TEST(PreprocessorConfig, WhispersFrontEnd) {
  const auto p =
      parse_preprocessor_config({{"feature_size", 128}, {"sampling_rate", 16000}, {"dither", 0.0}},
                                "preprocessor_config.json");
  EXPECT_EQ(p.feature_size, 128);
  EXPECT_EQ(p.n_fft, 400);
  EXPECT_EQ(p.hop_length, 160);
  EXPECT_EQ(p.nb_max_frames, 3000);
  EXPECT_EQ(parse_preprocessor_config(nlohmann::json::object(), "p.json").feature_size, 80);
}

TEST(PreprocessorConfig, AnythingElseIsUnsupported) {
  EXPECT_IFW_ERROR(parse_preprocessor_config({{"sampling_rate", 8000}}, "p.json"),
                   "p.json: sampling_rate is 8000; ifw supports Whisper's 16000 only");
  EXPECT_IFW_ERROR(parse_preprocessor_config({{"hop_length", 320}}, "p.json"), "hop_length is 320");
  EXPECT_IFW_ERROR(
      parse_preprocessor_config({{"feature_extractor_type", "Wav2Vec2FeatureExtractor"}}, "p.json"),
      "Wav2Vec2FeatureExtractor");
  EXPECT_IFW_ERROR(parse_preprocessor_config({{"feature_size", 0}}, "p.json"), "feature_size");
  EXPECT_IFW_ERROR(parse_preprocessor_config({{"padding_value", 1.0}}, "p.json"), "padding_value");
}

}  // namespace
}  // namespace ifw::test
