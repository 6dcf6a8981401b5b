// Windows cut from a stream of samples, voice activity, the window sources of the two strategies,
// words from tokens, the audio decoder, atomic writes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include <ifw/audio.hpp>

#include "audio/audio_decoder.hpp"
#include "audio/log_mel.hpp"
#include "engine/weight_source.hpp"
#include "model/tokenizer/tokenizer.hpp"
#include "pipeline/batch_size.hpp"
#include "pipeline/chunker.hpp"
#include "pipeline/job_source.hpp"
#include "pipeline/voice_activity.hpp"
#include "pipeline/window_features.hpp"
#include "pipeline/window_source.hpp"
#include "pipeline/words.hpp"
#include "support/delegating_backend.hpp"
#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"
#include "support/wav_files.hpp"
#include "util/atomic_file.hpp"

namespace ifw::test {
namespace {

// Speech-like bursts (a tone) with a silent gap every `period` seconds.
std::vector<float> bursts(double seconds, double period, double gap) {
  std::vector<float> s(static_cast<std::size_t>(seconds * kSampleRate));
  for (std::size_t i = 0; i < s.size(); ++i) {
    const double t = static_cast<double>(i) / kSampleRate;
    const bool silent = std::fmod(t, period) > period - gap;
    s[i] = silent ? 0.0f : 0.3f * static_cast<float>(std::sin(2 * 3.14159 * 300 * t));
  }
  return s;
}

std::vector<pipeline::AudioWindow> chunk(const std::vector<float>& samples) {
  std::size_t pos = 0;
  pipeline::Chunker chunker([&](std::span<float> out) {
    const std::size_t n = std::min(out.size(), samples.size() - pos);
    std::copy_n(samples.begin() + static_cast<std::ptrdiff_t>(pos), n, out.begin());
    pos += n;
    return n;
  });
  std::vector<pipeline::AudioWindow> windows;
  while (auto w = chunker.next())
    windows.push_back(std::move(*w));
  return windows;
}

TEST(Chunker, WindowsCoverEverySampleOnceAndCutInSilence) {
  const auto samples = bursts(100.0, 7.0, 0.5);
  const auto windows = chunk(samples);
  ASSERT_GE(windows.size(), 4u);
  std::int64_t expected_start = 0;
  for (std::size_t i = 0; i < windows.size(); ++i) {
    const auto& w = windows[i];
    EXPECT_EQ(w.start_sample, expected_start);
    EXPECT_LE(w.samples.size(), kWindowSamples);
    EXPECT_EQ(std::memcmp(w.samples.data(), samples.data() + w.start_sample,
                          w.samples.size() * sizeof(float)),
              0);
    expected_start += static_cast<std::int64_t>(w.samples.size());
    EXPECT_EQ(w.last, i + 1 == windows.size());
    if (!w.last) {
      // The cut falls in one of the silent gaps.
      EXPECT_EQ(samples[static_cast<std::size_t>(expected_start)], 0.0f) << "window " << i;
      EXPECT_GE(w.samples.size(), kWindowSamples - 5 * kSampleRate);
    }
  }
  EXPECT_EQ(expected_start, static_cast<std::int64_t>(samples.size()));
}

TEST(Chunker, ShortAndEmptyStreams) {
  const auto one = chunk(std::vector<float>(1000, 0.1f));
  ASSERT_EQ(one.size(), 1u);
  EXPECT_TRUE(one[0].last);
  EXPECT_TRUE(chunk({}).empty());
  const auto exact = chunk(std::vector<float>(kWindowSamples, 0.1f));
  ASSERT_EQ(exact.size(), 1u);
  EXPECT_TRUE(exact[0].last);
}

// `seconds` of a 300 Hz tone at `amplitude` (0: digital silence).
std::vector<float> tone(double seconds, float amplitude) {
  std::vector<float> s(static_cast<std::size_t>(seconds * kSampleRate));
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] = amplitude *
           static_cast<float>(std::sin(2 * 3.14159 * 300 * static_cast<double>(i) / kSampleRate));
  return s;
}

std::vector<float> concat(std::initializer_list<std::vector<float>> parts) {
  std::vector<float> all;
  for (const auto& p : parts)
    all.insert(all.end(), p.begin(), p.end());
  return all;
}

// Deterministic white noise at `amplitude`.
std::vector<float> noise(double seconds, float amplitude) {
  std::vector<float> s(static_cast<std::size_t>(seconds * kSampleRate));
  std::uint32_t x = 12345;
  for (float& v : s) {
    x = x * 1664525u + 1013904223u;
    v = amplitude * (static_cast<float>(x >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f);
  }
  return s;
}

TEST(VoiceActivity, FindsSpeechAfterSilenceWithPadding) {
  const pipeline::VoiceActivity vad;
  const auto s = concat({tone(5.0, 0.0f), tone(2.0, 0.3f), tone(3.0, 0.0f)});
  const std::size_t start = vad.first_speech(s, 0);
  EXPECT_EQ(start, static_cast<std::size_t>(4.7 * kSampleRate));  // 0.3 s of padding
  // From inside the speech on, speech starts where asked.
  EXPECT_EQ(vad.first_speech(s, 6 * kSampleRate), 6u * kSampleRate);
  // Nothing after the speech.
  EXPECT_EQ(vad.first_speech(s, static_cast<std::size_t>(7.5 * kSampleRate)), s.size());
  EXPECT_TRUE(vad.has_speech(s));
}

TEST(VoiceActivity, SilenceAndQuietNoiseHaveNoSpeech) {
  const pipeline::VoiceActivity vad;
  EXPECT_FALSE(vad.has_speech(tone(30.0, 0.0f)));
  EXPECT_FALSE(vad.has_speech(noise(30.0, 0.0005f)));  // about -70 dBFS: a quiet room
  EXPECT_FALSE(vad.has_speech({}));
  EXPECT_FALSE(vad.has_speech(tone(0.01, 0.3f)));  // shorter than a frame
}

TEST(VoiceActivity, SpeechOverNoiseAndUniformLoudAudio) {
  const pipeline::VoiceActivity vad;
  // Speech well above a noise floor: found where it starts, not at the noise.
  auto s = concat({noise(10.0, 0.003f), tone(2.0, 0.3f)});
  const auto n = noise(12.0, 0.003f);
  for (std::size_t i = 0; i < s.size(); ++i)
    s[i] += n[i];
  EXPECT_NEAR(static_cast<double>(vad.first_speech(s, 0)) / kSampleRate, 9.7, 0.03);
  // Audio loud all through (music, speech without pauses) counts as speech from the start.
  EXPECT_EQ(vad.first_speech(noise(20.0, 0.2f), 0), 0u);
}

class WindowSources : public ::testing::Test {
 protected:
  // The samples' reader, through a WAV file and the decoder.
  pipeline::Chunker::Reader open(const std::vector<float>& samples) {
    write_file(dir_ / "a.wav", wav_of(samples));
    decoder_ = std::make_unique<audio::AudioDecoder>((dir_ / "a.wav").string());
    return [d = decoder_.get()](std::span<float> out) { return d->read(out); };
  }
  TempDir dir_;
  std::unique_ptr<audio::AudioDecoder> decoder_;
};

TEST_F(WindowSources, ChunkedSkipsSilentStretchesWithVoiceActivity) {
  // Speech-like bursts, 70 s of silence, bursts again.
  const auto samples = concat({bursts(20.0, 7.0, 0.5), tone(70.0, 0.0f), bursts(20.0, 7.0, 0.5)});
  const pipeline::VoiceActivity vad;
  for (const bool with_vad : {false, true}) {
    auto source = pipeline::chunked_windows(open(samples), with_vad ? &vad : nullptr);
    std::vector<pipeline::AudioWindow> windows;
    while (auto w = source->next())
      windows.push_back(std::move(*w));
    EXPECT_TRUE(source->exhausted());
    EXPECT_EQ(source->samples_read(), static_cast<std::int64_t>(samples.size()));
    std::int64_t covered = 0;
    for (const auto& w : windows) {
      covered += static_cast<std::int64_t>(w.samples.size());
      // Every window holds the file's samples from where it starts.
      EXPECT_NEAR(w.samples[w.samples.size() / 2],
                  samples[static_cast<std::size_t>(w.start_sample) + w.samples.size() / 2],
                  1.0f / 16384);
      if (with_vad) {
        const double start = static_cast<double>(w.start_sample) / kSampleRate;
        EXPECT_TRUE(start < 20.0 || start >= 89.6) << "a window starts in silence at " << start;
      }
    }
    if (with_vad) {
      EXPECT_LT(covered, static_cast<std::int64_t>(samples.size()) - 30 * kSampleRate);
    } else {
      EXPECT_EQ(covered, static_cast<std::int64_t>(samples.size()));
    }
  }
}

TEST_F(WindowSources, SeekingStartsWhereTheLastWindowsTextEnded) {
  const auto samples = bursts(75.0, 7.0, 0.5);
  auto source = pipeline::seeking_windows(open(samples), nullptr);
  auto w = source->next();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->start_sample, 0);
  EXPECT_EQ(w->samples.size(), kWindowSamples);
  EXPECT_FALSE(source->next()) << "the next window waits for this one's text";
  EXPECT_FALSE(source->exhausted());
  source->done(w->start_sample, w->samples.size(), 2000);  // its text reached 20 s
  w = source->next();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->start_sample, 20 * kSampleRate);
  EXPECT_NEAR(w->samples[100], samples[20 * kSampleRate + 100], 1.0f / 16384);
  source->done(w->start_sample, w->samples.size(), 3000);  // all of it
  w = source->next();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->start_sample, 50 * kSampleRate);
  EXPECT_EQ(w->samples.size(), 25u * kSampleRate);  // the rest of the file
  EXPECT_TRUE(w->last);
  source->done(w->start_sample, w->samples.size(), 2500);
  EXPECT_FALSE(source->next());
  EXPECT_TRUE(source->exhausted());
  EXPECT_EQ(source->samples_read(), static_cast<std::int64_t>(samples.size()));
}

