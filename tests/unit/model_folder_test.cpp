// A whole model folder: every file read and cross-checked; each inconsistency a clear error.
#include "model/model_folder.hpp"

#include <gtest/gtest.h>

#include <ifw/model_info.hpp>

#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

using model::ModelFolder;

class ModelFolderTest : public ::testing::Test {
 protected:
  void SetUp() override { write_synthetic_model(dir_.path()); }
  // Rewrites one JSON file of the folder with `change` applied.
  void patch(const std::string& file, const nlohmann::json& change) {
    auto j = util::read_json_file(dir_ / file);
    j.merge_patch(change);
    write_json(dir_ / file, j);
  }
  TempDir dir_;
};

TEST_F(ModelFolderTest, LoadsEveryFile) {
  const ModelFolder folder(dir_.path());
  EXPECT_EQ(folder.config().d_model, 8);
  EXPECT_EQ(folder.tokenizer().size(), kSyntheticVocabSize);
  EXPECT_EQ(folder.preprocessor().feature_size, 80);
  EXPECT_EQ(folder.generation().alignment_heads->size(), 2u);
  EXPECT_EQ(folder.generation().suppress_tokens, (std::vector<int>{1, 2, 7}));
  EXPECT_EQ(folder.generation().no_timestamps_token_id, kSyntheticNoTimestamps);
  EXPECT_FALSE(folder.alignment_heads_default());
}

TEST(ModelFolderFormats, EveryTokenizerFormatDtypeAndSharding) {
  for (const auto format : {TokenizerFormat::kTokenizerJson, TokenizerFormat::kVocabAndMerges,
                            TokenizerFormat::kTiktoken}) {
    for (const char* dtype : {"F32", "F16", "BF16"}) {
      for (const int shards : {1, 3}) {
        SCOPED_TRACE(testing::Message() << "tokenizer " << static_cast<int>(format) << " " << dtype
                                        << " shards " << shards);
        TempDir dir;
        SyntheticModelOptions options;
        options.tokenizer = format;
        options.dtype = dtype;
        options.shards = shards;
        write_synthetic_model(dir.path(), options);
        const ModelFolder folder(dir.path());
        EXPECT_EQ(folder.tokenizer().size(), kSyntheticVocabSize);
        EXPECT_EQ(folder.weights().files().size(), static_cast<std::size_t>(shards));
        EXPECT_EQ(folder.tokenizer().encode(" the hello"), folder.tokenizer().encode(" the hello"));
        const model::TokenId the = 258;  // " t" + "he"
        EXPECT_EQ(folder.tokenizer().encode(" the").front(), the);
      }
    }
  }
}

TEST(ModelFolderFormats, UntiedProjection) {
  TempDir dir;
  SyntheticModelOptions options;
  options.tie_word_embeddings = false;
  write_synthetic_model(dir.path(), options);
  EXPECT_NE(ModelFolder(dir.path()).checkpoint().find("proj_out.weight"), nullptr);
}

TEST_F(ModelFolderTest, MissingOptionalFilesTakeWhispersDefaults) {
  std::filesystem::remove(dir_ / "generation_config.json");
  std::filesystem::remove(dir_ / "preprocessor_config.json");
  const ModelFolder folder(dir_.path());
  EXPECT_TRUE(folder.alignment_heads_default());
  // Every head of the last half of the decoder layers (2 layers of 2 heads -> layer 1).
  EXPECT_EQ(*folder.generation().alignment_heads,
            (std::vector<model::AlignmentHead>{{1, 0}, {1, 1}}));
  EXPECT_TRUE(folder.suppress_tokens_default());
  EXPECT_EQ(*folder.generation().suppress_tokens, folder.tokenizer().non_speech_tokens());
  EXPECT_EQ(folder.generation().lang_to_id.size(), 99u);
  EXPECT_EQ(folder.generation().task_to_id.at("transcribe"), kSyntheticStartOfTranscript + 101);
  EXPECT_EQ(folder.preprocessor().feature_size, 80);
  // openai/whisper's begin-suppress rule: the " " token and end of text.
  EXPECT_EQ(*folder.generation().begin_suppress_tokens,
            (std::vector<int>{' ', kSyntheticEndOfText}));
}

TEST_F(ModelFolderTest, NotAFolder) {
  EXPECT_IFW_ERROR(ModelFolder(dir_ / "absent"), "absent: no such model folder");
  EXPECT_IFW_ERROR(ModelFolder(dir_ / "config.json"), "is a file; expected a model folder");
  std::filesystem::remove(dir_ / "config.json");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "not a Whisper model folder: config.json is missing");
}

TEST_F(ModelFolderTest, BadConfigJson) {
  write_file(dir_ / "config.json", "{\"d_model\": 8,");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "config.json: not valid JSON");
}

TEST_F(ModelFolderTest, ConfigAndWeightsDisagree) {
  patch("config.json", {{"d_model", 16}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), dir_.path().string(), "config and weights disagree",
                   "model.encoder.conv1.weight is [8, 80, 3] in model.safetensors, config.json "
                   "implies [16, 80, 3]");
}

