// The tokenizer on a small synthetic vocabulary: edge cases of text, decoding, special tokens,
// and each way its files can be wrong.
#include "model/tokenizer/tokenizer.hpp"

#include <gtest/gtest.h>

#include "model/tokenizer/byte_level.hpp"
#include "model/tokenizer/pretokenizer.hpp"
#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using model::TokenId;
using model::Tokenizer;

const std::string kReplacement = "\xEF\xBF\xBD";

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_json(dir_ / "tokenizer.json", synthetic_tokenizer_json());
    tokenizer_ =
        std::make_unique<Tokenizer>(Tokenizer::from_tokenizer_json(dir_ / "tokenizer.json"));
  }
  // Writes tokenizer.json with `change` applied and loads it.
  Tokenizer load_patched(const std::function<void(nlohmann::json&)>& change) {
    auto j = synthetic_tokenizer_json();
    change(j);
    write_json(dir_ / "patched.json", j);
    return Tokenizer::from_tokenizer_json(dir_ / "patched.json");
  }
  std::vector<TokenId> bytes_of(std::string_view text) {
    std::vector<TokenId> ids;
    for (const char c : text)
      ids.push_back(static_cast<unsigned char>(c));
    return ids;
  }
  TempDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(TokenizerTest, EncodesWithMergesInRankOrder) {
  // " the" -> " t" + "he" -> " the"; "hello" -> h e l l o -> "he" "ll" o.
  EXPECT_EQ(tokenizer_->encode(" the"), (std::vector<TokenId>{258}));
  EXPECT_EQ(tokenizer_->encode("hello"), (std::vector<TokenId>{257, 259, 'o'}));
  EXPECT_EQ(tokenizer_->encode(" we"), (std::vector<TokenId>{260, 'e'}));
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode("hello, the world")), "hello, the world");
}

TEST_F(TokenizerTest, EmptyText) {
  EXPECT_TRUE(tokenizer_->encode("").empty());
  EXPECT_EQ(tokenizer_->decode(std::vector<TokenId>{}), "");
}

TEST_F(TokenizerTest, WhitespaceRunsSplitAsGpt2Does) {
  // "a   b": the run keeps all but its last space, which joins the next word.
  EXPECT_EQ(tokenizer_->encode("a   b"), (std::vector<TokenId>{'a', ' ', ' ', ' ', 'b'}));
  const model::PreTokenizer pre(std::string(model::kGpt2SplitPattern), false, "test");
  const auto pieces = pre.split("a   b\n\n  c  ");
  EXPECT_EQ(pieces, (std::vector<std::string_view>{"a", "  ", " b", "\n\n ", " c", "  "}));
  EXPECT_EQ(pre.split("don't 42x"), (std::vector<std::string_view>{"don", "'t", " 42", "x"}));
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(" \t\n  x  ")), " \t\n  x  ");
}

TEST_F(TokenizerTest, UnicodeLettersAndNumbersByClass) {
  const model::PreTokenizer pre(std::string(model::kGpt2SplitPattern), false, "test");
  EXPECT_EQ(pre.split("Straße 你好١٢٣!"),
            (std::vector<std::string_view>{"Straße", " 你好", "١٢٣", "!"}));
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode("Straße 你好 👍🏽")),
            "Straße 你好 👍🏽");
}

TEST_F(TokenizerTest, InvalidUtf8IsAClearError) {
  EXPECT_IFW_ERROR(tokenizer_->encode("ok\xFFno"), "not valid UTF-8 at byte 2 (0xff)");
  EXPECT_IFW_ERROR(tokenizer_->encode("cut \xE4\xBD"), "not valid UTF-8 at byte 4");
}

TEST_F(TokenizerTest, SpecialTokenStringsInTextStayText) {
  const auto ids = tokenizer_->encode("<|endoftext|>");
  for (const TokenId id : ids)
    EXPECT_FALSE(tokenizer_->is_special(id));
  EXPECT_GT(ids.size(), 1u);
  EXPECT_EQ(tokenizer_->decode(ids), "<|endoftext|>");
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode("say <|en|><|0.00|>")), "say <|en|><|0.00|>");
}

