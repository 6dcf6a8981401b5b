// The stored JSON form of transcripts: exact round trips and errors that name the field.
#include "formats/transcript_json.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ifw/error.hpp>

#include "support/expect_error.hpp"

namespace ifw::formats {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Doubles compared by their bits: 0.0 == -0.0 and NaN != NaN would hide what matters here.
void expect_same_bits(double a, double b, const std::string& what) {
  EXPECT_EQ(std::bit_cast<std::uint64_t>(a), std::bit_cast<std::uint64_t>(b))
      << what << ": " << a << " vs " << b;
}

void expect_same(const Segment& a, const Segment& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.seek, b.seek);
  expect_same_bits(a.start, b.start, "start");
  expect_same_bits(a.end, b.end, "end");
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.tokens, b.tokens);
  expect_same_bits(a.temperature, b.temperature, "temperature");
  expect_same_bits(a.avg_logprob, b.avg_logprob, "avg_logprob");
  expect_same_bits(a.compression_ratio, b.compression_ratio, "compression_ratio");
  expect_same_bits(a.no_speech_prob, b.no_speech_prob, "no_speech_prob");
  ASSERT_EQ(a.words.size(), b.words.size());
  for (std::size_t i = 0; i < a.words.size(); ++i) {
    EXPECT_EQ(a.words[i].text, b.words[i].text);
    expect_same_bits(a.words[i].start, b.words[i].start, "word start");
    expect_same_bits(a.words[i].end, b.words[i].end, "word end");
  }
}

void expect_same(const Transcript& a, const Transcript& b) {
  EXPECT_EQ(a.task, b.task);
  EXPECT_EQ(a.language, b.language);
  expect_same_bits(a.duration, b.duration, "duration");
  EXPECT_EQ(a.partial, b.partial);
  ASSERT_EQ(a.segments.size(), b.segments.size());
  for (std::size_t i = 0; i < a.segments.size(); ++i) {
    SCOPED_TRACE("segment " + std::to_string(i));
    expect_same(a.segments[i], b.segments[i]);
  }
}

// What the job database does: JSON to text (strict: invalid UTF-8 would throw) and back.
Transcript through_text(const Transcript& t) {
  return transcript_from_json(nlohmann::json::parse(transcript_to_json(t).dump()));
}

Transcript full_transcript() {
  Transcript t;
  t.task = "translate";
  t.language = "de";
  t.duration = 3600.123456789;
  t.partial = true;
  Segment a;
  a.id = 7;
  a.seek = 3000;
  a.start = 0.1;
  a.end = 1e-300;
  a.text = " Grüße, 世界!";
  a.tokens = {50365, 1, 0, std::numeric_limits<std::int32_t>::max(),
              std::numeric_limits<std::int32_t>::min()};
  a.temperature = 0.2;
  a.avg_logprob = -0.0;
  a.compression_ratio = 1.0 / 3.0;
  a.no_speech_prob = std::numeric_limits<double>::denorm_min();
  a.words = {{" Grüße,", 0.1, 0.7000000000000001}, {" 世界!", -0.0, 1e308}};
  Segment b;
  b.id = 8;
  b.seek = 6000;
  b.start = std::numeric_limits<double>::max();
  b.end = std::numeric_limits<double>::lowest();
  b.text = " a\tb\n\"c\"\\";
  b.tokens = {};
  b.temperature = 1.0;
  b.avg_logprob = -kInf;
  b.compression_ratio = kInf;
  b.no_speech_prob = 0.9999999999999999;
  t.segments = {a, b};
  return t;
}

TEST(TranscriptJson, EveryFieldRoundTripsExactly) {
  const Transcript t = full_transcript();
  expect_same(t, transcript_from_json(transcript_to_json(t)));
  expect_same(t, through_text(t));
  // The shape, as documented.
  const nlohmann::json j = transcript_to_json(t);
  EXPECT_EQ(j["task"], "translate");
  EXPECT_EQ(j["partial"], true);
  EXPECT_EQ(j["segments"][0]["words"][1]["text"], " 世界!");
  EXPECT_EQ(j["segments"][1]["avg_logprob"], "-Infinity");
  EXPECT_EQ(j["segments"][1]["compression_ratio"], "Infinity");
  EXPECT_TRUE(j["segments"][1]["words"].is_array());
}

