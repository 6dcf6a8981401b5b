// Output formats and the readable-subtitle rules.
#include "formats/formats.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "formats/subtitle_cues.hpp"
#include "support/expect_error.hpp"
#include "util/utf8.hpp"

namespace ifw::test {
namespace {

using formats::Format;

Transcript two_segments() {
  Transcript t;
  t.language = "en";
  t.duration = 7.5;
  Segment a;
  a.id = 0;
  a.start = 0.0;
  a.end = 2.5;
  a.text = " Hello there.";
  a.tokens = {50364, 2425, 456, 13, 50489};
  a.avg_logprob = -0.25;
  a.compression_ratio = 0.9;
  a.no_speech_prob = 0.01;
  Segment b = a;
  b.id = 1;
  b.start = 3.0;
  b.end = 7.25;
  b.text = " General\tKenobi -->";
  b.seek = 0;
  t.segments = {a, b};
  return t;
}

int chars(const std::string& s) {
  int n = 0;
  for (std::size_t p = 0; p < s.size(); p += util::decode_utf8_step(s, p).length)
    ++n;
  return n;
}

TEST(Formats, ParseNamesAndAll) {
  EXPECT_EQ(formats::parse_formats("srt, txt,srt"),
            (std::vector<Format>{Format::kSrt, Format::kTxt}));
  EXPECT_EQ(formats::parse_formats("all").size(), 6u);
  EXPECT_IFW_ERROR(formats::parse_formats("txt,docx"), "unknown output format \"docx\"");
  EXPECT_IFW_ERROR(formats::parse_formats(""), "unknown output format \"\"");
  EXPECT_EQ(formats::extension(Format::kVerboseJson), "verbose.json");
}

TEST(Formats, Timestamps) {
  EXPECT_EQ(formats::timestamp(0.0, ','), "00:00:00,000");
  EXPECT_EQ(formats::timestamp(3661.2345, '.'), "01:01:01.235");
  EXPECT_EQ(formats::timestamp(-1.0, ','), "00:00:00,000");
  EXPECT_EQ(formats::timestamp(36000.0, ','), "10:00:00,000");
}

TEST(Formats, TextJsonAndTsv) {
  const Transcript t = two_segments();
  EXPECT_EQ(formats::render(t, Format::kTxt), "Hello there.\nGeneral\tKenobi -->\n");
  EXPECT_EQ(nlohmann::json::parse(formats::render(t, Format::kJson)).at("text"),
            "Hello there. General\tKenobi -->");
  EXPECT_EQ(formats::render(t, Format::kTsv),
            "start\tend\ttext\n0\t2500\tHello there.\n3000\t7250\tGeneral Kenobi -->\n");
}

TEST(Formats, VerboseJsonHasOpenAisShape) {
  Transcript t = two_segments();
  t.segments[0].words = {{" Hello", 0.0, 0.5}, {" there.", 0.5, 1.0}};
  const auto j = nlohmann::ordered_json::parse(formats::render(t, Format::kVerboseJson));
  EXPECT_EQ(j.at("task"), "transcribe");
  EXPECT_EQ(j.at("language"), "english");
  EXPECT_EQ(j.at("duration"), 7.5);
  EXPECT_EQ(j.at("segments").size(), 2u);
  const auto& s = j["segments"][0];
  std::vector<std::string> keys;
  for (const auto& [k, v] : s.items())
    keys.push_back(k);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"id", "seek", "start", "end", "text", "tokens", "temperature",
                                      "avg_logprob", "compression_ratio", "no_speech_prob"}));
  EXPECT_EQ(j.at("words")[1],
            (nlohmann::ordered_json{{"word", "there."}, {"start", 0.5}, {"end", 1.0}}));
  EXPECT_FALSE(j.contains("partial"));
  t.partial = true;
  EXPECT_TRUE(
      nlohmann::json::parse(formats::render(t, Format::kVerboseJson)).at("partial").get<bool>());
}

