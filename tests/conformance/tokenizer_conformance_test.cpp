// Every tokenizer case of the reference corpus, both directions, for all three vocabularies,
// from tokenizer.json (each model folder of the corpus) and from the .tiktoken files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ifw/error.hpp>

#include "model/tokenizer/tokenizer.hpp"
#include "support/golden.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

struct Source {
  std::string vocabulary;  // key in tokenizer_cases.json
  std::string kind;        // "tiktoken" or "tokenizer_json"
  std::filesystem::path file;
  int languages = 0;  // for tiktoken
  std::string label;
};

// Names the source in test output instead of dumping its bytes.
void PrintTo(const Source& source, std::ostream* os) {
  *os << source.label;
}

std::vector<Source> sources() {
  std::vector<Source> out;
  const auto data = whisper_data_dir();
  if (data) {
    out.push_back({"multilingual-99", "tiktoken", *data / "multilingual.tiktoken", 99,
                   "tiktoken_multilingual99"});
    out.push_back({"multilingual-100", "tiktoken", *data / "multilingual.tiktoken", 100,
                   "tiktoken_multilingual100"});
    out.push_back({"gpt2", "tiktoken", *data / "gpt2.tiktoken", 99, "tiktoken_gpt2"});
  }
  for (const std::string& model : golden_model_names()) {
    const auto dir = *golden_dir() / "models" / model;
    if (!std::filesystem::exists(dir / "tokenizer.json")) continue;
    const auto config = util::read_json_file(dir / "config.json");
    const int n_vocab = config.value("vocab_size", 0);
    const std::string vocabulary = n_vocab == 51865   ? "multilingual-99"
                                   : n_vocab == 51866 ? "multilingual-100"
                                                      : "gpt2";
    out.push_back({vocabulary, "tokenizer_json", dir / "tokenizer.json", 0,
                   test_name("tokenizer_json_" + model)});
  }
  if (out.empty()) out.push_back({"", "none", {}, 0, "no_reference_corpus"});
  return out;
}

class TokenizerConformance : public ::testing::TestWithParam<Source> {
 protected:
  void SetUp() override {
    if (GetParam().kind == "none") {
      GTEST_SKIP() << "reference corpus not found: set IFW_GOLDEN_DIR or check out ../shared "
                      "beside the project";
    }
    const auto all = util::read_json_file(*golden_dir() / "reference" / "tokenizer_cases.json");
    cases_ = all.at(GetParam().vocabulary);
    const Source& s = GetParam();
    tokenizer_ = std::make_unique<model::Tokenizer>(
        s.kind == "tiktoken" ? model::Tokenizer::from_tiktoken(s.file, s.languages)
                             : model::Tokenizer::from_tokenizer_json(s.file));
  }
  nlohmann::json cases_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
};

TEST_P(TokenizerConformance, VocabularySize) {
  EXPECT_EQ(tokenizer_->size(), cases_.at("n_vocab").get<int>());
}

TEST_P(TokenizerConformance, EncodesEveryCaseExactly) {
  int checked = 0;
  for (const auto& c : cases_.at("cases")) {
    const auto text = c.at("text").get<std::string>();
    const auto expected = c.at("ids").get<std::vector<model::TokenId>>();
    EXPECT_EQ(tokenizer_->encode(text), expected) << "text: " << text;
    ++checked;
  }
  EXPECT_EQ(checked, 40);
}

TEST_P(TokenizerConformance, DecodesEveryCaseExactly) {
  for (const auto& c : cases_.at("cases")) {
    const auto ids = c.at("ids").get<std::vector<model::TokenId>>();
    EXPECT_EQ(tokenizer_->decode(ids), c.at("text").get<std::string>());
  }
}

TEST_P(TokenizerConformance, SpecialTokensByNameAndId) {
  const auto& specials = cases_.at("special_tokens");
  for (const auto& [name, id_json] : specials.items()) {
    const auto id = id_json.get<model::TokenId>();
    EXPECT_EQ(tokenizer_->special_token(name), std::optional<model::TokenId>(id)) << name;
    EXPECT_TRUE(tokenizer_->is_special(id)) << name;
    EXPECT_EQ(tokenizer_->token_bytes(id), name);
  }
  // Every special token the vocabulary has is in the reference's list.
  int special_count = 0;
  for (model::TokenId id = 0; id < tokenizer_->size(); ++id)
    special_count += tokenizer_->is_special(id);
  EXPECT_EQ(special_count, static_cast<int>(specials.size()));

  const auto& sp = tokenizer_->specials();
  EXPECT_EQ(sp.end_of_text, specials.at("<|endoftext|>").get<int>());
  EXPECT_EQ(sp.start_of_transcript, specials.at("<|startoftranscript|>").get<int>());
  EXPECT_EQ(sp.translate, specials.at("<|translate|>").get<int>());
  EXPECT_EQ(sp.transcribe, specials.at("<|transcribe|>").get<int>());
  EXPECT_EQ(sp.no_timestamps, specials.at("<|notimestamps|>").get<int>());
  EXPECT_EQ(sp.timestamp_begin, specials.at("<|0.00|>").get<int>());
  EXPECT_EQ(sp.timestamp_count, 1501);
  EXPECT_EQ(tokenizer_->timestamp_seconds(specials.at("<|30.00|>").get<int>()), 30.0);
  EXPECT_EQ(tokenizer_->language_token("en"), specials.at("<|en|>").get<int>());
  EXPECT_EQ(sp.languages.size(), cases_.at("n_vocab").get<int>() == 51866 ? 100u : 99u);
}

TEST_P(TokenizerConformance, NonSpeechTokensAreWhispers) {
  EXPECT_EQ(tokenizer_->non_speech_tokens(),
            cases_.at("non_speech_tokens").get<std::vector<model::TokenId>>());
}

TEST_P(TokenizerConformance, EdgeCasesOnTheRealVocabulary) {
  EXPECT_TRUE(tokenizer_->encode("").empty());
  for (const std::string& text : std::vector<std::string>{
           "   ", "a  \n\n  b  ", "\t\t\n\r\n", "<|endoftext|>",
           "<|startoftranscript|><|en|><|0.00|>", " <|notimestamps|> x", std::string(3000, 'x'),
           std::string(3000, ' '), "e\xCC\x81 \xE2\x80\x8B"}) {
    const auto ids = tokenizer_->encode(text);
    for (const model::TokenId id : ids)
      ASSERT_FALSE(tokenizer_->is_special(id)) << text;
    EXPECT_EQ(tokenizer_->decode(ids), text);
  }
  EXPECT_THROW(tokenizer_->encode("caf\xE9"), Error);  // Latin-1, not UTF-8
  // U+180E is not white space for tiktoken (Unicode's White_Space); ids from tiktoken 0.x.
  if (tokenizer_->multilingual()) {
    EXPECT_EQ(tokenizer_->encode(" \u180Ex"), (std::vector<model::TokenId>{21879, 254, 236, 87}));
  }
  // "，" (U+FF0C) is three byte tokens in every vocabulary: a cut decodes to one U+FFFD, never to
  // a raw byte, and a stream releases the character only once it is whole.
  const auto ids = tokenizer_->encode("，");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(tokenizer_->decode(std::vector<model::TokenId>{ids[0], ids[1]}), "\xEF\xBF\xBD");
  model::TextStream stream(*tokenizer_);
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "，");
}

INSTANTIATE_TEST_SUITE_P(Corpus, TokenizerConformance, ::testing::ValuesIn(sources()),
                         [](const auto& param_info) { return param_info.param.label; });

}  // namespace
}  // namespace ifw::test
