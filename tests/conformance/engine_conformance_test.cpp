// The engine against the reference implementation's outputs, for every model of the corpus:
// encoder states, teacher-forced logits, alignment-head cross-attention, greedy generation with
// and without timestamps, token timestamps and language detection.
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ifw/audio.hpp>

#include "backend/backend.hpp"
#include "backend/dtype.hpp"
#include "decode/greedy.hpp"
#include "decode/language_detection.hpp"
#include "decode/sequential.hpp"
#include "decode/token_timestamps.hpp"
#include "engine/whisper_model.hpp"
#include "model/model_folder.hpp"
#include "support/golden.hpp"
#include "support/test_backend.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

constexpr int kFrames = 1500;

struct Loaded {
  std::unique_ptr<model::ModelFolder> folder;
  std::unique_ptr<backend::Backend> backend;
  std::unique_ptr<engine::WhisperModel> model;
  nlohmann::json golden;
  std::filesystem::path reference;
  std::vector<float> mel;
  backend::Tensor encoded;  // the reference mel through our encoder
};

std::map<std::string, std::unique_ptr<Loaded>>& loaded_models() {
  static std::map<std::string, std::unique_ptr<Loaded>> models;
  return models;
}

// The models (and a GPU backend's device memory) go when the tests end, before static
// destruction, while the CUDA runtime is still up.
class ReleaseLoadedModels : public ::testing::Environment {
 public:
  void TearDown() override { loaded_models().clear(); }
};
// GoogleTest owns the environments it is given.
[[maybe_unused]] const ::testing::Environment* const kReleaseLoadedModels =
    ::testing::AddGlobalTestEnvironment(new ReleaseLoadedModels);

// Models are loaded once per test program: every test of a model shares them. Kept only once
// whole: a load that failed (a GPU that cannot be used) fails each test that asks again, instead
// of leaving half a model for the next test to crash on.
Loaded& loaded(const std::string& name) {
  auto& kept = loaded_models()[name];
  if (!kept) {
    auto slot = std::make_unique<Loaded>();
    slot->folder = std::make_unique<model::ModelFolder>(*golden_dir() / "models" / name);
    slot->backend = make_test_backend(2);
    std::cout << "[ engine on " << test_device_name() << " ]\n";
    engine::CheckpointWeights weights(slot->folder->checkpoint());
    slot->model =
        std::make_unique<engine::WhisperModel>(slot->folder->config(), weights, *slot->backend);
    slot->reference = *golden_dir() / "reference" / name;
    slot->golden = util::read_json_file(slot->reference / "golden.json");
    slot->mel =
        read_f32_file(*golden_dir() / "reference" / slot->golden.at("mel").get<std::string>());
    slot->encoded = slot->model->encode(slot->mel, 1);
    kept = std::move(slot);
  }
  return *kept;
}

// The corpus's models that have reference outputs.
std::vector<std::string> models_with_references() {
  std::vector<std::string> names;
  for (const auto& n : golden_model_names()) {
    if (std::filesystem::exists(*golden_dir() / "reference" / n / "golden.json"))
      names.push_back(n);
  }
  return names;
}

// The largest ||actual - expected|| / ||expected|| over rows of `width`.
double worst_row_error(const std::vector<float>& actual, const std::vector<float>& expected,
                       std::size_t width) {
  double worst = 0.0;
  for (std::size_t r = 0; r * width < expected.size(); ++r) {
    double diff = 0.0, norm = 0.0;
    for (std::size_t i = r * width; i < (r + 1) * width; ++i) {
      diff += (actual[i] - expected[i]) * static_cast<double>(actual[i] - expected[i]);
      norm += static_cast<double>(expected[i]) * expected[i];
    }
    worst = std::max(worst, std::sqrt(diff / norm));
  }
  return worst;
}