TEST_F(WindowSources, SeekingSkipsSilenceWithVoiceActivity) {
  const auto samples = concat({tone(65.0, 0.0f), tone(5.0, 0.3f), tone(40.0, 0.0f)});
  const pipeline::VoiceActivity vad;
  auto source = pipeline::seeking_windows(open(samples), &vad);
  auto w = source->next();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->start_sample, static_cast<std::int64_t>(64.7 * kSampleRate));
  source->done(w->start_sample, w->samples.size(), 600);  // the text ended after the tone
  EXPECT_FALSE(source->next()) << "only silence is left";
  EXPECT_TRUE(source->exhausted());
  // A window that consumed nothing still moves on (no endless loop on one spot).
  auto again = pipeline::seeking_windows(open(samples), nullptr);
  w = again->next();
  again->done(w->start_sample, w->samples.size(), 0);
  w = again->next();
  ASSERT_TRUE(w);
  EXPECT_GT(w->start_sample, 0);
}

TEST(Words, FromTokensWithTimes) {
  TempDir dir;
  write_json(dir / "tokenizer.json", synthetic_tokenizer_json());
  const auto tok = model::Tokenizer::from_tokenizer_json(dir / "tokenizer.json");
  // " the hello." then a timestamp, then end of text
  std::vector<model::TokenId> tokens = tok.encode(" the hello.");
  tokens.push_back(kSyntheticNoTimestamps + 10);
  tokens.push_back(kSyntheticEndOfText);
  std::vector<double> times;
  for (std::size_t i = 0; i < tokens.size(); ++i)
    times.push_back(1.0 + 0.1 * static_cast<double>(i));
  const auto words = pipeline::words_from_tokens(tok, tokens, times, false);
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0].text, " the");
  EXPECT_EQ(words[1].text, " hello.");  // punctuation stays with its word
  EXPECT_DOUBLE_EQ(words[0].start, 1.0);
  EXPECT_DOUBLE_EQ(words[0].end, words[1].start);
  // Characters split over tokens come out whole; languages without spaces split per character.
  const auto cjk = tok.encode("你好");
  std::vector<double> t2(cjk.size(), 2.0);
  const auto chars = pipeline::words_from_tokens(tok, cjk, t2, true);
  ASSERT_EQ(chars.size(), 2u);
  EXPECT_EQ(chars[0].text, "你");
  EXPECT_TRUE(pipeline::splits_on_characters("ja"));
  EXPECT_FALSE(pipeline::splits_on_characters("de"));
}

