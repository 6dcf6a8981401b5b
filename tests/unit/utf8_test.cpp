#include "util/utf8.hpp"

#include <gtest/gtest.h>

namespace ifw::util {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_FALSE(find_invalid_utf8(""));
  EXPECT_FALSE(find_invalid_utf8("plain ascii"));
  EXPECT_FALSE(find_invalid_utf8("Straße 你好 👍🏽 \xF4\x8F\xBF\xBF"));  // up to U+10FFFF
}

TEST(Utf8, FindsTheFirstIllFormedByte) {
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);            // lone continuation byte
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);          // overlong '/'
  EXPECT_EQ(find_invalid_utf8("x\xE0\x80\xAF"), 1u);     // overlong three-byte form
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);      // UTF-16 surrogate
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("ok\xE4\xBD"), 2u);        // cut inside a character
  EXPECT_EQ(find_invalid_utf8("\xFF"), 0u);
}

TEST(Utf8, ReplacesEachMaximalIllFormedSubpartOnce) {
  // The same counts as Python's bytes.decode("utf-8", "replace").
  EXPECT_EQ(to_valid_utf8("a\xE4\xBD"), "a" + kReplacement);  // one cut character
  EXPECT_EQ(to_valid_utf8("\xF0\x80\x80"), kReplacement + kReplacement + kReplacement);
  EXPECT_EQ(to_valid_utf8("\xE4\xBDx"), kReplacement + "x");
  EXPECT_EQ(to_valid_utf8("\xFF\xFE"), kReplacement + kReplacement);
  EXPECT_EQ(to_valid_utf8("fine 你好"), "fine 你好");
}

TEST(Utf8, MeasuresAnUnfinishedTrailingCharacter) {
  EXPECT_EQ(incomplete_utf8_suffix(""), 0u);
  EXPECT_EQ(incomplete_utf8_suffix("abc"), 0u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xE4"), 1u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xE4\xBD"), 2u);
  EXPECT_EQ(incomplete_utf8_suffix("a\xE4\xBD\xA0"), 0u);  // 你 complete
  EXPECT_EQ(incomplete_utf8_suffix("\xF0\x9F\x91"), 3u);
  EXPECT_EQ(incomplete_utf8_suffix("a\x80"), 0u);     // invalid, not unfinished
  EXPECT_EQ(incomplete_utf8_suffix("\xE0\x80"), 0u);  // can never become valid
}

TEST(Utf8, QuotesTextForMessages) {
  EXPECT_EQ(quote_for_message("a\"b\n\x01"), R"("a\"b\n\x01")");
  EXPECT_EQ(quote_for_message("bad\xFF"), R"("bad\xff")");
  EXPECT_EQ(quote_for_message(std::string(100, 'x'), 4), "\"xxxx...\"");
}

TEST(Utf8, AppendsCodePoints) {
  std::string s;
  append_utf8(s, U'A');
  append_utf8(s, U'ß');
  append_utf8(s, U'你');
  append_utf8(s, U'👍');
  EXPECT_EQ(s, "Aß你👍");
}

}  // namespace
}  // namespace ifw::util