// Every row of `actual` within `tolerance` of `expected` relative to the row's norm, with the
// same largest entry. In half precision the largest entry may differ where the reference's margin
// is too small for the difference measured: the reference's value at our largest entry is within
// twice the row's difference norm of its own largest (no closer result could tell them apart).
void expect_rows_close(const std::vector<float>& actual, const std::vector<float>& expected,
                       std::size_t width, double tolerance, const std::string& what) {
  const bool strict_argmax = exact_test_arithmetic();
  int ties = 0;
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0.0;
  for (std::size_t r = 0; r * width < actual.size(); ++r) {
    double diff = 0.0, norm = 0.0;
    std::size_t arg_a = 0, arg_e = 0;
    for (std::size_t i = 0; i < width; ++i) {
      const double a = actual[r * width + i], e = expected[r * width + i];
      diff += (a - e) * (a - e);
      norm += e * e;
      if (a > actual[r * width + arg_a]) arg_a = i;
      if (e > expected[r * width + arg_e]) arg_e = i;
    }
    const double rel = std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, tolerance) << what << " row " << r;
    if (strict_argmax || arg_a == arg_e) {
      EXPECT_EQ(arg_a, arg_e) << what << " row " << r << ": argmax differs";
    } else {
      const double margin = expected[r * width + arg_e] - expected[r * width + arg_a];
      EXPECT_LE(margin, 2.0 * std::sqrt(diff))
          << what << " row " << r << ": argmax differs with a margin of " << margin;
      ++ties;
    }
  }
  std::cout << "[ " << what << " ] worst row ||diff||/||ref|| = " << worst;
  if (ties > 0) std::cout << " (" << ties << " rows with a near tie decided the other way)";
  std::cout << "\n";
}

std::vector<decode::TokenId> ints(const nlohmann::json& j) {
  return j.get<std::vector<decode::TokenId>>();
}

// Weight matrices rounded through a half-precision format (biases, norms and positions stay
// float32): what the CUDA backend computes from in that format.
class RoundedWeights final : public engine::WeightSource {
 public:
  RoundedWeights(engine::WeightSource& inner, backend::DType type) : inner_(inner), type_(type) {}
  std::vector<float> read(const std::string& name, const backend::Shape& shape) override {
    auto values = inner_.read(name, shape);
    if (shape.size() >= 2 && name.find("embed_positions") == std::string::npos) {
      for (float& v : values) {
        v = type_ == backend::DType::kF16
                ? backend::half_to_float(backend::float_to_half(v))
                : backend::bfloat16_to_float(backend::float_to_bfloat16(v));
      }
    }
    return values;
  }
  bool has(const std::string& name) const override { return inner_.has(name); }

 private:
  engine::WeightSource& inner_;
  backend::DType type_;
};

class EngineConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == kNoCorpus) {
      GTEST_SKIP() << "reference corpus not found: set IFW_GOLDEN_DIR or check out ../shared "
                      "beside the project";
    }
  }
  Loaded& m() { return loaded(GetParam()); }

  // The decoding rules generate() applies, from the model folder's generation config.
  decode::DecodingRules rules(bool timestamps) {
    const auto& g = m().folder->generation();
    const auto& sp = m().folder->tokenizer().specials();
    decode::DecodingRules r;
    r.suppress_tokens.assign(g.suppress_tokens->begin(), g.suppress_tokens->end());
    r.begin_suppress_tokens.assign(g.begin_suppress_tokens->begin(),
                                   g.begin_suppress_tokens->end());
    r.timestamps = timestamps;
    r.end_of_text = sp.end_of_text;
    r.no_timestamps = sp.no_timestamps;
    r.timestamp_begin = sp.timestamp_begin;
    r.max_initial_timestamp_index = g.max_initial_timestamp_index;
    return r;
  }
  std::vector<decode::TokenId> prompt(bool timestamps) {
    const auto& sp = m().folder->tokenizer().specials();
    std::vector<decode::TokenId> p = {sp.start_of_transcript,
                                      *m().folder->tokenizer().language_token("en"), sp.transcribe};
    if (!timestamps) p.push_back(sp.no_timestamps);
    return p;
  }
  decode::GreedyOptions options(bool timestamps, const decode::DecodingRules& r) {
    decode::GreedyOptions o;
    o.prompt = prompt(timestamps);
    o.max_new_tokens = 40;  // as the reference's generate(max_new_tokens=40)
    o.rules = &r;
    o.end_tokens = *m().folder->generation().eos_token_ids;
    return o;
  }
  std::vector<float> teacher_forced(const std::vector<decode::TokenId>& tokens,
                                    engine::AlignmentCapture* capture = nullptr) {
    engine::DecoderSession session(*m().model, m().encoded);
    const int item = 0;
    return session.forward(tokens, static_cast<int>(tokens.size()), std::span(&item, 1),
                           engine::LogitRows::kAll, capture);
  }
  // The reference's teacher-forced text: its logits and its alignment heads' cross-attention
  // against what was computed for it (`how` names the way in messages).
  void expect_teacher_forced_text(const std::vector<float>& logits,
                                  const engine::AlignmentCapture& capture, std::size_t tokens,
                                  const std::string& how) {
    const auto& tf = m().golden.at("teacher_forced_text");
    expect_rows_close(logits,
                      read_f32_file(m().reference / tf.at("logits_file").get<std::string>()),
                      static_cast<std::size_t>(m().model->config().vocab_size),
                      reference_tolerance(), "teacher-forced text logits" + how);
    const auto expected =
        read_f32_file(m().reference / tf.at("cross_attn_file").get<std::string>());
    std::vector<float> actual;
    ASSERT_EQ(capture.weights.size(), 1u);
    for (const auto& head : capture.weights[0])
      actual.insert(actual.end(), head.begin(), head.end());
    ASSERT_EQ(actual.size(), capture.heads.size() * tokens * kFrames);
    expect_rows_close(actual, expected, kFrames, reference_tolerance(),
                      "alignment cross-attention" + how);
  }
};

