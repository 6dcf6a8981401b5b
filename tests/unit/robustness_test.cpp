// Damaged inputs, generated: every mutation of a valid file must either load or fail with a clear
// ifw::Error. Run under AddressSanitizer in CI, these are a small deterministic fuzzer.
#include <chrono>
#include <random>

#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "model/model_folder.hpp"
#include "model/safetensors.hpp"
#include "model/tokenizer/tokenizer.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

// Outcome of loading one damaged input: loaded, or failed with an ifw::Error. Anything else
// (another exception type, a crash) fails the test.
template <typename F>
bool loads(F&& load) {
  try {
    load();
    return true;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()), "");
    return false;
  }
}

TEST(Robustness, DamagedSafetensorsNeverCrash) {
  const auto tensors = synthetic_tensors(SyntheticArch{}, "F16");
  const std::string valid =
      build_safetensors({tensors.begin(), tensors.begin() + 6}, {{"format", "pt"}});
  const std::uint64_t header_len =
      static_cast<std::uint8_t>(valid[0]) |
      (static_cast<std::uint64_t>(static_cast<std::uint8_t>(valid[1])) << 8);
  TempDir dir;
  const auto path = dir / "m.safetensors";
  std::mt19937 rng(42);
  int loaded = 0, failed = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bytes = valid;
    switch (i % 4) {
      case 0:  // flip bytes in the header
        for (int k = 0; k < 3; ++k)
          bytes[8 + rng() % header_len] = static_cast<char>(rng());
        break;
      case 1:  // truncate anywhere
        bytes.resize(rng() % bytes.size());
        break;
      case 2:  // flip bytes of the length prefix
        bytes[rng() % 8] = static_cast<char>(rng());
        break;
      case 3: {  // replace a digit of the header (offsets and shapes) with another
        const auto pos = 8 + rng() % header_len;
        if (bytes[pos] >= '0' && bytes[pos] <= '9')
          bytes[pos] = static_cast<char>('0' + rng() % 10);
        break;
      }
    }
    write_file(path, bytes);
    (loads([&] { model::SafetensorsFile f(path); }) ? loaded : failed)++;
  }
  EXPECT_GT(failed, 300);  // most damage is detected...
  EXPECT_GT(loaded, 0);    // ...and some leaves a valid file (e.g. a digit replaced by itself)
}

TEST(Robustness, DamagedTokenizerJsonNeverCrashes) {
  const std::string valid = synthetic_tokenizer_json().dump();
  TempDir dir;
  const auto path = dir / "tokenizer.json";
  std::mt19937 rng(7);
  int failed = 0;
  for (int i = 0; i < 60; ++i) {
    std::string text = valid;
    if (i % 2 == 0) {
      text.resize(rng() % text.size());
    } else {
      for (int k = 0; k < 4; ++k)
        text[rng() % text.size()] = "{}[]\",:0a \\"[rng() % 12];
    }
    write_file(path, text);
    failed += !loads([&] { model::Tokenizer::from_tokenizer_json(path); });
  }
  EXPECT_GT(failed, 30);
}

TEST(Robustness, RandomTextAndIdsRoundTripOrFailCleanly) {
  TempDir dir;
  write_json(dir / "tokenizer.json", synthetic_tokenizer_json());
  const auto tokenizer = model::Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string text(rng() % 40, '\0');
    for (char& c : text)
      c = static_cast<char>(rng());
    try {
      const auto ids = tokenizer.encode(text);
      EXPECT_EQ(tokenizer.decode_bytes(ids), text);  // valid UTF-8 round-trips byte for byte
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos);
    }
    std::vector<model::TokenId> ids(rng() % 20);
    for (auto& id : ids)
      id = static_cast<model::TokenId>(rng() % (kSyntheticVocabSize + 10)) - 5;
    loads([&] { (void)tokenizer.decode(ids); });
  }
}

TEST(Robustness, HugeInputsStayLinear) {
  TempDir dir;
  write_json(dir / "tokenizer.json", synthetic_tokenizer_json());
  const auto tokenizer = model::Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  // One 1 MB "word", a 1 MB whitespace run and 1 MB of alternating classes.
  std::string alternating;
  for (int i = 0; i < 250000; ++i)
    alternating += "a1 .";
  std::string spaces(1 << 20, ' ');
  spaces.push_back('x');
  for (const std::string& text : {std::string(1 << 20, 'l'), spaces, alternating}) {
    const auto ids = tokenizer.encode(text);
    EXPECT_EQ(tokenizer.decode(ids), text);
  }
}

}  // namespace
}  // namespace ifw::test
