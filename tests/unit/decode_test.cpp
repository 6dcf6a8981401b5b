// Decoding rules, segment splitting, token-timestamp alignment and window statistics.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "decode/logits_rules.hpp"
#include "decode/segments.hpp"
#include "decode/token_timestamps.hpp"
#include "decode/window_stats.hpp"
#include "support/expect_error.hpp"

namespace ifw::test {
namespace {

using decode::TokenId;

// A toy vocabulary: 0-9 text, 10 end of text, 11 no-timestamps, 12.. timestamps (0.00, 0.02 ...).
constexpr TokenId kEot = 10, kNoTs = 11, kTs = 12, kVocab = 40;

decode::DecodingRules toy_rules(bool timestamps) {
  decode::DecodingRules r;
  r.suppress_tokens = {3};
  r.begin_suppress_tokens = {5, kEot};
  r.timestamps = timestamps;
  r.end_of_text = kEot;
  r.no_timestamps = kNoTs;
  r.timestamp_begin = kTs;
  r.max_initial_timestamp_index = 2;
  return r;
}

std::vector<float> flat(float value = 0.0f) {
  return std::vector<float>(kVocab, value);
}
bool forbidden(const std::vector<float>& l, TokenId t) {
  return std::isinf(l[static_cast<std::size_t>(t)]) && l[static_cast<std::size_t>(t)] < 0;
}

TEST(LogitsRules, SuppressionAndBeginSuppression) {
  const auto r = toy_rules(false);
  auto first = flat();
  decode::apply_rules(r, {}, first);
  EXPECT_TRUE(forbidden(first, 3));
  EXPECT_TRUE(forbidden(first, 5));
  EXPECT_TRUE(forbidden(first, kEot));
  EXPECT_FALSE(forbidden(first, 4));
  EXPECT_FALSE(forbidden(first, kTs));  // without the timestamp rules, timestamps are not special
  auto later = flat();
  const TokenId seq[] = {4};
  decode::apply_rules(r, seq, later);
  EXPECT_TRUE(forbidden(later, 3));
  EXPECT_FALSE(forbidden(later, 5));
  EXPECT_FALSE(forbidden(later, kEot));
}

TEST(LogitsRules, FirstTokenIsAnEarlyTimestamp) {
  auto l = flat();
  decode::apply_rules(toy_rules(true), {}, l);
  for (TokenId t = 0; t < kTs; ++t)
    EXPECT_TRUE(forbidden(l, t)) << t;
  EXPECT_FALSE(forbidden(l, kTs));
  EXPECT_FALSE(forbidden(l, kTs + 2));
  EXPECT_TRUE(forbidden(l, kTs + 3));  // past max_initial_timestamp_index
}

TEST(LogitsRules, TimestampsComeInPairsAndNeverDecrease) {
  const auto r = toy_rules(true);
  {  // after text then one timestamp: close the pair (timestamp, or end of text), no text
    auto l = flat();
    l[kEot] = 5.0f;  // likelier than all timestamps together, so the last rule keeps it
    const TokenId seq[] = {kTs + 1, 4, kTs + 5};
    decode::apply_rules(r, seq, l);
    for (TokenId t = 0; t < kEot; ++t)
      EXPECT_TRUE(forbidden(l, t));
    EXPECT_FALSE(forbidden(l, kEot));
    EXPECT_TRUE(forbidden(l, kTs + 4));   // earlier than the last: never
    EXPECT_FALSE(forbidden(l, kTs + 5));  // the same time closes the pair
  }
  {  // after a pair: text must follow
    auto l = flat();
    const TokenId seq[] = {kTs + 1, 4, kTs + 5, kTs + 5};
    decode::apply_rules(r, seq, l);
    for (TokenId t = kTs; t < kVocab; ++t)
      EXPECT_TRUE(forbidden(l, t));
    EXPECT_FALSE(forbidden(l, 4));
  }
  {  // in text: a later timestamp may come, not an earlier one nor the same again
    auto l = flat();
    const TokenId seq[] = {kTs + 2, 4};
    decode::apply_rules(r, seq, l);
    EXPECT_TRUE(forbidden(l, kTs + 2));
    EXPECT_FALSE(forbidden(l, kTs + 3));
    EXPECT_TRUE(forbidden(l, kNoTs));
  }
}

TEST(LogitsRules, TimestampForcedWhenTheirTotalProbabilityWins) {
  const auto r = toy_rules(true);
  const TokenId seq[] = {kTs, 4};
  auto l = flat(0.0f);
  l[6] = 2.0f;  // the best single text token
  for (TokenId t = kTs + 1; t < kVocab; ++t)
    l[static_cast<std::size_t>(t)] = 0.5f;  // many timestamps
  decode::apply_rules(r, seq, l);
  for (TokenId t = 0; t < kTs; ++t)
    EXPECT_TRUE(forbidden(l, t));
  auto m = flat(0.0f);
  m[6] = 8.0f;  // now the text token is likelier than all timestamps together
  decode::apply_rules(r, seq, m);
  EXPECT_FALSE(forbidden(m, 6));
}

// The rules in the form a backend applies them (token flags built once, per-row ranges and the
// vote) forbid exactly what apply_rules forbids, for every kind of sequence, and choose_token
// picks apply_rules' argmax with its log-probability.
TEST(LogitsRules, FlagsAndRowRulesForbidWhatApplyRulesForbids) {
  const std::vector<std::vector<TokenId>> sequences = {
      {}, {kTs}, {kTs, 4}, {kTs, 4, kTs + 3}, {kTs, 4, kTs + 3, kTs + 3}, {kTs + 2, 6, 7}};
  for (const bool timestamps : {false, true}) {
    const auto r = toy_rules(timestamps);
    const std::vector<std::uint8_t> flags = decode::token_flags(r, kVocab);
    for (const auto& seq : sequences) {
      for (const float text : {0.0f, 5.0f}) {  // the vote for timestamps, then for text
        auto expected = flat(0.0f);
        for (TokenId t = 0; t < kTs; ++t)
          expected[static_cast<std::size_t>(t)] = text + 0.1f * static_cast<float>(t % 4);
        auto actual = expected;
        auto chosen = expected;
        decode::apply_rules(r, seq, expected);
        const backend::RowRules row = decode::row_rules(r, seq);
        backend::apply_row_rules(flags, row, actual);
        for (TokenId t = 0; t < kVocab; ++t) {
          EXPECT_EQ(forbidden(actual, t), forbidden(expected, t))
              << "token " << t << ", " << seq.size() << " generated, timestamps " << timestamps;
        }
        const backend::TokenChoice c = backend::choose_token(flags, row, chosen);
        EXPECT_EQ(c.token, decode::argmax(expected));
        EXPECT_DOUBLE_EQ(c.logprob, decode::log_probability(expected, c.token));
      }
    }
  }
}

TEST(LogitsRules, ArgmaxAndLogProbability) {
  const std::vector<float> l = {1.0f, 3.0f, 3.0f, -std::numeric_limits<float>::infinity()};
  EXPECT_EQ(decode::argmax(l), 1);  // first of equal maxima
  EXPECT_NEAR(decode::log_probability(l, 1), 3.0 - std::log(std::exp(1.0) + 2 * std::exp(3.0)),
              1e-12);
}

std::vector<TokenId> ts(std::initializer_list<TokenId> ids) {
  return ids;
}

TEST(Segments, NoTimestampsIsOneSegmentOverTheWindow) {
  const auto s = decode::split_segments(ts({1, 2, 3}), kTs, 1000, 3000);
  ASSERT_EQ(s.segments.size(), 1u);
  EXPECT_DOUBLE_EQ(s.segments[0].start, 10.0);
  EXPECT_DOUBLE_EQ(s.segments[0].end, 40.0);
  EXPECT_EQ(s.frames_consumed, 3000);
  // A lone timestamp (no pair) ends the segment.
  const auto t = decode::split_segments(ts({kTs, 1, 2, kTs + 50}), kTs, 0, 3000);
  ASSERT_EQ(t.segments.size(), 1u);
  EXPECT_DOUBLE_EQ(t.segments[0].end, 1.0);
  EXPECT_EQ(t.frames_consumed, 3000);
}

TEST(Segments, PairsSplitAndAnUnfinishedSegmentIsDecodedAgain) {
  // <0.00> a b <1.00><1.00> c <2.00><2.00> d    (the last segment is unfinished)
  const auto s = decode::split_segments(
      ts({kTs, 1, 2, kTs + 50, kTs + 50, 3, kTs + 100, kTs + 100, 4}), kTs, 0, 3000);
  ASSERT_EQ(s.segments.size(), 2u);
  EXPECT_DOUBLE_EQ(s.segments[0].start, 0.0);
  EXPECT_DOUBLE_EQ(s.segments[0].end, 1.0);
  EXPECT_EQ(s.segments[0].tokens, ts({kTs, 1, 2, kTs + 50}));
  EXPECT_DOUBLE_EQ(s.segments[1].start, 1.0);
  EXPECT_DOUBLE_EQ(s.segments[1].end, 2.0);
  EXPECT_EQ(s.segments[1].tokens, ts({kTs + 50, 3, kTs + 100, kTs + 100}));
  EXPECT_EQ(s.frames_consumed, 200);  // the next window starts at 2.00 s
}

TEST(Segments, UnfinishedTextIsKeptWhenTheWindowIsNotDecodedAgain) {
  // <0.00> a b <1.00><1.00> c d    in a window from 10 s to 40 s that is never decoded again
  const auto s =
      decode::split_segments(ts({kTs, 1, 2, kTs + 50, kTs + 50, 3, 4}), kTs, 1000, 3000, true);
  ASSERT_EQ(s.segments.size(), 2u);
  EXPECT_EQ(s.segments[0].tokens, ts({kTs, 1, 2, kTs + 50, kTs + 50}));
  EXPECT_EQ(s.segments[1].tokens, ts({3, 4}));
  EXPECT_DOUBLE_EQ(s.segments[1].start, 11.0);
  EXPECT_DOUBLE_EQ(s.segments[1].end, 40.0);
  EXPECT_EQ(s.frames_consumed, 3000);
  // Nothing after the pair: no empty segment.
  const auto t = decode::split_segments(ts({kTs, 1, kTs + 50, kTs + 50}), kTs, 0, 3000, true);
  ASSERT_EQ(t.segments.size(), 1u);
  EXPECT_EQ(t.frames_consumed, 3000);
}

TEST(Segments, ASingleTimestampEndingConsumesTheWindow) {
  const auto s =
      decode::split_segments(ts({kTs, 1, kTs + 10, kTs + 10, 2, kTs + 20}), kTs, 3000, 1200);
  ASSERT_EQ(s.segments.size(), 2u);
  EXPECT_DOUBLE_EQ(s.segments[1].start, 30.2);
  EXPECT_DOUBLE_EQ(s.segments[1].end, 30.4);
  EXPECT_EQ(s.frames_consumed, 1200);
}

TEST(Segments, ALoneZeroPairStillMovesForward) {
  const auto s = decode::split_segments(ts({kTs, kTs, kTs, kTs}), kTs, 0, 3000);
  EXPECT_GT(s.frames_consumed, 0);
}

TEST(TokenTimestamps, MedianFilterWithReflectPadding) {
  std::vector<double> x = {5, 1, 9, 2, 8, 3};
  decode::median_filter_rows(x, 1, 6, 3);
  // Padded: [1 | 5 1 9 2 8 3 | 8]
  EXPECT_EQ(x, (std::vector<double>{1, 5, 2, 8, 3, 8}));
  std::vector<double> short_row = {3, 1};
  decode::median_filter_rows(short_row, 1, 2, 7);  // shorter than the padding: unchanged
  EXPECT_EQ(short_row, (std::vector<double>{3, 1}));
  EXPECT_IFW_ERROR(decode::median_filter_rows(x, 1, 6, 4), "must be odd");
}

TEST(TokenTimestamps, DtwFollowsTheCheapestMonotonePath) {
  // Cheap cells along (0,0) (0,1) (1,2) (2,3) (2,4).
  std::vector<double> cost(3 * 5, 1.0);
  for (const auto& [r, c] :
       std::vector<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 2}, {2, 3}, {2, 4}}) {
    cost[static_cast<std::size_t>(r * 5 + c)] = 0.0;
  }
  const auto path = decode::dynamic_time_warping(cost, 3, 5);
  EXPECT_EQ(path, (std::vector<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 2}, {2, 3}, {2, 4}}));
}