// A 16-bit PCM WAV file, 8 kHz stereo: a 440 Hz tone left, silence right.
std::string wav_bytes(double seconds) {
  const int rate = 8000, channels = 2;
  const auto frames = static_cast<std::uint32_t>(seconds * rate);
  std::string data;
  for (std::uint32_t i = 0; i < frames; ++i) {
    const auto left = static_cast<std::int16_t>(16000 * std::sin(2 * 3.14159265 * 440 * i / rate));
    const std::int16_t right = 0;
    data.append(reinterpret_cast<const char*>(&left), 2);
    data.append(reinterpret_cast<const char*>(&right), 2);
  }
  return wav_file(data, rate, channels);
}

TEST(AudioDecoder, ResamplesToSixteenKilohertzMono) {
  TempDir dir;
  write_file(dir / "tone.wav", wav_bytes(2.0));
  audio::AudioDecoder decoder((dir / "tone.wav").string());
  EXPECT_NEAR(decoder.duration_seconds(), 2.0, 1e-3);
  EXPECT_EQ(decoder.description(), "pcm_s16le, 8000 Hz, 2 channel(s)");
  std::vector<float> all, chunk(3001);
  for (std::size_t n; (n = decoder.read(chunk)) > 0;)
    all.insert(all.end(), chunk.begin(), chunk.begin() + n);
  EXPECT_NEAR(static_cast<double>(all.size()), 32000.0, 32.0);
  // FFmpeg's stereo-to-mono mix takes each channel at -3 dB: the tone peaks at 0.49 / sqrt(2).
  float peak = 0.0f;
  for (std::size_t i = 1000; i < all.size() - 1000; ++i)
    peak = std::max(peak, std::fabs(all[i]));
  EXPECT_NEAR(peak, 0.70710678f * 16000.0f / 32768.0f, 0.01f);
  EXPECT_EQ(decoder.read(chunk), 0u);
  EXPECT_EQ(decoder.damaged_packets(), 0);
}

