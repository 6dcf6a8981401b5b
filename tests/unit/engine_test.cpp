// The Whisper model on synthetic weights: shapes, the decoder session's bookkeeping and errors,
// random weights for benchmarks.
#include <cmath>
#include <functional>
#include <stdexcept>

#include <gtest/gtest.h>

#include <ifw/audio.hpp>

#include "decode/greedy.hpp"
#include "decode/logits_rules.hpp"
#include "engine/benchmark.hpp"
#include "engine/weight_source.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "support/delegating_backend.hpp"
#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_synthetic_model(dir_.path());
    folder_ = std::make_unique<model::ModelFolder>(dir_.path());
    backend_ = backend::make_cpu_backend(2);
    engine::CheckpointWeights weights(folder_->checkpoint());
    model_ = std::make_unique<engine::WhisperModel>(folder_->config(), weights, *backend_);
  }
  std::vector<float> mel(int batch, float value = -0.5f) {
    return std::vector<float>(static_cast<std::size_t>(batch) * 80 * kFramesPerWindow, value);
  }
  // `batch` windows of different constant features: first, first + 0.2, ...
  std::vector<float> distinct_windows(int batch, float first) {
    std::vector<float> windows;
    for (int b = 0; b < batch; ++b) {
      const std::vector<float> one = mel(1, first + 0.2f * static_cast<float>(b));
      windows.insert(windows.end(), one.begin(), one.end());
    }
    return windows;
  }
  TempDir dir_;
  std::unique_ptr<model::ModelFolder> folder_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<engine::WhisperModel> model_;
};

TEST_F(EngineTest, EncoderShapeAndInputChecks) {
  const auto states = model_->encode(mel(2), 2);
  EXPECT_EQ(states.shape(), (backend::Shape{2, 1500, 8}));
  EXPECT_IFW_ERROR(model_->encode(mel(1), 2), "encoder input holds 240000 values; 2 windows");
}

TEST_F(EngineTest, DecoderSessionTracksLengthsAndRejectsOverflow) {
  const auto states = model_->encode(mel(2), 2);
  engine::DecoderSession session(*model_, states);
  const int both[] = {0, 1}, second[] = {1};
  const std::vector<engine::TokenId> prompt = {
      kSyntheticStartOfTranscript, kSyntheticStartOfTranscript + 1, kSyntheticStartOfTranscript,
      kSyntheticStartOfTranscript + 1};
  const auto logits = session.forward(prompt, 2, both, engine::LogitRows::kAll);
  EXPECT_EQ(logits.size(), 2u * 2u * kSyntheticVocabSize);
  const engine::TokenId one[] = {42};
  session.forward(one, 1, second, engine::LogitRows::kLast);
  EXPECT_EQ(session.length(0), 2);
  EXPECT_EQ(session.length(1), 3);
  EXPECT_IFW_ERROR(session.forward(one, 1, std::span<const int>(), engine::LogitRows::kLast),
                   "decoder: 1 tokens for 0 items");
  const int bad[] = {5};
  EXPECT_IFW_ERROR(session.forward(one, 1, bad, engine::LogitRows::kLast), "no batch item 5");
  const engine::TokenId out_of_vocab[] = {kSyntheticVocabSize};
  EXPECT_IFW_ERROR(session.forward(out_of_vocab, 1, second, engine::LogitRows::kLast),
                   "outside the vocabulary");
  std::vector<engine::TokenId> long_run(446, 42);
  EXPECT_IFW_ERROR(session.forward(long_run, 446, second, engine::LogitRows::kLast),
                   "exceed the model's 448 positions");
}