TEST(Formats, SrtAndVttCues) {
  formats::SubtitleOptions segments;
  segments.readable = false;
  const Transcript t = two_segments();
  EXPECT_EQ(formats::render(t, Format::kSrt, segments),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,000 --> "
            "00:00:07,250\nGeneral\tKenobi ->\n\n");
  const std::string vtt = formats::render(t, Format::kVtt, segments);
  EXPECT_TRUE(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"));
}

// Words of running speech: `count` words of varied length, ~0.35 s each, with sentence and
// clause punctuation now and then.
std::vector<Word> speech(int count) {
  static const char* kWords[] = {"the",    "committee",     "decided",     "that", "we",
                                 "should", "probably",      "reconsider",  "our",  "approach",
                                 "to",     "international", "cooperation", "and",  "funding"};
  std::vector<Word> words;
  double t = 0.2;
  for (int i = 0; i < count; ++i) {
    std::string w = std::string(" ") + kWords[i % 15];
    if (i % 11 == 10) w += ".";
    if (i % 7 == 3) w += ",";
    const double d = 0.15 + 0.03 * static_cast<double>(w.size());
    words.push_back({w, t, t + d});
    t += d + (i % 11 == 10 ? 0.6 : 0.05);
  }
  return words;
}

Transcript with_words(const std::vector<Word>& words, std::size_t per_segment) {
  Transcript t;
  for (std::size_t i = 0; i < words.size(); i += per_segment) {
    Segment s;
    s.words.assign(
        words.begin() + static_cast<std::ptrdiff_t>(i),
        words.begin() + static_cast<std::ptrdiff_t>(std::min(words.size(), i + per_segment)));
    s.start = s.words.front().start;
    s.end = s.words.back().end;
    for (const Word& w : s.words)
      s.text += w.text;
    t.segments.push_back(s);
  }
  return t;
}

TEST(ReadableSubtitles, EveryRuleHoldsAndNoWordIsLost) {
  const auto words = speech(400);
  const formats::SubtitleOptions o;
  const auto cues = formats::subtitle_cues(with_words(words, 37), o);
  std::vector<std::string> shown;
  for (std::size_t i = 0; i < cues.size(); ++i) {
    const auto& c = cues[i];
    ASSERT_FALSE(c.words.empty());
    for (const Word& w : c.words)
      shown.push_back(w.text);
    EXPECT_LE(c.lines.size(), 2u) << "cue " << i;
    std::string text;
    for (const std::string& line : c.lines) {
      EXPECT_LE(chars(line), 42) << "cue " << i << ": " << line;
      text += (text.empty() ? "" : " ") + line;
    }
    const double duration = c.end - c.start;
    EXPECT_LE(duration, o.max_duration + 1e-9) << "cue " << i;
    EXPECT_GE(duration, 0.1) << "cue " << i;
    EXPECT_LE(chars(text), o.max_chars_per_second * std::max(duration, o.min_duration) + 1e-9)
        << "cue " << i;
    if (i + 1 < cues.size()) {
      EXPECT_LE(c.end, cues[i + 1].start + 1e-9) << "cues overlap at " << i;
      // Shorter than the minimum only when the next cue follows at once.
      if (duration < o.min_duration - 1e-9) {
        EXPECT_NEAR(c.end, cues[i + 1].start, 1e-9);
      }
    }
  }
  std::vector<std::string> spoken;
  for (const Word& w : words)
    spoken.push_back(w.text);
  EXPECT_EQ(shown, spoken);  // every word, once, in order
}

TEST(ReadableSubtitles, CutsAtSentenceEndsFirst) {
  std::vector<Word> words;
  double t = 0.0;
  for (const char* w : {" I", " came", " home", " late.", " The", " dog", " had", " eaten",
                        " every", " single", " one", " of", " my", " notes", " again"}) {
    words.push_back({w, t, t + 0.3});
    t += 0.3;
  }
  const auto cues = formats::subtitle_cues(with_words(words, 100), formats::SubtitleOptions{});
  ASSERT_GE(cues.size(), 2u);
  EXPECT_EQ(cues[0].words.back().text, " late.");
}

TEST(ReadableSubtitles, ALongWordKeepsItsOwnCue) {
  const std::string url = " https://example.org/a/very/long/path/that/cannot/be/broken/anywhere";
  const std::vector<Word> words = {{" see", 0.0, 0.3}, {url, 0.3, 3.0}, {" now", 3.0, 3.3}};
  const auto cues = formats::subtitle_cues(with_words(words, 3), formats::SubtitleOptions{});
  std::size_t count = 0;
  for (const auto& c : cues)
    count += c.words.size();
  EXPECT_EQ(count, 3u);
}

TEST(ReadableSubtitles, CollapsedTimingsStillGiveVisibleCues) {
  std::vector<Word> words(60, Word{" word", 5.0, 5.0});
  const auto cues = formats::subtitle_cues(with_words(words, 60), formats::SubtitleOptions{});
  for (std::size_t i = 0; i < cues.size(); ++i) {
    EXPECT_GE(cues[i].end - cues[i].start, 0.1 - 1e-9);
    if (i > 0) {
      EXPECT_GE(cues[i].start, cues[i - 1].end - 1e-9);
    }
  }
}

TEST(ReadableSubtitles, SegmentsWithoutWordTimingsShareTheirTime) {
  Segment s;
  s.start = 10.0;
  s.end = 14.0;
  s.text = " one two three four";
  const auto words = formats::words_by_characters(s);
  ASSERT_EQ(words.size(), 4u);
  EXPECT_DOUBLE_EQ(words.front().start, 10.0);
  EXPECT_NEAR(words.back().end, 14.0, 1e-9);
  EXPECT_EQ(words[1].text, " two");
}

TEST(ReadableSubtitles, LinesAreBalanced) {
  const auto lines =
      formats::wrap_lines("This sentence is long enough that it needs two lines", 42, 2);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_LE(std::abs(chars(lines[0]) - chars(lines[1])), 12);
  EXPECT_EQ(formats::wrap_lines("short", 42, 2), (std::vector<std::string>{"short"}));
  EXPECT_TRUE(formats::wrap_lines("", 42, 2).empty());
}

}  // namespace
}  // namespace ifw::test