TEST_P(EngineConformance, EncoderOutput) {
  const auto expected = read_f32_file(m().reference / "encoder_out.f32");
  expect_rows_close(to_host(*m().backend, m().encoded), expected,
                    static_cast<std::size_t>(m().model->config().d_model), reference_tolerance(),
                    "encoder");
}

// What rounding the weights to half precision alone costs, on the CPU in float32: the floor
// under any half-precision engine's difference from the float32 reference.
TEST_P(EngineConformance, HalfPrecisionWeightsOnTheCpu) {
  const auto expected = read_f32_file(m().reference / "encoder_out.f32");
  for (const backend::DType type : {backend::DType::kF16, backend::DType::kBF16}) {
    const auto cpu = backend::make_cpu_backend(2);
    engine::CheckpointWeights weights(m().folder->checkpoint());
    RoundedWeights rounded(weights, type);
    const engine::WhisperModel model(m().folder->config(), rounded, *cpu);
    const auto encoded = to_host(*cpu, model.encode(m().mel, 1));
    const double worst =
        worst_row_error(encoded, expected, static_cast<std::size_t>(model.config().d_model));
    std::cout << "[ encoder with " << backend::dtype_name(type)
              << " weights on the cpu ] worst row ||diff||/||ref|| = " << worst << "\n";
    if (type == backend::DType::kF16) {
      EXPECT_LE(worst, 5e-3);
    }
  }
}

TEST_P(EngineConformance, TeacherForcedLogits) {
  const auto& pa = m().golden.at("plain_argmax");
  auto tokens = ints(pa.at("tokens"));
  const auto expected = read_f32_file(m().reference / pa.at("logits_file").get<std::string>());
  const auto rows = static_cast<std::size_t>(pa.at("logits_shape")[0].get<int>());
  tokens.resize(rows);
  expect_rows_close(teacher_forced(tokens), expected,
                    static_cast<std::size_t>(m().model->config().vocab_size), reference_tolerance(),
                    "teacher-forced logits");
}

TEST_P(EngineConformance, TeacherForcedTextLogitsAndAlignmentAttention) {
  const auto& tf = m().golden.at("teacher_forced_text");
  const auto tokens = ints(tf.at("tokens"));
  engine::AlignmentCapture capture;
  capture.heads = *m().folder->generation().alignment_heads;
  expect_teacher_forced_text(teacher_forced(tokens, &capture), capture, tokens.size(), "");
}