TEST_F(ModelFolderTest, PreprocessorDisagreesWithConfig) {
  patch("preprocessor_config.json", {{"feature_size", 128}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "preprocessor_config.json: feature_size is 128",
                   "num_mel_bins is 80");
}

TEST_F(ModelFolderTest, TokenizerDisagreesWithConfig) {
  patch("config.json", {{"vocab_size", kSyntheticVocabSize + 1}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "tokenizer.json has 1869 tokens",
                   "vocab_size is 1870");
  patch("config.json", {{"vocab_size", kSyntheticVocabSize}, {"decoder_start_token_id", 5}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "decoder_start_token_id is 5",
                   "<|startoftranscript|> = 262");
  patch("config.json",
        {{"decoder_start_token_id", kSyntheticStartOfTranscript}, {"eos_token_id", 7}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "eos_token_id is 7");
}

TEST_F(ModelFolderTest, GenerationConfigDisagreesWithTokenizer) {
  patch("generation_config.json", {{"lang_to_id", {{"<|en|>", 300}}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "generation_config.json",
                   "lang_to_id maps <|en|> to 300", "has it at 263");
  write_synthetic_model(dir_.path());
  patch("generation_config.json", {{"lang_to_id", {{"<|xx|>", 300}}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "lang_to_id names <|xx|>");
  write_synthetic_model(dir_.path());
  patch("generation_config.json", {{"no_timestamps_token_id", 400}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "no_timestamps_token_id is 400",
                   "<|notimestamps|> = 367");
  write_synthetic_model(dir_.path());
  patch("generation_config.json", {{"task_to_id", {{"summarize", 364}}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "unknown task \"summarize\"");
  write_synthetic_model(dir_.path());
  patch("generation_config.json", {{"is_multilingual", true}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "is_multilingual is true", "English-only");
  write_synthetic_model(dir_.path());
  patch("generation_config.json", {{"suppress_tokens", {1, 99999}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "suppress_tokens holds 99999");
}

TEST_F(ModelFolderTest, EndOfTextMayBeListed) {
  patch("generation_config.json", {{"eos_token_id", {kSyntheticEndOfText}}});
  EXPECT_EQ(ModelFolder(dir_.path()).generation().eos_token_ids,
            (std::vector<int>{kSyntheticEndOfText}));
  patch("generation_config.json", {{"eos_token_id", {5}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "eos_token_id does not include",
                   "<|endoftext|> = 261");
  patch("generation_config.json", {{"eos_token_id", nlohmann::json::array()}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "eos_token_id\" is an empty list");
}

TEST_F(ModelFolderTest, ConfigThatIsNotAFile) {
  std::filesystem::remove(dir_ / "config.json");
  std::filesystem::create_symlink("/dev/zero", dir_ / "config.json");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "config.json: not a regular file");
}

TEST_F(ModelFolderTest, AlignmentHeadOutOfRange) {
  patch("generation_config.json", {{"alignment_heads", {{2, 0}}}});
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "alignment head [2, 0] does not exist",
                   "2 layers of 2 heads");
}

TEST_F(ModelFolderTest, TokenizerFilesMissingOrInconsistent) {
  std::filesystem::remove(dir_ / "tokenizer.json");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "no tokenizer: expected tokenizer.json");
  write_file(dir_ / "vocab.json", "{}");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "vocab.json is present but merges.txt is missing");
  std::filesystem::remove(dir_ / "vocab.json");
  write_file(dir_ / "a.tiktoken", "IQ== 0\n");
  write_file(dir_ / "b.tiktoken", "IQ== 0\n");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "2 .tiktoken files", "ambiguous");
  std::filesystem::remove(dir_ / "b.tiktoken");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "a.tiktoken: has 1 tokens",
                   "cannot make config.json's vocab_size 1869");
}

TEST_F(ModelFolderTest, NoWeights) {
  std::filesystem::remove(dir_ / "model.safetensors");
  write_file(dir_ / "pytorch_model.bin", "x");
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "no weights", "pytorch_model.bin");
}

TEST_F(ModelFolderTest, TruncatedWeights) {
  const auto bytes = read_file(dir_ / "model.safetensors");
  write_file(dir_ / "model.safetensors", bytes.substr(0, bytes.size() / 2));
  EXPECT_IFW_ERROR(ModelFolder(dir_.path()), "model.safetensors", "truncated");
}

TEST_F(ModelFolderTest, InspectSummarises) {
  const ModelInfo info = inspect_model(dir_.path());
  EXPECT_EQ(info.variant, "custom");
  EXPECT_EQ(info.d_model, 8);
  EXPECT_EQ(info.dtype, "float32");
  EXPECT_FALSE(info.multilingual);
  EXPECT_EQ(info.languages.size(), 99u);
  EXPECT_EQ(info.alignment_heads, (std::vector<std::pair<int, int>>{{1, 0}, {1, 1}}));
  const auto text = format_model_info(info);
  EXPECT_NE(text.find("English-only"), std::string::npos);
  const auto json = nlohmann::json::parse(model_info_json(info));
  EXPECT_EQ(json["architecture"]["d_model"], 8);
  EXPECT_EQ(json["vocab_size"], kSyntheticVocabSize);
  EXPECT_EQ(json["parameter_count"], info.parameter_count);
}

}  // namespace
}  // namespace ifw::test