TEST(TranscriptJson, NegativeZeroAndTinyNumbersKeepTheirBits) {
  const std::string text = transcript_to_json(full_transcript()).dump();
  EXPECT_NE(text.find("-0.0"), std::string::npos) << text;
  EXPECT_NE(text.find("1e-300"), std::string::npos) << text;
  const Transcript back = through_text(full_transcript());
  EXPECT_TRUE(std::signbit(back.segments[0].avg_logprob));
  EXPECT_EQ(back.segments[0].end, 1e-300);
  EXPECT_EQ(back.segments[0].start, 0.1);
}

TEST(TranscriptJson, RandomFiniteDoublesRoundTripThroughText) {
  std::mt19937_64 rng(20240601);
  std::vector<Segment> segments;
  while (segments.size() < 5000) {
    Segment s;
    s.start = std::bit_cast<double>(rng());
    if (!std::isfinite(s.start)) continue;
    s.end = std::bit_cast<double>(rng() >> 12);  // subnormals
    s.avg_logprob = std::uniform_real_distribution<double>(-5.0, 0.0)(rng);
    segments.push_back(s);
  }
  const auto back = segments_from_json(nlohmann::json::parse(segments_to_json(segments).dump()));
  ASSERT_EQ(back.size(), segments.size());
  for (std::size_t i = 0; i < segments.size(); ++i) {
    expect_same_bits(segments[i].start, back[i].start, "start");
    expect_same_bits(segments[i].end, back[i].end, "end");
    expect_same_bits(segments[i].avg_logprob, back[i].avg_logprob, "avg_logprob");
  }
}

TEST(TranscriptJson, NanAndInfinitiesAreStrings) {
  Transcript t;
  t.duration = std::numeric_limits<double>::quiet_NaN();
  Segment s;
  s.start = kInf;
  s.end = -kInf;
  s.temperature = -std::numeric_limits<double>::quiet_NaN();
  t.segments = {s};
  const nlohmann::json j = transcript_to_json(t);
  EXPECT_EQ(j["duration"], "NaN");
  EXPECT_EQ(j["segments"][0]["start"], "Infinity");
  EXPECT_EQ(j["segments"][0]["end"], "-Infinity");
  const Transcript back = through_text(t);
  EXPECT_TRUE(std::isnan(back.duration));
  EXPECT_TRUE(std::isnan(back.segments[0].temperature));  // the sign of a NaN is not kept
  EXPECT_EQ(back.segments[0].start, kInf);
  EXPECT_EQ(back.segments[0].end, -kInf);
}

TEST(TranscriptJson, InvalidUtf8BytesRoundTripAsByteLists) {
  const std::vector<std::string> texts = {
      std::string("\xE4\xBD"),              // a character cut after two of its three bytes
      std::string(" ok\xA0"),               // a lone continuation byte at the end
      std::string("\xFF\xFE x"),            // bytes that never occur in UTF-8
      std::string("\xC0\x80"),              // overlong NUL
      std::string("\xED\xA0\x80"),          // a surrogate
      std::string("\xF4\x90\x80\x80"),      // above U+10FFFF
      std::string("a\0b\xF0\x9F\x98", 6)};  // NUL kept, emoji cut
  Transcript t;
  t.language = std::string("e\x80");
  for (std::size_t i = 0; i < texts.size(); ++i) {
    Segment s;
    s.id = static_cast<int>(i);
    s.text = texts[i];
    s.words = {{texts[i], 0.0, 1.0}};
    t.segments.push_back(s);
  }
  const nlohmann::json j = transcript_to_json(t);
  EXPECT_EQ(j["segments"][0]["text"], nlohmann::json::array({0xE4, 0xBD}));
  EXPECT_TRUE(j["language"].is_array());
  EXPECT_NO_THROW((void)j.dump());  // strict dump: every string in the document is UTF-8
  expect_same(t, through_text(t));
}

TEST(TranscriptJson, ValidUtf8StaysAString) {
  Segment s;
  s.text = std::string("a\0b \xF0\x9F\x98\x80 \xE2\x82\xAC", 12);  // NUL, emoji, euro sign
  const nlohmann::json j = segments_to_json({s});
  ASSERT_TRUE(j[0]["text"].is_string());
  EXPECT_EQ(segments_from_json(nlohmann::json::parse(j.dump()))[0].text, s.text);
}

TEST(TranscriptJson, EmptyTranscriptAndSegmentList) {
  const Transcript empty;
  const nlohmann::json j = transcript_to_json(empty);
  EXPECT_EQ(j["segments"], nlohmann::json::array());
  expect_same(empty, through_text(empty));
  Transcript blank;
  blank.task = "";
  blank.segments = {Segment{}};
  expect_same(blank, through_text(blank));
  EXPECT_EQ(segments_to_json({}), nlohmann::json::array());
  EXPECT_TRUE(segments_from_json(nlohmann::json::array()).empty());
}