TEST(TokenTimestamps, TokensFollowTheirAttentionPeaks) {
  // Three tokens attending at frames 2, 10 and 30 of 40.
  const int tokens = 3, frames = 40;
  std::vector<float> head(static_cast<std::size_t>(tokens * frames), 0.01f);
  const int peaks[] = {2, 10, 30};
  for (int t = 0; t < tokens; ++t) {
    for (int f = peaks[t]; f < peaks[t] + 3; ++f)
      head[static_cast<std::size_t>(t * frames + f)] = 1.0f;
  }
  const auto times = decode::token_timestamps({head, head}, tokens, frames, 1);
  ASSERT_EQ(times.size(), 4u);
  EXPECT_DOUBLE_EQ(times[0], 0.0);
  EXPECT_NEAR(times[2], peaks[1] * 0.02, 1e-9);
  EXPECT_NEAR(times[3], peaks[2] * 0.02, 1e-9);
  EXPECT_IFW_ERROR(decode::token_timestamps({}, 3, 40, 7), "need alignment weights");
}

TEST(TokenTimestamps, PassTimestampsLeaveThePromptAtZero) {
  const int frames = 20, prompt = 2, generated = 3, rows = prompt + generated - 1;
  std::vector<float> head(static_cast<std::size_t>(rows * frames), 0.0f);
  for (int r = 0; r < rows; ++r)
    head[static_cast<std::size_t>(r * frames + std::min(r * 4, frames - 1))] = 1.0f;
  const auto times = decode::pass_token_timestamps({head}, prompt, frames, 1);
  ASSERT_EQ(times.size(), static_cast<std::size_t>(prompt + generated));
  EXPECT_EQ(times[0], 0.0);
  EXPECT_EQ(times[1], 0.0);
  EXPECT_EQ(times.back(), times[times.size() - 2]);  // the last token repeats the previous time
}

TEST(WindowStats, RepetitiveTextCompressesWell) {
  std::string loop;
  for (int i = 0; i < 40; ++i)
    loop += "thank you. ";
  EXPECT_GT(decode::compression_ratio(loop), 2.4);  // Whisper's hallucination threshold
  EXPECT_LT(decode::compression_ratio(
                "And so my fellow Americans, ask not what your country can do for you."),
            2.0);
  EXPECT_EQ(decode::compression_ratio(""), 0.0);
  EXPECT_DOUBLE_EQ(decode::average_logprob(-3.0, 2), -1.0);
}

}  // namespace
}  // namespace ifw::test