// Items of one session advanced apart (prompts of different lengths, some items finished) each
// keep their own cache: the logits are those of the item decoded alone (the second item's
// prompt first).
TEST_F(EngineTest, ItemsDecodedApartGetWhatTheyGetAlone) {
  std::vector<float> two = mel(1, -0.5f);
  const std::vector<float> other = mel(1, 0.3f);
  two.insert(two.end(), other.begin(), other.end());
  const auto states = model_->encode(two, 2);
  const engine::TokenId sot = kSyntheticStartOfTranscript;
  std::vector<engine::TokenId> prompt0, prompt1;
  for (int t = 0; t < 10; ++t)  // prompts of 10 and 11 tokens
    prompt0.push_back(sot + t % 2);
  prompt1 = prompt0;
  prompt1.push_back(sot);
  const int first[] = {0}, second[] = {1}, both[] = {0, 1};

  engine::DecoderSession together(*model_, states);
  together.forward(prompt1, static_cast<int>(prompt1.size()), second,
                   engine::LogitRows::kLast);  // the second item first
  together.forward(prompt0, static_cast<int>(prompt0.size()), first, engine::LogitRows::kLast);
  const engine::TokenId step[] = {42, 43};
  const auto mixed = together.forward(step, 1, both, engine::LogitRows::kLast);
  const engine::TokenId late[] = {44};
  const auto last = together.forward(late, 1, second, engine::LogitRows::kLast);

  const auto alone = [&](float value, const std::vector<engine::TokenId>& prompt,
                         std::vector<engine::TokenId> steps) {
    engine::DecoderSession s(*model_, model_->encode(mel(1, value), 1));
    s.forward(prompt, static_cast<int>(prompt.size()), first, engine::LogitRows::kLast);
    std::vector<std::vector<float>> out;
    for (const engine::TokenId t : steps) {
      const engine::TokenId one[] = {t};
      out.push_back(s.forward(one, 1, first, engine::LogitRows::kLast));
    }
    return out;
  };
  const auto item0 = alone(-0.5f, prompt0, {42});
  const auto item1 = alone(0.3f, prompt1, {43, 44});
  const std::size_t v = kSyntheticVocabSize;
  ASSERT_EQ(mixed.size(), 2 * v);
  for (std::size_t k = 0; k < v; ++k) {
    ASSERT_NEAR(mixed[k], item0[0][k], 1e-4) << "item 0, logit " << k;
    ASSERT_NEAR(mixed[v + k], item1[0][k], 1e-4) << "item 1, logit " << k;
    ASSERT_NEAR(last[k], item1[1][k], 1e-4) << "item 1 alone after, logit " << k;
  }
}

TEST(DecoderSteps, RowsAreRoundedToAFewSizes) {
  using engine::DecoderSession;
  EXPECT_EQ(DecoderSession::step_rows(1, 64), 1);
  EXPECT_EQ(DecoderSession::step_rows(3, 64), 4);
  EXPECT_EQ(DecoderSession::step_rows(5, 64), 8);
  EXPECT_EQ(DecoderSession::step_rows(9, 64), 16);
  EXPECT_EQ(DecoderSession::step_rows(17, 64), 24);
  EXPECT_EQ(DecoderSession::step_rows(64, 64), 64);
  EXPECT_EQ(DecoderSession::step_rows(5, 6), 6);  // never beyond the batch...
  EXPECT_EQ(DecoderSession::step_rows(7, 6), 7);  // ...unless asked for more
  EXPECT_EQ(DecoderSession::step_rows(20, 20), 20);
}

// A CPU backend that "records" decoder steps the simplest way the StepGraph contract allows: it
// runs them directly each time. Counts the graphs used, so that a test sees which step shapes a
// session recorded anew.
class StepsRecordedOnTheCpu final : public DelegatingBackend {
 public:
  StepsRecordedOnTheCpu() : DelegatingBackend(backend::make_cpu_backend(2)) {}
  int graphs_made() const { return graphs_made_; }
  std::unique_ptr<backend::StepGraph> make_step_graph() override {
    return std::make_unique<DirectStepGraph>(&graphs_made_);
  }

 private:
  int graphs_made_ = 0;
};