// The same text fed as decoding feeds it, a token a step (single-token steps take other kernels
// than a whole sequence at once: the decoding kernels).
TEST_P(EngineConformance, TeacherForcedTextStepByStep) {
  const auto& tf = m().golden.at("teacher_forced_text");
  const auto tokens = ints(tf.at("tokens"));
  engine::AlignmentCapture capture;
  capture.heads = *m().folder->generation().alignment_heads;
  engine::DecoderSession session(*m().model, m().encoded);
  const int item = 0;
  std::vector<float> logits;
  for (const decode::TokenId token : tokens) {
    const auto row = session.forward(std::span(&token, 1), 1, std::span(&item, 1),
                                     engine::LogitRows::kLast, &capture);
    logits.insert(logits.end(), row.begin(), row.end());
  }
  expect_teacher_forced_text(logits, capture, tokens.size(), " step by step");
}

TEST_P(EngineConformance, PlainArgmax) {
  const auto& pa = m().golden.at("plain_argmax");
  const auto expected = ints(pa.at("tokens"));
  decode::GreedyOptions o;
  o.prompt = ints(pa.at("prompt"));
  o.max_new_tokens = static_cast<int>(expected.size() - o.prompt.size());
  const auto results = decode::greedy_decode(*m().model, m().encoded, o);
  std::vector<decode::TokenId> all = o.prompt;
  all.insert(all.end(), results[0].tokens.begin(), results[0].tokens.end());
  EXPECT_EQ(all, expected);
}

// The reference's generate() decodes a 30 s input window after window: when a window's text
// stops inside a segment, it decodes again from the last segment's end (tiny-random-v3 does).
TEST_P(EngineConformance, GenerateWithoutTimestamps) {
  const auto r = rules(false);
  const auto passes =
      decode::decode_sequential(*m().model, m().mel, kFramesPerWindow, options(false, r),
                                m().folder->tokenizer().specials().timestamp_begin);
  EXPECT_EQ(decode::concatenated_tokens(passes), ints(m().golden.at("generate_no_timestamps")));
}

TEST_P(EngineConformance, GenerateWithTimestamps) {
  const auto r = rules(true);
  const auto passes =
      decode::decode_sequential(*m().model, m().mel, kFramesPerWindow, options(true, r),
                                m().folder->tokenizer().specials().timestamp_begin);
  EXPECT_EQ(decode::concatenated_tokens(passes), ints(m().golden.at("generate_timestamps")));
}

// The reference reports the token timestamps of its last decoding pass.
TEST_P(EngineConformance, TokenTimestamps) {
  const auto& tt = m().golden.at("token_timestamps");
  const auto expected = tt.at("token_timestamps").get<std::vector<double>>();
  const auto r = rules(false);
  auto o = options(false, r);
  o.alignment_heads = *m().folder->generation().alignment_heads;
  const auto passes = decode::decode_sequential(*m().model, m().mel, kFramesPerWindow, o,
                                                m().folder->tokenizer().specials().timestamp_begin);
  const decode::GreedyResult& last = passes.back().result;
  std::vector<decode::TokenId> sequence = o.prompt;
  sequence.insert(sequence.end(), last.tokens.begin(), last.tokens.end());
  ASSERT_EQ(sequence, ints(tt.at("sequences")));
  const auto times =
      decode::pass_token_timestamps(last.alignment, static_cast<int>(o.prompt.size()), kFrames,
                                    m().model->config().median_filter_width);
  ASSERT_EQ(times.size(), expected.size());
  std::size_t within_a_frame = 0;
  for (std::size_t i = 0; i < times.size(); ++i) {
    if (std::abs(std::lround(times[i] / 0.02) - std::lround(expected[i] / 0.02)) <= 1)
      ++within_a_frame;
  }
  if (test_precision() == backend::DType::kBF16) {
    // bfloat16's rounding can move the alignment's path across nearly uniform attention (the
    // random golden models have no real alignment): most tokens must still land within a frame.
    EXPECT_GE(within_a_frame * 10, times.size() * 9) << within_a_frame << " of " << times.size();
    return;
  }
  for (std::size_t i = 0; i < times.size(); ++i) {
    // Multiples of 0.02 s (the reference stores them as float32). In half precision the
    // alignment's path may move by one frame where two frames' weights nearly tie.
    const long frames = std::lround(times[i] / 0.02),
               expected_frames = std::lround(expected[i] / 0.02);
    if (exact_test_arithmetic()) {
      EXPECT_EQ(frames, expected_frames) << "token " << i;
    } else {
      EXPECT_LE(std::abs(frames - expected_frames), 1) << "token " << i;
    }
  }
}