TEST_F(TokenizerTest, DecodingACutCharacterNeverYieldsGarbage) {
  const std::string ni = "你";  // E4 BD A0
  const std::vector<TokenId> whole = bytes_of(ni);
  EXPECT_EQ(tokenizer_->decode(whole), ni);
  EXPECT_EQ(tokenizer_->decode(std::vector<TokenId>{0xE4, 0xBD}), kReplacement);
  EXPECT_EQ(tokenizer_->decode(std::vector<TokenId>{'a', 0xBD, 'b'}), "a" + kReplacement + "b");
  EXPECT_EQ(tokenizer_->decode_bytes(std::vector<TokenId>{0xE4, 0xBD}), "\xE4\xBD");
}

TEST_F(TokenizerTest, TextStreamHoldsBackUnfinishedCharacters) {
  model::TextStream stream(*tokenizer_);
  EXPECT_EQ(stream.push('a'), "a");
  EXPECT_EQ(stream.push(0xE4), "");
  EXPECT_EQ(stream.push(0xBD), "");
  EXPECT_EQ(stream.push(0xA0), "你");
  EXPECT_EQ(stream.push(kSyntheticEndOfText), "");  // special tokens are skipped
  EXPECT_EQ(stream.push(0xF0), "");
  EXPECT_EQ(stream.finish(), kReplacement);  // the stream ended inside a character
  EXPECT_EQ(stream.finish(), "");
}

TEST_F(TokenizerTest, SpecialTokensByNameAndId) {
  const auto& sp = tokenizer_->specials();
  EXPECT_EQ(sp.end_of_text, kSyntheticEndOfText);
  EXPECT_EQ(sp.start_of_transcript, kSyntheticStartOfTranscript);
  EXPECT_EQ(sp.no_timestamps, kSyntheticNoTimestamps);
  EXPECT_EQ(sp.timestamp_begin, kSyntheticNoTimestamps + 1);
  EXPECT_EQ(sp.timestamp_count, 1501);
  EXPECT_EQ(sp.languages.size(), 99u);
  EXPECT_EQ(tokenizer_->special_token("<|fr|>"), tokenizer_->language_token("fr"));
  EXPECT_EQ(tokenizer_->language_code(*tokenizer_->language_token("ja")), "ja");
  EXPECT_FALSE(tokenizer_->language_token("yue"));  // the 100th language is large-v3's
  EXPECT_EQ(tokenizer_->timestamp_seconds(sp.timestamp_begin + 50), 1.0);
  EXPECT_FALSE(tokenizer_->timestamp_seconds(sp.no_timestamps));
  EXPECT_TRUE(tokenizer_->is_timestamp(sp.timestamp_begin + 1500));
  EXPECT_FALSE(tokenizer_->is_timestamp(sp.timestamp_begin + 1501));
  EXPECT_EQ(tokenizer_->token_bytes(sp.translate), "<|translate|>");
  const std::vector<TokenId> with_specials = {sp.start_of_transcript, 'h', 'i', sp.timestamp_begin};
  EXPECT_EQ(tokenizer_->decode(with_specials), "hi");
  EXPECT_EQ(tokenizer_->decode(with_specials, /*skip_special_tokens=*/false),
            "<|startoftranscript|>hi<|0.00|>");
  EXPECT_IFW_ERROR(tokenizer_->decode(std::vector<TokenId>{kSyntheticVocabSize}),
                   "token id 1869 is outside the vocabulary");
  EXPECT_IFW_ERROR(tokenizer_->decode(std::vector<TokenId>{-1}), "token id -1");
}

TEST_F(TokenizerTest, TimestampTokensAreAddedWhenTheFileStopsAtNoTimestamps) {
  const Tokenizer t = load_patched([](nlohmann::json& j) {
    auto& added = j["added_tokens"];
    added.erase(added.begin() + (kSyntheticNoTimestamps + 1 - 256 - 5), added.end());
  });
  EXPECT_EQ(t.size(), kSyntheticVocabSize);
  EXPECT_EQ(t.specials().timestamp_begin, kSyntheticNoTimestamps + 1);
  EXPECT_EQ(t.token_bytes(kSyntheticVocabSize - 1), "<|30.00|>");
}