// Where steps are recorded, the next decoder session of the same size takes the last one's
// buffers and graphs (a GPU then replays them instead of recording each step shape once per
// batch): it gives what a session of its own gives, although the caches hold the earlier
// session's keys and values; another size, or a model that let them go, starts anew.
TEST_F(EngineTest, ASessionOfTheSameSizeTakesTheLastOnesBuffersAndGraphs) {
  StepsRecordedOnTheCpu recording;
  engine::CheckpointWeights weights(folder_->checkpoint());
  const engine::WhisperModel model(folder_->config(), weights, recording);
  const engine::TokenId sot = kSyntheticStartOfTranscript;
  // A batch decoded as a transcription's: prompts, then items ending one by one (rounded steps).
  const auto decode = [&](const engine::WhisperModel& m, int batch, float first_window) {
    const auto states = m.encode(distinct_windows(batch, first_window), batch);
    engine::DecoderSession session(m, states, true);
    std::vector<int> active(static_cast<std::size_t>(batch));
    std::vector<engine::TokenId> prompt;
    for (int b = 0; b < batch; ++b) {
      active[static_cast<std::size_t>(b)] = b;
      prompt.insert(prompt.end(), {sot, sot + 1});
    }
    std::vector<std::vector<float>> logits = {
        session.forward(prompt, 2, active, engine::LogitRows::kLast)};
    for (int step = 0; !active.empty(); ++step) {
      std::vector<engine::TokenId> tokens;
      for (const int b : active)
        tokens.push_back(40 + b + step);
      logits.push_back(session.forward(tokens, 1, active, engine::LogitRows::kLast));
      active.erase(active.begin());  // the first still going ends
    }
    return logits;
  };
  const auto near = [](const std::vector<std::vector<float>>& a,
                       const std::vector<std::vector<float>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t s = 0; s < a.size(); ++s) {
      if (a[s].size() != b[s].size()) return false;
      for (std::size_t k = 0; k < a[s].size(); ++k) {
        if (std::abs(a[s][k] - b[s][k]) > 1e-5f) return false;
      }
    }
    return true;
  };

  decode(model, 5, -0.6f);
  const int recorded = recording.graphs_made();
  EXPECT_GE(recorded, 3) << "steps of 5, 4, 2 and 1 rows";
  // The next batch of 5, other windows: nothing recorded anew, the tokens of a fresh session.
  const auto again = decode(model, 5, 0.3f);
  EXPECT_EQ(recording.graphs_made(), recorded);
  EXPECT_TRUE(near(again, decode(*model_, 5, 0.3f))) << "the earlier session's caches leaked in";
  // A single window between batches (a new file's language detection) records its own steps
  // and leaves the batch's alone.
  decode(model, 1, 0.1f);
  const int after_one = recording.graphs_made();
  EXPECT_GT(after_one, recorded);
  EXPECT_TRUE(near(decode(model, 5, -0.2f), decode(*model_, 5, -0.2f)));
  EXPECT_EQ(recording.graphs_made(), after_one);
  // Three more sizes push the batch's out (kKeptDecoderSizes): recorded anew.
  for (const int other : {2, 3, 4})
    decode(model, other, 0.2f);
  int before = recording.graphs_made();
  decode(model, 5, -0.2f);
  EXPECT_GT(recording.graphs_made(), before);
  // Let go (an idle model): recorded anew.
  before = recording.graphs_made();
  EXPECT_TRUE(model.release_decoder_buffers());
  EXPECT_FALSE(model.release_decoder_buffers());
  decode(model, 5, -0.2f);
  EXPECT_GT(recording.graphs_made(), before);
  // A session that ends by an exception (a device error mid-decoding) takes the kept buffers
  // and gives nothing back.
  try {
    const auto states = model.encode(distinct_windows(5, 0.0f), 5);
    engine::DecoderSession session(model, states, true);
    const int all[] = {0, 1, 2, 3, 4};
    session.forward(std::vector<engine::TokenId>(5, sot), 1, all, engine::LogitRows::kLast);
    throw std::runtime_error("a device error");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(model.release_decoder_buffers()) << "a failed session's buffers were kept";
  // Without step graphs (the CPU), nothing is kept: every session makes its own buffers.
  decode(*model_, 5, 0.3f);
  EXPECT_EQ(model_->take_decoder_buffers(5, 6, 1500), nullptr);
}