TEST_P(EngineConformance, LanguageDetection) {
  const auto& tok = m().folder->tokenizer();
  const auto probs = decode::detect_language(
      *m().model, m().encoded, tok.specials().start_of_transcript, tok.specials().languages)[0];
  const auto& expected = m().golden.at("language_detection");
  ASSERT_GE(probs.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(probs[i].code, expected[i][0].get<std::string>()) << "rank " << i;
    EXPECT_NEAR(probs[i].probability, expected[i][1].get<double>(), reference_tolerance())
        << "rank " << i;
  }
}

// Three different windows in one call give what each gives alone.
TEST_P(EngineConformance, BatchingIsExact) {
  const auto pcm = read_f32_file(*golden_dir() / "reference" / "jfk_16k.f32");
  std::vector<float> shifted(pcm.begin() + 16000, pcm.end());  // the same speech, 1 s earlier
  std::vector<float> tone(16000 * 20);
  for (std::size_t i = 0; i < tone.size(); ++i)
    tone[i] = 0.2f * std::sin(0.05f * static_cast<float>(i));
  const int n_mels = m().model->config().num_mel_bins;
  std::vector<std::vector<float>> windows = {log_mel_spectrogram(pcm, n_mels),
                                             log_mel_spectrogram(shifted, n_mels),
                                             log_mel_spectrogram(tone, n_mels)};
  std::vector<float> all;
  for (const auto& w : windows)
    all.insert(all.end(), w.begin(), w.end());

  backend::Backend& be = *m().backend;
  const backend::Tensor batched = m().model->encode(all, 3);
  const auto batched_host = to_host(be, batched);
  const auto r = rules(true);
  auto o = options(true, r);
  o.alignment_heads = *m().folder->generation().alignment_heads;
  const auto batched_results = decode::greedy_decode(*m().model, batched, o);
  const std::size_t per_window = batched_host.size() / 3;
  const bool half = test_precision() != backend::DType::kF32;
  for (std::size_t w = 0; w < 3; ++w) {
    const backend::Tensor alone = m().model->encode(windows[w], 1);
    const auto alone_host = to_host(be, alone);
    double worst = 0.0;
    for (std::size_t i = 0; i < per_window; ++i) {
      worst = std::max(
          worst, static_cast<double>(std::fabs(alone_host[i] - batched_host[w * per_window + i])));
    }
    // Exact on the CPU; a GPU's products may take other paths for other batch sizes.
    EXPECT_LE(worst, half ? 2e-2 : 1e-5) << "window " << w << ": encoder states differ in a batch";
    const auto single = decode::greedy_decode(*m().model, alone, o)[0];
    EXPECT_EQ(single.tokens, batched_results[w].tokens) << "window " << w;
    EXPECT_NEAR(single.sum_logprob, batched_results[w].sum_logprob, half ? 1e-2 : 1e-4)
        << "window " << w;
    ASSERT_EQ(single.alignment.size(), batched_results[w].alignment.size());
    for (std::size_t h = 0; h < single.alignment.size(); ++h) {
      ASSERT_EQ(single.alignment[h].size(), batched_results[w].alignment[h].size());
      for (std::size_t i = 0; i < single.alignment[h].size(); ++i) {
        ASSERT_NEAR(single.alignment[h][i], batched_results[w].alignment[h][i], half ? 1e-2 : 1e-5)
            << "window " << w;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Corpus, EngineConformance,
                         ::testing::ValuesIn(corpus_params(models_with_references())),
                         [](const auto& param_info) { return test_name(param_info.param); });

}  // namespace
}  // namespace ifw::test