// NaN, infinite or absurdly large samples (a damaged float file) would make their window's
// features NaN: they are read as silence, and the frame counts as damaged, so the transcript
// says it is incomplete.
TEST(AudioDecoder, DamagedFloatSamplesBecomeSilence) {
  for (const std::uint32_t rate : {16000u, 44100u}) {
    SCOPED_TRACE(rate);
    std::vector<float> samples(rate * 2);
    for (std::size_t i = 0; i < samples.size(); ++i)
      samples[i] = 0.25f * static_cast<float>(std::sin(2 * 3.14159265 * 300 * i / rate));
    for (std::size_t i = rate; i < rate + 100; ++i)
      samples[i] = i % 3 == 0   ? std::numeric_limits<float>::quiet_NaN()
                   : i % 3 == 1 ? -std::numeric_limits<float>::infinity()
                                : 1e30f;  // finite, but its power is not
    TempDir dir;
    write_file(dir / "nan.wav", float_wav_of(samples, rate));
    audio::AudioDecoder decoder((dir / "nan.wav").string());
    std::vector<float> all, chunk(4096);
    for (std::size_t n; (n = decoder.read(chunk)) > 0;)
      all.insert(all.end(), chunk.begin(), chunk.begin() + n);
    ASSERT_NEAR(static_cast<double>(all.size()), 32000.0, 32.0);
    EXPECT_TRUE(std::all_of(all.begin(), all.end(), [](float v) { return std::isfinite(v); }));
    EXPECT_GE(decoder.damaged_packets(), 1);
    // The tone around the damage is kept.
    EXPECT_NEAR(*std::max_element(all.begin(), all.begin() + 8000), 0.25f, 0.02f);
    EXPECT_NEAR(*std::max_element(all.end() - 8000, all.end()), 0.25f, 0.02f);
    // Transcribing it goes on: its features are finite.
    const auto mel = log_mel_spectrogram(all, 80);
    EXPECT_TRUE(std::all_of(mel.begin(), mel.end(), [](float v) { return std::isfinite(v); }));
  }
}

