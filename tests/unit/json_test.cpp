#include "util/json.hpp"

#include <gtest/gtest.h>

#include <ifw/error.hpp>

#include "support/expect_error.hpp"
#include "support/golden.hpp"

namespace ifw::util {
namespace {

using test::contains;
std::string error_of(const std::function<void()>& f) {
  return test::error_message(f);
}

TEST(Json, RejectsDuplicateKeysNamingThem) {
  EXPECT_TRUE(contains(error_of([] { parse_json(R"({"a": 1, "a": 2})", "x.json"); }),
                       "x.json: key \"a\" appears twice"));
  EXPECT_TRUE(
      contains(error_of([] { parse_json(R"({"o": {"k": 1, "k": 1}})", "y.json"); }), "\"k\""));
  // The same key in different objects is fine.
  EXPECT_NO_THROW(parse_json(R"({"a": {"k": 1}, "b": {"k": 2}})", "z.json"));
}

TEST(Json, ReportsSyntaxErrorsWithSourceAndPosition) {
  const std::string message = error_of([] { parse_json("{\"a\": }", "config.json"); });
  EXPECT_TRUE(contains(message, "config.json: not valid JSON"));
  EXPECT_TRUE(contains(message, "column"));
  EXPECT_TRUE(
      contains(error_of([] { parse_json("", "empty.json"); }), "empty.json: not valid JSON"));
  EXPECT_TRUE(contains(error_of([] { parse_json("{\"a\": \"\xFF\"}", "bad.json"); }), "bad.json"));
}

TEST(Json, TypedFieldsNameTheFieldAndValue) {
  const auto j = parse_json(R"({"n": "12", "f": 1.5, "i": 3.0, "b": 1, "l": [1, "x"]})", "c.json");
  const JsonObject obj(j, "c.json");
  EXPECT_TRUE(contains(error_of([&] { (void)obj.get_int("n"); }),
                       "c.json: field \"n\" must be an integer, got \"12\""));
  EXPECT_TRUE(contains(error_of([&] { (void)obj.get_int("f"); }), "got 1.5"));
  EXPECT_EQ(obj.get_int("i"), 3);  // integral floats are integers
  EXPECT_TRUE(contains(error_of([&] { (void)obj.get_bool("b"); }), "must be true or false"));
  EXPECT_TRUE(
      contains(error_of([&] { (void)obj.get_int_list("l"); }), "item 1 must be an integer"));
  EXPECT_TRUE(
      contains(error_of([&] { (void)obj.require_int("missing"); }), "\"missing\" is missing"));
  EXPECT_TRUE(
      contains(error_of([&] { (void)obj.int_in_range("i", 0, 5, 9); }), "is 3, expected 5 to 9"));
  EXPECT_EQ(obj.get_int("absent", 7), 7);
}

TEST(Json, DeepNestingIsRejectedNotOverflowed) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_TRUE(contains(error_of([&] { parse_json(deep, "deep.json"); }),
                       "deep.json: not valid here: JSON nested deeper than 64 levels"));
  EXPECT_NO_THROW(parse_json(std::string(30, '[') + std::string(30, ']'), "ok.json"));
}

TEST(Json, ExcerptsOfContainersStayShort) {
  const auto nested = parse_json(std::string(40, '[') + std::string(40, ']'), "n.json");
  EXPECT_EQ(json_excerpt(nested), "a list of 1 item(s)");
  EXPECT_EQ(json_excerpt(parse_json("[1, 2]", "l.json")), "[1,2]");
}

TEST(Json, OnlyRegularFilesAreRead) {
  EXPECT_TRUE(
      contains(error_of([] { read_text_file("/dev/zero"); }), "/dev/zero: not a regular file"));
  EXPECT_TRUE(contains(error_of([] { read_text_file("/tmp"); }), "not a regular file"));
}

TEST(Json, NonObjectsAreRejected) {
  const auto j = parse_json("[1, 2]", "list.json");
  EXPECT_TRUE(
      contains(error_of([&] { JsonObject obj(j, "list.json"); }), "expected a JSON object"));
}

TEST(Json, MissingFileIsNotFound) {
  try {
    read_json_file("/nonexistent/ifw/config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_TRUE(contains(e.what(), "/nonexistent/ifw/config.json"));
  }
}

}  // namespace
}  // namespace ifw::util
