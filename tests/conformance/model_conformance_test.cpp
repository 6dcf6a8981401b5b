// Every model folder of the reference corpus loads, validates and holds exactly the reference's
// bytes. Models are discovered at run time: adding one to the corpus needs no code change.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ifw/model_info.hpp>

#include "model/checkpoint.hpp"
#include "model/model_folder.hpp"
#include "support/golden.hpp"
#include "support/sha256.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

class GoldenModel : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == kNoCorpus) {
      GTEST_SKIP() << "reference corpus not found: set IFW_GOLDEN_DIR or check out ../shared "
                      "beside the project";
    }
    model_dir_ = *golden_dir() / "models" / GetParam();
    reference_dir_ = *golden_dir() / "reference" / GetParam();
  }
  std::filesystem::path model_dir_;
  std::filesystem::path reference_dir_;
};

TEST_P(GoldenModel, LoadsAndValidates) {
  const model::ModelFolder folder(model_dir_);
  const auto config = util::read_json_file(model_dir_ / "config.json");
  EXPECT_EQ(folder.config().vocab_size, config.at("vocab_size").get<int>());
  EXPECT_EQ(folder.tokenizer().size(), folder.config().vocab_size);
  EXPECT_EQ(folder.preprocessor().feature_size, folder.config().num_mel_bins);
  // The published alignment heads, in order.
  const auto generation = util::read_json_file(model_dir_ / "generation_config.json");
  ASSERT_TRUE(folder.generation().alignment_heads.has_value());
  ASSERT_EQ(folder.generation().alignment_heads->size(), generation.at("alignment_heads").size());
  for (std::size_t i = 0; i < generation.at("alignment_heads").size(); ++i) {
    EXPECT_EQ((*folder.generation().alignment_heads)[i].layer,
              generation["alignment_heads"][i][0].get<int>());
    EXPECT_EQ((*folder.generation().alignment_heads)[i].head,
              generation["alignment_heads"][i][1].get<int>());
  }
  EXPECT_FALSE(folder.alignment_heads_default());
}

TEST_P(GoldenModel, TensorBytesMatchTheReference) {
  const auto golden_file = reference_dir_ / "golden.json";
  if (!std::filesystem::exists(golden_file)) {
    GTEST_SKIP() << "no reference outputs for " << GetParam() << " at " << golden_file;
  }
  const auto golden = util::read_json_file(golden_file);
  const model::ModelFolder folder(model_dir_);
  // The reference hashes every tensor's bytes in the architecture's canonical order.
  std::vector<std::span<const std::byte>> parts;
  for (const model::ExpectedTensor& t : model::expected_tensors(folder.config())) {
    if (const model::TensorView* v = folder.checkpoint().find(t.name)) parts.push_back(v->data);
  }
  EXPECT_EQ(sha256_hex(parts), golden.at("sha256_tensors").get<std::string>());
}

TEST_P(GoldenModel, InspectSummarisesTheFolder) {
  const ModelInfo info = inspect_model(model_dir_);
  const auto config = util::read_json_file(model_dir_ / "config.json");
  EXPECT_EQ(info.d_model, config.at("d_model").get<int>());
  EXPECT_EQ(info.n_mels, config.at("num_mel_bins").get<int>());
  EXPECT_EQ(info.decoder_layers, config.at("decoder_layers").get<int>());
  EXPECT_EQ(info.vocab_size, config.at("vocab_size").get<int>());
  EXPECT_TRUE(info.multilingual);
  EXPECT_EQ(info.languages.size(), info.vocab_size == 51866 ? 100u : 99u);
  EXPECT_GT(info.parameter_count, 0);
  const auto json = nlohmann::json::parse(model_info_json(info));
  EXPECT_EQ(json.at("vocab_size").get<int>(), info.vocab_size);
}

INSTANTIATE_TEST_SUITE_P(Corpus, GoldenModel,
                         ::testing::ValuesIn(corpus_params(golden_model_names())),
                         [](const auto& param_info) { return test_name(param_info.param); });

}  // namespace
}  // namespace ifw::test