// Steps rounded up (as for step graphs on a GPU) give every item what an unrounded session
// gives it, logits and alignment weights alike, while items drop out one by one; the extra rows
// write only the spare cache slot.
TEST_F(EngineTest, RoundedStepsGiveWhatUnroundedStepsGive) {
  const int batch = 6;
  const auto states = model_->encode(distinct_windows(batch, -0.6f), batch);
  const engine::TokenId sot = kSyntheticStartOfTranscript;
  const auto decode = [&](bool rounded) {
    engine::DecoderSession session(*model_, states, rounded);
    engine::AlignmentCapture capture;
    capture.heads = {{1, 0}, {0, 1}};
    std::vector<int> active = {0, 1, 2, 3, 4, 5};
    std::vector<engine::TokenId> prompt;
    for (int b = 0; b < batch; ++b)
      prompt.insert(prompt.end(), {sot, sot + 1});
    std::vector<std::vector<float>> logits = {
        session.forward(prompt, 2, active, engine::LogitRows::kLast, &capture)};
    // 6 items, then 5 (rounded to 6), 3 (to 4), 2, 1.
    for (const std::vector<int>& items :
         {std::vector<int>{0, 1, 2, 3, 4, 5}, {0, 2, 3, 4, 5}, {0, 3, 5}, {3, 5}, {5}, {5}}) {
      std::vector<engine::TokenId> tokens;
      for (const int b : items)
        tokens.push_back(40 + b);
      logits.push_back(session.forward(tokens, 1, items, engine::LogitRows::kLast, &capture));
    }
    for (int b = 0; b < batch; ++b)
      logits.push_back({static_cast<float>(session.length(b))});
    return std::make_pair(logits, capture.weights);
  };
  const auto [plain_logits, plain_weights] = decode(false);
  const auto [rounded_logits, rounded_weights] = decode(true);
  ASSERT_EQ(plain_logits.size(), rounded_logits.size());
  for (std::size_t s = 0; s < plain_logits.size(); ++s) {
    ASSERT_EQ(plain_logits[s].size(), rounded_logits[s].size()) << "call " << s;
    for (std::size_t k = 0; k < plain_logits[s].size(); ++k)
      ASSERT_NEAR(plain_logits[s][k], rounded_logits[s][k], 1e-5) << "call " << s << ", " << k;
  }
  ASSERT_EQ(plain_weights.size(), rounded_weights.size());
  for (std::size_t b = 0; b < plain_weights.size(); ++b) {
    ASSERT_EQ(plain_weights[b].size(), 2u);
    for (std::size_t h = 0; h < 2; ++h) {
      ASSERT_EQ(plain_weights[b][h].size(), rounded_weights[b][h].size()) << b << "/" << h;
      ASSERT_FALSE(plain_weights[b][h].empty());
      for (std::size_t k = 0; k < plain_weights[b][h].size(); ++k)
        ASSERT_NEAR(plain_weights[b][h][k], rounded_weights[b][h][k], 1e-6) << b << "/" << h;
    }
  }
}

