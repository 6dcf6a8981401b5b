// Weights against the architecture their config describes.
#include "model/checkpoint.hpp"

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

class CheckpointTest : public ::testing::Test {
 protected:
  model::WhisperConfig config(const nlohmann::json& changes = nlohmann::json::object()) {
    auto c = synthetic_config();
    c.update(changes);
    return model::parse_whisper_config(c, "config.json");
  }
  model::WeightFiles weights(const std::vector<SafetensorsEntry>& tensors) {
    write_file(dir_ / "model.safetensors", build_safetensors(tensors));
    return model::WeightFiles::open_file(dir_ / "model.safetensors");
  }
  std::vector<SafetensorsEntry> tensors(const std::string& dtype = "F32") {
    return synthetic_tensors(SyntheticArch{}, dtype);
  }
  TempDir dir_;
};

TEST_F(CheckpointTest, CompleteWeightsValidate) {
  for (const char* dtype : {"F32", "F16", "BF16"}) {
    const auto w = weights(tensors(dtype));
    const model::Checkpoint ckpt(w, config());
    EXPECT_EQ(backend::dtype_name(ckpt.dominant_dtype()), dtype == std::string("F32") ? "float32"
                                                          : dtype == std::string("F16")
                                                              ? "float16"
                                                              : "bfloat16");
    EXPECT_EQ(ckpt.find("proj_out.weight"), nullptr);  // tied to the token embedding
    EXPECT_EQ(ckpt.at("model.encoder.conv1.weight").shape, (std::vector<std::int64_t>{8, 80, 3}));
    EXPECT_EQ(ckpt.name_prefix(), "model.");
  }
}

TEST_F(CheckpointTest, ExpectedTensorsFollowTheArchitecture) {
  const auto expected = model::expected_tensors(config());
  // conv 4 + positions 1 + 1 encoder layer x 15 + final norm 2 + decoder embeddings 2
  // + 2 decoder layers x 24 + final norm 2 + proj_out 1
  EXPECT_EQ(expected.size(), 4u + 1 + 15 + 2 + 2 + 48 + 2 + 1);
  EXPECT_EQ(expected.size(), tensors().size() + 1);
}

TEST_F(CheckpointTest, StoredProjectionIsAcceptedAndRequiredWhenUntied) {
  auto with_proj = synthetic_tensors(SyntheticArch{}, "F32", /*with_proj_out=*/true);
  const auto w = weights(with_proj);
  const model::Checkpoint ckpt(w, config());
  EXPECT_NE(ckpt.find("proj_out.weight"), nullptr);

  const auto w2 = weights(tensors());
  EXPECT_IFW_ERROR(model::Checkpoint(w2, config({{"tie_word_embeddings", false}})),
                   "1 tensor(s) missing: proj_out.weight [1869, 8]");
}

TEST_F(CheckpointTest, MissingTensor) {
  auto t = tensors();
  t.erase(t.begin() + 7);
  const std::string name = tensors()[7].name;
  const auto w = weights(t);
  EXPECT_IFW_ERROR(model::Checkpoint(w, config()), "1 tensor(s) missing", name);
}

TEST_F(CheckpointTest, MisshapedTensorNamesFileAndBothShapes) {
  auto t = tensors();
  t[0].shape = {8, 40, 6};  // same byte count, wrong shape
  const auto w = weights(t);
  EXPECT_IFW_ERROR(model::Checkpoint(w, config()), "config and weights disagree",
                   "model.encoder.conv1.weight is [8, 40, 6] in model.safetensors, config.json "
                   "implies [8, 80, 3]");
}

TEST_F(CheckpointTest, ConfigAndWeightsDisagree) {
  const auto w = weights(tensors());
  EXPECT_IFW_ERROR(model::Checkpoint(w, config({{"num_mel_bins", 128}})),
                   "model.encoder.conv1.weight is [8, 80, 3]", "implies [8, 128, 3]");
  EXPECT_IFW_ERROR(model::Checkpoint(w, config({{"decoder_layers", 3}})), "missing",
                   "model.decoder.layers.2.");
  EXPECT_IFW_ERROR(model::Checkpoint(w, config({{"decoder_layers", 1}})), "unexpected tensor(s)",
                   "model.decoder.layers.1.");
  EXPECT_IFW_ERROR(model::Checkpoint(w, config({{"encoder_ffn_dim", 32}})),
                   "model.encoder.layers.0.fc1.weight");
}

TEST_F(CheckpointTest, UnexpectedTensorIsNotIgnored) {
  auto t = tensors();
  t.push_back({"model.encoder.layers.0.self_attn.k_proj.bias", "F32", {8}, std::string(32, '\0')});
  const auto w = weights(t);
  EXPECT_IFW_ERROR(model::Checkpoint(w, config()), "1 unexpected tensor(s)",
                   "model.encoder.layers.0.self_attn.k_proj.bias [8] in model.safetensors");
}

TEST_F(CheckpointTest, UnsupportedDtype) {
  auto t = tensors();
  t[1].dtype = "I32";  // conv1.bias, same byte count
  const auto w = weights(t);
  EXPECT_IFW_ERROR(model::Checkpoint(w, config()), "unsupported dtype",
                   "model.encoder.conv1.bias is I32");
}

TEST_F(CheckpointTest, MixedDtypesReportTheDominantOne) {
  auto t = tensors("F16");
  const auto f32 = tensors("F32");
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i].name.find("layer_norm") != std::string::npos) t[i] = f32[i];
  }
  const auto w = weights(t);
  EXPECT_EQ(model::Checkpoint(w, config()).dominant_dtype(), backend::DType::kF16);
}

TEST_F(CheckpointTest, WeightsSavedWithoutTheModelPrefix) {
  auto t = tensors();
  for (auto& e : t)
    e.name = e.name.substr(6);  // "model.encoder..." -> "encoder..."
  const auto w = weights(t);
  const model::Checkpoint ckpt(w, config());
  EXPECT_EQ(ckpt.name_prefix(), "");
  EXPECT_EQ(ckpt.at("model.decoder.embed_tokens.weight").name, "decoder.embed_tokens.weight");
}

}  // namespace
}  // namespace ifw::test