TEST_F(TokenizerTest, MalformedTokenizerJson) {
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["merges"].push_back("zz qq"); }),
                   "patched.json", "merge 5", "not in the vocabulary");
  EXPECT_IFW_ERROR(
      load_patched([](auto& j) { j["model"]["merges"].push_back(j["model"]["merges"][0]); }),
      "appears twice");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["merges"] = nlohmann::json::array(); }),
                   "merge list is empty");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["merges"][0] = "onlyone"; }), "item 0",
                   "two tokens");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["vocab"]["a b"] = 300; }),
                   "token \"a b\" is not spelled in the byte-level alphabet");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["vocab"]["zz"] = 5; }),
                   "id 5 is used by more than one token");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["vocab"].erase("A"); }),
                   "no token has id 65");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["model"]["vocab"]["A"] = 5000;
                     j["model"]["vocab"]["Z"] = 65;
                   }),
                   "no token has id 90");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["type"] = "WordPiece"; }),
                   "model type \"WordPiece\" is not supported");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"].erase("vocab"); }),
                   "\"vocab\" is missing");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["normalizer"] = {{"type", "NFC"}};
                   }),
                   "normalizer");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["pre_tokenizer"] = {{"type", "Whitespace"}};
                   }),
                   "pre_tokenizer");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
                   }),
                   "pattern does not compile");
  EXPECT_IFW_ERROR(
      load_patched([](auto& j) {
        j["added_tokens"].push_back(
            {{"id", kSyntheticVocabSize}, {"content", "hello"}, {"special", false}});
      }),
      "added token \"hello\" (id 1869) is neither special nor a Whisper control token");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["pre_tokenizer"] = {{"type", "Sequence"}};
                   }),
                   "pre_tokenizer", "is not Whisper's");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     j["pre_tokenizer"]["pretokenizers"] = {1, 2};
                   }),
                   "is not Whisper's");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["decoder"] = "ByteLevel"; }), "decoder");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["model"]["vocab"]["zz"] = (1 << 24) - 1; }),
                   "no token has id 1869");
  EXPECT_IFW_ERROR(load_patched([](auto& j) { j["added_tokens"][0]["id"] = 10; }),
                   "added token \"<|endoftext|>\" has id 10, which the vocabulary gives to");
  EXPECT_IFW_ERROR(
      load_patched([](auto& j) { j["added_tokens"][1]["content"] = "<|startofsomething|>"; }),
      "<|startoftranscript|> is missing");
  EXPECT_IFW_ERROR(load_patched([](auto& j) {
                     std::swap(j["added_tokens"][200]["id"], j["added_tokens"][201]["id"]);
                   }),
                   "timestamp token", "expected");
  write_file(dir_ / "broken.json", "{\"model\": ");
  EXPECT_IFW_ERROR(Tokenizer::from_tokenizer_json(dir_ / "broken.json"),
                   "broken.json: not valid JSON");
  EXPECT_IFW_ERROR(Tokenizer::from_tokenizer_json(dir_ / "absent.json"),
                   "absent.json: no such file");
}

TEST_F(TokenizerTest, HubLayoutWithNonSpecialTimestampTokens) {
  // The Hub's tokenizer.json files: plain ByteLevel pre-tokenizer, no ignore_merges, and the
  // timestamp tokens added as non-special.
  const Tokenizer t = load_patched([](auto& j) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", true}};
    j["model"].erase("ignore_merges");
    for (auto& a : j["added_tokens"]) {
      if (a["content"].template get<std::string>().find('.') != std::string::npos)
        a["special"] = false;
    }
  });
  EXPECT_EQ(t.specials().timestamp_begin, kSyntheticNoTimestamps + 1);
  EXPECT_TRUE(t.is_special(kSyntheticNoTimestamps + 1));
  EXPECT_TRUE(t.is_timestamp(kSyntheticVocabSize - 1));
  EXPECT_EQ(t.encode("hello the"), tokenizer_->encode("hello the"));
}

TEST_F(TokenizerTest, WhiteSpaceIsUnicodesNotPcres) {
  // U+180E is a format character (not White_Space): tiktoken keeps it with the space before it.
  const model::PreTokenizer pre(std::string(model::kGpt2SplitPattern), false, "test");
  EXPECT_EQ(pre.split(" \u180Ex"), (std::vector<std::string_view>{" \u180E", "x"}));
  // Real white space still splits: NBSP, ideographic space, line separator.
  EXPECT_EQ(pre.split("a\u00A0\u3000b"),
            (std::vector<std::string_view>{"a", "\u00A0", "\u3000", "b"}));
  EXPECT_EQ(pre.split("a\u2028 b"), (std::vector<std::string_view>{"a", "\u2028", " b"}));
}