// Tokens chosen by the backend (rules applied where the logits are) are the ones the host
// chooses from downloaded logits, placeholders of rounded steps dropped.
TEST_F(EngineTest, TokensChosenByTheBackendAreTheHostsChoices) {
  const int batch = 5;
  const auto states = model_->encode(distinct_windows(batch, -0.4f), batch);
  decode::DecodingRules rules;
  rules.suppress_tokens = {7, 11};
  rules.begin_suppress_tokens = {kSyntheticEndOfText};
  rules.timestamps = true;
  rules.end_of_text = kSyntheticEndOfText;
  rules.no_timestamps = kSyntheticNoTimestamps;
  rules.timestamp_begin = kSyntheticNoTimestamps + 1;
  const std::vector<std::uint8_t> flags = decode::token_flags(rules, kSyntheticVocabSize);
  const engine::TokenId sot = kSyntheticStartOfTranscript;
  std::vector<engine::TokenId> prompt;
  for (int b = 0; b < batch; ++b)
    prompt.insert(prompt.end(), {sot, sot + 1});
  const std::vector<int> all = {0, 1, 2, 3, 4}, some = {1, 3, 4};
  engine::DecoderSession on_host(*model_, states), on_backend(*model_, states, true);
  on_host.forward(prompt, 2, all, engine::LogitRows::kLast);
  on_backend.forward(prompt, 2, all, engine::LogitRows::kLast);
  std::vector<std::vector<engine::TokenId>> generated(batch);
  for (const auto& items : {all, some, some}) {
    std::vector<engine::TokenId> tokens;
    std::vector<backend::RowRules> row_rules;
    for (const int b : items) {
      tokens.push_back(generated[static_cast<std::size_t>(b)].empty()
                           ? 40 + b
                           : generated[static_cast<std::size_t>(b)].back());
      row_rules.push_back(decode::row_rules(rules, generated[static_cast<std::size_t>(b)]));
    }
    std::vector<float> logits = on_host.forward(tokens, 1, items, engine::LogitRows::kLast);
    const auto chosen = on_backend.choose(tokens, items, flags, row_rules);
    ASSERT_EQ(chosen.size(), items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      std::span<float> row(logits.data() + i * kSyntheticVocabSize, kSyntheticVocabSize);
      auto& seq = generated[static_cast<std::size_t>(items[i])];
      decode::apply_rules(rules, seq, row);
      const engine::TokenId expected = decode::argmax(row);
      EXPECT_EQ(chosen[i].token, expected) << "item " << items[i];
      EXPECT_DOUBLE_EQ(chosen[i].logprob, decode::log_probability(row, expected));
      seq.push_back(expected);
    }
  }
  EXPECT_IFW_ERROR(on_backend.choose(std::vector<engine::TokenId>{40}, std::vector<int>{0}, flags,
                                     std::vector<backend::RowRules>(2)),
                   "2 rules for 1 items");
}

TEST_F(EngineTest, GreedyStopsAtTheLengthLimit) {
  const auto states = model_->encode(mel(1), 1);
  decode::GreedyOptions o;
  o.prompt = {kSyntheticStartOfTranscript};
  o.max_new_tokens = 5;
  o.no_speech_token = kSyntheticNoTimestamps - 1;
  const auto r = decode::greedy_decode(*model_, states, o)[0];
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_FALSE(r.ended);
  EXPECT_GT(r.no_speech_prob, 0.0);
  EXPECT_LT(r.sum_logprob, 0.0);
  o.prompt.clear();
  EXPECT_IFW_ERROR(decode::greedy_decode(*model_, states, o), "needs a prompt");
}

TEST(RandomWeights, DeterministicAndScaled) {
  engine::RandomWeights a(1), b(1), c(2);
  const auto x = a.read("model.encoder.layers.0.fc1.weight", {16, 64});
  EXPECT_EQ(x, b.read("model.encoder.layers.0.fc1.weight", {16, 64}));
  EXPECT_NE(x, c.read("model.encoder.layers.0.fc1.weight", {16, 64}));
  for (const float v : x)
    ASSERT_LE(std::fabs(v), std::sqrt(3.0f / 64.0f));
  const auto norm = a.read("model.encoder.layer_norm.weight", {8});
  for (const float v : norm)
    ASSERT_NEAR(v, 1.0f, 0.11f);
  EXPECT_FALSE(a.has("proj_out.weight"));
}

TEST(Benchmark, ArchitecturesAndArguments) {
  EXPECT_EQ(engine::published_architecture("large-v3").num_mel_bins, 128);
  EXPECT_EQ(engine::published_architecture("large-v3-turbo").decoder_layers, 4);
  EXPECT_EQ(engine::published_architecture("base").d_model, 512);
  EXPECT_IFW_ERROR(engine::published_architecture("huge"), "unknown architecture \"huge\"");
  engine::BenchmarkOptions o;
  o.device = "tpu";
  EXPECT_IFW_ERROR(engine::run_benchmark(o), "--device tpu: unknown device");
  o.device = "cpu";
  o.batch = 0;
  EXPECT_IFW_ERROR(engine::run_benchmark(o), "batch must be 1 to 256");
}

}  // namespace
}  // namespace ifw::test