// A batch's features are one buffer the encoder reads as it is; windows from elsewhere or out
// of order are gathered; a window whose samples are refused keeps its error, the others are
// computed.
TEST(WindowFeatures, ReadInPlaceGatheredOrRefused) {
  auto extractor = std::make_shared<audio::LogMelSpectrogram>(80);
  std::vector<std::vector<float>> windows(3);
  for (std::size_t w = 0; w < windows.size(); ++w) {
    windows[w].resize(16000 * (w + 2));
    for (std::size_t i = 0; i < windows[w].size(); ++i)
      windows[w][i] = 0.1f * static_cast<float>(std::sin(0.01 * static_cast<double>(i * (w + 1))));
  }
  auto buffer = std::make_shared<pipeline::FeatureBuffer>(extractor, windows.size());
  for (std::size_t w = 0; w < windows.size(); ++w)
    buffer->compute(w, windows[w]);
  for (std::size_t w = 0; w < windows.size(); ++w) {
    EXPECT_TRUE(buffer->error(w).empty());
    const auto one = buffer->windows(w, 1);
    EXPECT_EQ(std::vector<float>(one.begin(), one.end()), log_mel_spectrogram(windows[w], 80));
  }

  backend::HostBuffer scratch;
  const std::vector<pipeline::FeatureRef> all = {{buffer, 0}, {buffer, 1}, {buffer, 2}};
  EXPECT_EQ(pipeline::gather_features(all, scratch).data(), buffer->windows(0, 3).data());
  const std::vector<pipeline::FeatureRef> tail = {{buffer, 1}, {buffer, 2}};
  EXPECT_EQ(pipeline::gather_features(tail, scratch).data(), buffer->windows(1, 2).data());
  EXPECT_TRUE(scratch.values().empty()) << "nothing was copied";

  const std::vector<pipeline::FeatureRef> reordered = {{buffer, 2}, {buffer, 0}};
  const auto gathered = pipeline::gather_features(reordered, scratch);
  ASSERT_EQ(gathered.size(), 2 * buffer->per_window());
  EXPECT_EQ(gathered.data(), scratch.values().data());
  const auto w2 = buffer->windows(2, 1), w0 = buffer->windows(0, 1);
  EXPECT_TRUE(std::equal(w2.begin(), w2.end(), gathered.begin()));
  EXPECT_TRUE(
      std::equal(w0.begin(), w0.end(), gathered.begin() + static_cast<std::ptrdiff_t>(w2.size())));

  auto refused = std::make_shared<pipeline::FeatureBuffer>(extractor, 2);
  std::vector<float> bad = windows[0];
  bad[100] = std::numeric_limits<float>::quiet_NaN();
  refused->compute(0, bad);
  refused->compute(1, windows[1]);
  EXPECT_NE(refused->error(0).find("not a finite number"), std::string::npos) << refused->error(0);
  const auto zeros = refused->windows(0, 1);  // what a refused window holds: never garbage
  EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));
  EXPECT_TRUE(refused->error(1).empty());
  EXPECT_IFW_ERROR(refused->compute(2, windows[0]), "window 2 in a buffer of 2");
  EXPECT_IFW_ERROR(pipeline::gather_features(std::vector<pipeline::FeatureRef>{{}}, scratch),
                   "a window without features");
}