TEST_F(TokenizerTest, LoneByteLevelPreTokenizerUsesGpt2Pattern) {
  const Tokenizer t = load_patched([](auto& j) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  });
  EXPECT_EQ(t.encode("hello the"), tokenizer_->encode("hello the"));
  const Tokenizer prefixed = load_patched([](auto& j) {
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  });
  EXPECT_EQ(prefixed.encode("the"), (std::vector<TokenId>{258}));
}

TEST_F(TokenizerTest, VocabAndMergesFiles) {
  write_synthetic_tokenizer(dir_.path(), TokenizerFormat::kVocabAndMerges);
  const std::string merges = read_file(dir_ / "merges.txt");
  const Tokenizer t = Tokenizer::from_vocab_and_merges(dir_ / "vocab.json", dir_ / "merges.txt",
                                                       dir_ / "added_tokens.json");
  EXPECT_EQ(t.size(), kSyntheticVocabSize);
  EXPECT_EQ(t.encode("hello the"), tokenizer_->encode("hello the"));

  write_file(dir_ / "merges.txt", merges + "a b c\n");
  EXPECT_IFW_ERROR(Tokenizer::from_vocab_and_merges(dir_ / "vocab.json", dir_ / "merges.txt",
                                                    dir_ / "added_tokens.json"),
                   "merges.txt: line 7", "two tokens");
  write_file(dir_ / "merges.txt", merges);
  EXPECT_IFW_ERROR(
      Tokenizer::from_vocab_and_merges(dir_ / "vocab.json", dir_ / "merges.txt", std::nullopt),
      "<|endoftext|> is missing");
}

TEST_F(TokenizerTest, TiktokenFiles) {
  write_file(dir_ / "bad.tiktoken", "IQ== 0\nIg== 0\n");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99), "bad.tiktoken",
                   "line 2: rank 0 appears twice");
  write_file(dir_ / "bad.tiktoken", "IQ== 0\nIg== 2\n");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99), "rank 1 is missing");
  write_file(dir_ / "bad.tiktoken", "I*== 0\n");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99), "line 1", "is not base64");
  write_file(dir_ / "bad.tiktoken", "IQ==0\n");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99),
                   "expected \"<base64 token> <rank>\"");
  write_file(dir_ / "bad.tiktoken", "IQ== x\n");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99),
                   "rank \"x\" is not a non-negative integer");
  write_file(dir_ / "bad.tiktoken", "");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99), "holds no tokens");
  write_file(dir_ / "bad.tiktoken", "IQ== 0\n");  // "!" only: most bytes are not tokens
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 99), "byte 0x00 is not a token");
  EXPECT_IFW_ERROR(Tokenizer::from_tiktoken(dir_ / "bad.tiktoken", 101), "101 languages requested");
}

TEST_F(TokenizerTest, NonSpeechTokensFollowOpenaiRules) {
  const auto ids = tokenizer_->non_speech_tokens();
  // Single-byte symbols are their byte ids; " -" and " '" are two bytes, their first is kept.
  for (const char c : std::string("\"#()*+/:;<=>@[\\]^_`{|}~")) {
    EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(),
                                   static_cast<TokenId>(static_cast<unsigned char>(c))))
        << c;
  }
  EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(), static_cast<TokenId>(' ')));
  // Music signs are multi-byte: their first byte token is banned (0xE2 for U+2669..U+266F).
  EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(), 0xE2));
  EXPECT_FALSE(std::binary_search(ids.begin(), ids.end(), static_cast<TokenId>('a')));
}

TEST(ByteLevel, AlphabetRoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b)
    all.push_back(static_cast<char>(b));
  EXPECT_EQ(model::byte_level_decode(model::byte_level_encode(all)), all);
  EXPECT_EQ(model::byte_level_char(' '), "\xC4\xA0");  // 'Ġ'
  EXPECT_EQ(model::byte_level_char('A'), "A");
  EXPECT_FALSE(model::byte_level_decode(" "));  // a real space is not in the alphabet
  EXPECT_FALSE(model::byte_level_decode("\xFF"));
}

}  // namespace
}  // namespace ifw::test