TEST(TranscriptJson, UnknownFieldsAreIgnored) {
  nlohmann::json j = transcript_to_json(full_transcript());
  j["version"] = 2;
  j["segments"][0]["speaker"] = "A";
  expect_same(full_transcript(), transcript_from_json(j));
}

// Every error is kInvalidArgument and names the field.
void expect_invalid(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  EXPECT_TRUE(test::throws_error(f, parts));
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
  }
}

TEST(TranscriptJson, MissingFieldsAreNamed) {
  const nlohmann::json good = transcript_to_json(full_transcript());
  for (const char* key : {"task", "language", "duration", "partial", "segments"}) {
    nlohmann::json j = good;
    j.erase(key);
    expect_invalid([&] { transcript_from_json(j); },
                   {"transcript JSON: field \"" + std::string(key) + "\" is missing"});
  }
  for (const char* key : {"id", "seek", "start", "end", "text", "tokens", "temperature",
                          "avg_logprob", "compression_ratio", "no_speech_prob", "words"}) {
    nlohmann::json j = good;
    j["segments"][1].erase(key);
    expect_invalid([&] { transcript_from_json(j); },
                   {"field \"segments[1]." + std::string(key) + "\" is missing"});
  }
  nlohmann::json j = good;
  j["segments"][0]["words"][1].erase("end");
  expect_invalid([&] { transcript_from_json(j); },
                 {"field \"segments[0].words[1].end\" is missing"});
}

TEST(TranscriptJson, WrongTypesAreNamedWithTheValue) {
  const nlohmann::json good = transcript_to_json(full_transcript());
  const auto with = [&](const nlohmann::json::json_pointer& at, nlohmann::json value) {
    nlohmann::json j = good;
    j[at] = std::move(value);
    return j;
  };
  using P = nlohmann::json::json_pointer;
  expect_invalid([&] { transcript_from_json(with(P("/duration"), "long")); },
                 {"field \"duration\" must be a number", "got \"long\""});
  expect_invalid([&] { transcript_from_json(with(P("/duration"), "nan")); },
                 {"field \"duration\" must be a number"});
  expect_invalid([&] { transcript_from_json(with(P("/partial"), 1)); },
                 {"field \"partial\" must be true or false, got 1"});
  expect_invalid([&] { transcript_from_json(with(P("/task"), nullptr)); },
                 {"field \"task\" must be a string or a list of byte values, got null"});
  expect_invalid([&] { transcript_from_json(with(P("/segments"), nlohmann::json::object())); },
                 {"field \"segments\" must be a list"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0"), 3)); },
                 {"field \"segments[0]\" must be an object, got 3"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0/id"), 1.5)); },
                 {"field \"segments[0].id\" must be an integer, got 1.5"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/1/seek"), 1LL << 32)); },
                 {"field \"segments[1].seek\" is 4294967296, expected"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0/tokens/2"), "x")); },
                 {"field \"segments[0].tokens[2]\" must be an integer"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0/tokens"), 5)); },
                 {"field \"segments[0].tokens\" must be a list"});
  expect_invalid(
      [&] {
        transcript_from_json(with(P("/segments/0/text"), {65, 256}));
      },
      {"field \"segments[0].text[1]\" is 256, expected 0 to 255"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0/words/0/start"), true)); },
                 {"field \"segments[0].words[0].start\" must be a number"});
  expect_invalid([&] { transcript_from_json(with(P("/segments/0/words"), "none")); },
                 {"field \"segments[0].words\" must be a list"});
  expect_invalid([&] { transcript_from_json(nlohmann::json::array()); },
                 {"transcript JSON: must be an object, got []"});
}

TEST(TranscriptJson, SegmentListErrorsAreNamedFromTheList) {
  expect_invalid([] { segments_from_json(nlohmann::json::object()); },
                 {"segments JSON: must be a list, got {}"});
  nlohmann::json j = segments_to_json(full_transcript().segments);
  j[1].erase("id");
  expect_invalid([&] { segments_from_json(j); }, {"segments JSON: field \"[1].id\" is missing"});
  j = segments_to_json(full_transcript().segments);
  j[0]["words"][0]["text"] = 5;
  expect_invalid([&] { segments_from_json(j); }, {"field \"[0].words[0].text\" must be a string"});
}

}  // namespace
}  // namespace ifw::formats