// With a backend, a feature buffer's values are in the backend's memory for uploads (page-locked
// beside a GPU), and so are features gathered for a batch; each goes back when it goes.
TEST(WindowFeatures, LiveInTheBackendsMemoryForUploads) {
  class LendingBackend final : public test::DelegatingBackend {
   public:
    LendingBackend() : DelegatingBackend(backend::make_cpu_backend(1)) {}
    backend::HostBuffer host_buffer(std::size_t count) override {
      loans.push_back(std::make_unique<std::vector<float>>(count, -1.0f));
      return backend::HostBuffer(loans.back()->data(), count, [this] { ++given_back; });
    }
    std::vector<std::unique_ptr<std::vector<float>>> loans;
    int given_back = 0;
  };
  LendingBackend lender;
  auto extractor = std::make_shared<audio::LogMelSpectrogram>(80);
  std::vector<float> samples(16000, 0.0f);
  {
    auto buffer = std::make_shared<pipeline::FeatureBuffer>(extractor, 2, &lender);
    ASSERT_EQ(lender.loans.size(), 1u);
    const std::vector<float>& memory = *lender.loans[0];
    ASSERT_EQ(memory.size(), 2 * buffer->per_window());
    buffer->compute(1, samples);
    EXPECT_EQ(buffer->windows(0, 2).data(), memory.data());
    EXPECT_EQ(memory[buffer->per_window()], log_mel_spectrogram(samples, 80)[0]);

    backend::HostBuffer scratch;
    const std::vector<pipeline::FeatureRef> reordered = {{buffer, 1}, {buffer, 0}};
    const auto gathered = pipeline::gather_features(reordered, scratch, &lender);
    ASSERT_EQ(lender.loans.size(), 2u);
    EXPECT_EQ(gathered.data(), lender.loans[1]->data());
    EXPECT_EQ(gathered[0], memory[buffer->per_window()]);
    EXPECT_EQ(lender.given_back, 0);
  }
  EXPECT_EQ(lender.given_back, 2);
}

TEST(AudioDecoder, ClearErrors) {
  TempDir dir;
  EXPECT_IFW_ERROR(audio::AudioDecoder((dir / "none.wav").string()), "none.wav: no such file");
  EXPECT_IFW_ERROR(audio::AudioDecoder(dir.path().string()), "is a directory");
  write_file(dir / "empty.mp3", "");
  EXPECT_IFW_ERROR(audio::AudioDecoder((dir / "empty.mp3").string()),
                   "empty.mp3: the file is empty");
  write_file(dir / "text.wav", "not audio at all, just text\n");
  EXPECT_IFW_ERROR(audio::AudioDecoder((dir / "text.wav").string()),
                   "text.wav: not a readable audio or video file");
}

TEST(AtomicFile, ReplacesWholeAndLeavesNoTemporaryFiles) {
  TempDir dir;
  const auto path = dir / "out.srt";
  write_file(path, "old content");
  util::write_file_atomically(path, "new content");
  EXPECT_EQ(read_file(path), "new content");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path()))
    ++entries;
  EXPECT_EQ(entries, 1);
  EXPECT_IFW_ERROR(util::write_file_atomically(dir / "missing" / "x.txt", "x"), "missing/x.txt",
                   "cannot create");
  // A directory in the way: the write fails and what was there is untouched.
  std::filesystem::create_directory(dir / "taken");
  write_file(dir / "taken" / "keep", "kept");
  EXPECT_IFW_ERROR(util::write_file_atomically(dir / "taken", "x"), "taken", "cannot replace");
  EXPECT_EQ(read_file(dir / "taken" / "keep"), "kept");
}

}  // namespace
}  // namespace ifw::test

namespace ifw::test {
namespace {

TEST(JobSources, ListNumbersItsJobs) {
  pipeline::JobList list(
      {{"a.wav", std::nullopt, -1, nullptr}, {"b.wav", std::nullopt, 7, nullptr}});
  EXPECT_FALSE(list.finished());
  EXPECT_EQ(list.next(true)->id, 0);
  EXPECT_EQ(list.next(false)->id, 7);
  EXPECT_TRUE(list.finished());
  EXPECT_FALSE(list.next(true)) << "an empty list never blocks";
}

TEST(JobSources, QueueIsBoundedAndCloseWakesAWaitingRun) {
  pipeline::JobQueue queue(2);
  EXPECT_TRUE(queue.submit({"a.wav", std::nullopt, 1, nullptr}));
  EXPECT_TRUE(queue.submit({"b.wav", std::nullopt, 2, nullptr}));
  EXPECT_FALSE(queue.submit({"c.wav", std::nullopt, 3, nullptr})) << "full";
  EXPECT_EQ(queue.waiting(), 2u);
  EXPECT_EQ(queue.next(false)->path, "a.wav");
  EXPECT_EQ(queue.next(false)->path, "b.wav");
  EXPECT_FALSE(queue.next(false));
  EXPECT_FALSE(queue.finished()) << "more may come";

  std::optional<pipeline::Job> got;
  std::thread run([&] { got = queue.next(true); });  // waits for the next job
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(queue.submit({"d.wav", std::nullopt, 4, nullptr}));
  run.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, 4);

  std::thread waiting([&] { got = queue.next(true); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  queue.close();
  waiting.join();
  EXPECT_FALSE(got);
  EXPECT_TRUE(queue.finished());
  EXPECT_FALSE(queue.submit({"e.wav", std::nullopt, 5, nullptr})) << "closed";
}

// Batches planned from free memory (transcribe without --batch-size; a server's model on a GPU):
// large-v3 in float16 needs ~0.42 GB a window on a GPU, so half of an 80 GB card's memory is
// capped at 64 windows and half of 8 GB holds 9; never fewer than one window.
TEST(BatchSize, PlannedFromTheFreeMemory) {
  const model::WhisperConfig large = engine::published_architecture("large-v3");
  const double gpu = pipeline::bytes_per_window(large, 2.0, backend::Device::kCuda);
  EXPECT_NEAR(gpu, 0.419e9, 0.01e9);
  EXPECT_EQ(pipeline::windows_that_fit(80e9, 0.5, gpu, 64), 64);
  EXPECT_EQ(pipeline::windows_that_fit(8e9, 0.5, gpu, 64), 9);
  EXPECT_EQ(pipeline::windows_that_fit(0.1e9, 0.5, gpu, 64), 1);
  EXPECT_EQ(pipeline::windows_that_fit(std::numeric_limits<double>::quiet_NaN(), 0.5, gpu, 64), 1);
  EXPECT_EQ(pipeline::windows_that_fit(1e12, 0.25, gpu, 0), 1);
  // The CPU keeps float32 activations and every attention score of a window.
  EXPECT_NEAR(pipeline::bytes_per_window(large, 4.0, backend::Device::kCpu), 0.733e9, 0.01e9);
  const model::WhisperConfig tiny = engine::published_architecture("tiny");
  EXPECT_NEAR(pipeline::bytes_per_window(tiny, 2.0, backend::Device::kCuda), 41.9e6, 0.1e6);
}

}  // namespace
}  // namespace ifw::test
