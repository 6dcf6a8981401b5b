// `ifw transcribe` end to end: the reference's tokens from a real recording, any container, bad
// inputs among good ones, outputs that FFmpeg reads back, standard input, cancellation.
#include <chrono>
#include <cstring>
#include <limits>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "integration/run_ifw.hpp"
#include "support/audio_files.hpp"
#include "support/golden.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

// How long a stop may take: the step under way, the outputs written, and under the sanitizers
// LeakSanitizer's scan at exit (with another test beside it on two cores).
constexpr double kStopSeconds = kSanitized ? 6.0 : 2.0;

// A media file made by the ffmpeg program; skips the test when there is no ffmpeg.
#define REQUIRE_FFMPEG()                                                                \
  do {                                                                                  \
    if (!have_program("ffmpeg")) GTEST_SKIP() << "the ffmpeg program is not installed"; \
  } while (0)

void ffmpeg(const std::string& args) {
  ASSERT_EQ(run_shell("ffmpeg -nostdin -loglevel error -y " + args), 0) << args;
}

class GoldenTranscription : public ::testing::TestWithParam<std::string> {};

// The first segment holds exactly the reference's generate(return_timestamps=True) tokens.
TEST_P(GoldenTranscription, FirstSegmentIsTheReferencesTokens) {
  IFW_REQUIRE_GOLDEN();
  const TempDir out;
  const auto expected =
      util::read_json_file(*golden_dir() / "reference" / GetParam() / "golden.json")
          .at("generate_timestamps")
          .get<std::vector<int>>();
  const CliRun r = run_ifw({"transcribe", jfk(), "--model", golden_model(GetParam()), "--language",
                            "en", "-f", "verbose_json", "--max-new-tokens", "40", "-o",
                            out.path().string(), "--progress", "none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto v = util::read_json_file(out / "jfk.verbose.json");
  EXPECT_EQ(v.at("task"), "transcribe");
  EXPECT_EQ(v.at("language"), "english");
  EXPECT_DOUBLE_EQ(v.at("duration").get<double>(), 11.0);
  ASSERT_FALSE(v.at("segments").empty());
  EXPECT_EQ(v["segments"][0].at("tokens").get<std::vector<int>>(), expected);
  for (const char* key : {"id", "seek", "start", "end", "text", "temperature", "avg_logprob",
                          "compression_ratio", "no_speech_prob"}) {
    EXPECT_TRUE(v["segments"][0].contains(key)) << key;
  }
}

// The same audio inside an MP4 with a video stream (lossless ALAC audio) gives the same tokens.
TEST_P(GoldenTranscription, VideoContainerGivesTheSameTokens) {
  IFW_REQUIRE_GOLDEN();
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto video = (dir / "talk.mp4").string();
  ffmpeg("-f lavfi -i testsrc=size=64x64:rate=5 -i " + shell_quote(jfk()) +
         " -map 0:v -map 1:a -shortest -c:v mpeg4 -c:a alac " + shell_quote(video));
  const auto run = [&](const std::string& input, const std::string& name) {
    const CliRun r =
        run_ifw({"transcribe", input, "--model", golden_model(GetParam()), "--language", "en", "-f",
                 "verbose_json", "--max-new-tokens", "40", "-o", (dir / name).string(), "-q"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return util::read_json_file(dir / name /
                                (std::filesystem::path(input).stem().string() + ".verbose.json"));
  };
  const auto from_flac = run(jfk(), "a");
  const auto from_mp4 = run(video, "b");
  EXPECT_EQ(from_mp4["segments"][0]["tokens"], from_flac["segments"][0]["tokens"]);
}

INSTANTIATE_TEST_SUITE_P(Corpus, GoldenTranscription, ::testing::ValuesIn([] {
                           auto names = golden_model_names();
                           if (names.empty()) names.push_back("no_reference_corpus");
                           return names;
                         }()),
                         [](const auto& param_info) { return test_name(param_info.param); });

class Transcribe : public ::testing::Test {
 protected:
  void SetUp() override {
    IFW_REQUIRE_GOLDEN();
    model_ = golden_model("tiny-random-v3");
  }
  std::vector<std::string> args(std::vector<std::string> files,
                                const std::string& formats = "txt") {
    std::vector<std::string> a = {"transcribe"};
    a.insert(a.end(), files.begin(), files.end());
    for (const std::string& s :
         {std::string("--model"), model_, std::string("--language"), std::string("en"),
          std::string("-f"), formats, std::string("--max-new-tokens"), std::string("8"),
          std::string("-o"), out_.path().string(), std::string("--progress"), std::string("none"),
          std::string("--device"), std::string("cpu")}) {
      a.push_back(s);
    }
    return a;
  }
  std::string model_;
  TempDir out_;
  TempDir in_;
};

TEST_F(Transcribe, BadInputsFailClearlyAndTheOthersAreStillDone) {
  REQUIRE_FFMPEG();
  std::filesystem::create_directory(in_ / "folder");
  write_file(in_ / "empty.wav", "");
  write_file(in_ / "notes.wav", "these are not sounds\n");
  ffmpeg("-i " + shell_quote(jfk()) + " -t 6 -c:a libmp3lame " +
         shell_quote((in_ / "full.mp3").string()));
  const std::string full = read_file(in_ / "full.mp3");
  write_file(in_ / "cut.mp3", full.substr(0, full.size() / 4));
  ffmpeg("-f lavfi -i testsrc=size=32x32:rate=5 -t 1 -c:v mpeg4 " +
         shell_quote((in_ / "silent_film.mp4").string()));
  // Float samples, the last 1000 of them NaN (the data chunk ends the file).
  ffmpeg("-i " + shell_quote(jfk()) + " -t 3 -c:a pcm_f32le " +
         shell_quote((in_ / "nan.wav").string()));
  std::string nan_wav = read_file(in_ / "nan.wav");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (std::size_t i = 1; i <= 1000; ++i)
    std::memcpy(nan_wav.data() + nan_wav.size() - 4 * i, &nan, 4);
  write_file(in_ / "nan.wav", nan_wav);

  const CliRun r = run_ifw(
      args({(in_ / "missing.wav").string(), (in_ / "folder").string(), (in_ / "empty.wav").string(),
            (in_ / "notes.wav").string(), (in_ / "cut.mp3").string(),
            (in_ / "silent_film.mp4").string(), (in_ / "nan.wav").string(), jfk()}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "missing.wav: no such file"));
  EXPECT_TRUE(contains(r.err, "folder: is a directory"));
  EXPECT_TRUE(contains(r.err, "empty.wav: the file is empty"));
  EXPECT_TRUE(contains(r.err, "notes.wav: not a readable audio or video file"));
  EXPECT_TRUE(contains(r.err, "cut.mp3: the audio ends at"));
  EXPECT_TRUE(contains(r.err, "silent_film.mp4: has no audio stream"));
  // NaN samples were read as silence: the file says so, and the run went on (it used to end
  // every file of the run, this one's batch included).
  const std::size_t nan_error = r.err.find("nan.wav: ");
  ASSERT_NE(nan_error, std::string::npos) << r.err;
  EXPECT_TRUE(contains(r.err.substr(nan_error, r.err.find('\n', nan_error) - nan_error),
                       "damaged or truncated part(s) of the audio could not be decoded"));
  EXPECT_TRUE(std::filesystem::exists(out_ / "nan.partial.txt"));
  EXPECT_TRUE(std::filesystem::exists(out_ / "jfk.txt"));          // the good file is done
  EXPECT_TRUE(std::filesystem::exists(out_ / "cut.partial.txt"));  // what could be decoded is kept
  EXPECT_FALSE(std::filesystem::exists(out_ / "cut.txt"));
}

TEST_F(Transcribe, UsageErrorsExitTwo) {
  EXPECT_EQ(run_ifw(args({jfk()}, "txt,docx")).exit_code, 2);
  auto a = args({jfk()});
  a.insert(a.end(), {"--batch-size", "100000"});
  EXPECT_EQ(run_ifw(a).exit_code, 2);
  a = args({jfk()});
  a.insert(a.end(), {"--temperature", "-1"});
  EXPECT_EQ(run_ifw(a).exit_code, 2);
  for (const char* device : {"tpu", "cuda:", "cuda:x", "cuda:1"}) {
    a = args({jfk()});
    a[std::find(a.begin(), a.end(), "cpu") - a.begin()] = device;
    const CliRun bad = run_ifw(a);
    EXPECT_EQ(bad.exit_code, 2) << device;
    EXPECT_TRUE(contains(bad.err, std::string("--device ") + device)) << bad.err;
  }
  for (const std::vector<std::string>& absurd : {std::vector<std::string>{"--strategy", "fastest"},
                                                 {"--best-of", "0"},
                                                 {"--compression-ratio-threshold", "-1"},
                                                 {"--threads", "100000"},
                                                 {"--max-new-tokens", "100000"},
                                                 {"--timestamps", "sometimes"},
                                                 {"--progress", "loud"}}) {
    a = args({jfk()});
    a.insert(a.end(), absurd.begin(), absurd.end());
    const CliRun bad = run_ifw(a);
    EXPECT_EQ(bad.exit_code, 2) << absurd[0];
    EXPECT_TRUE(contains(bad.err, absurd[0])) << bad.err;
  }
  a = args({jfk()});
  a[std::find(a.begin(), a.end(), "en") - a.begin()] = "klingon";
  const CliRun r = run_ifw(a);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "language \"klingon\""));
  EXPECT_EQ(run_ifw({"transcribe", jfk()}).exit_code, 2);  // no model
}

TEST_F(Transcribe, UnwritableOutputFolder) {
  write_file(in_ / "a_file", "x");
  auto a = args({jfk()});
  a[std::find(a.begin(), a.end(), "-o") - a.begin() + 1] = (in_ / "a_file" / "sub").string();
  const CliRun r = run_ifw(a);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "cannot create the output folder"));
}

TEST_F(Transcribe, StandardInput) {
  const CliRun r = run_ifw(args({"-"}), jfk());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(out_ / "stdin.txt"));
}

// Files of one call are decoded in the same batches (both start before either window is done),
// and what each gets is what it gets alone.
TEST_F(Transcribe, FilesShareBatchesAndGetWhatTheyGetAlone) {
  REQUIRE_FFMPEG();
  const std::string second = (in_ / "second.wav").string();
  ffmpeg("-i " + shell_quote(jfk()) + " -t 7 " + shell_quote(second));
  auto together = args({jfk(), second}, "verbose_json");
  together[std::find(together.begin(), together.end(), "none") - together.begin()] = "json";
  together.insert(together.end(), {"--batch-size", "2"});
  const CliRun r = run_ifw(together);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> events;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    events.push_back(nlohmann::json::parse(line).at("event").get<std::string>());
  ASSERT_GE(events.size(), 4u) << r.out;
  EXPECT_EQ(events[0], "file_started");
  EXPECT_EQ(events[1], "file_started") << "the second file waited for the first: " << r.out;
  const auto tokens_of = [](const std::filesystem::path& p) {
    std::vector<std::vector<int>> t;
    const auto v = util::read_json_file(p);
    for (const auto& s : v.at("segments"))
      t.push_back(s.at("tokens").get<std::vector<int>>());
    return t;
  };
  const auto jfk_together = tokens_of(out_ / "jfk.verbose.json");
  const auto second_together = tokens_of(out_ / "second.verbose.json");
  for (const std::string& file : {jfk(), second}) {
    auto alone = args({file}, "verbose_json");
    alone[std::find(alone.begin(), alone.end(), "-o") - alone.begin() + 1] =
        (in_ / "alone").string();
    ASSERT_EQ(run_ifw(alone).exit_code, 0);
  }
  EXPECT_EQ(tokens_of(in_ / "alone" / "jfk.verbose.json"), jfk_together);
  EXPECT_EQ(tokens_of(in_ / "alone" / "second.verbose.json"), second_together);
}

// A long file decoded by several threads (segments read after seeks, checked where they meet) is
// transcribed as when one thread reads it: the same samples, so the same windows and tokens.
TEST_F(Transcribe, ParallelDecodingGivesWhatOneReaderGives) {
  REQUIRE_FFMPEG();
  const std::string wav = (in_ / "talk.wav").string();
  write_repeated_wav(jfk(), 12, wav);  // 132 s: three segments of a minute
  const std::string talk = (in_ / "talk.flac").string();
  ffmpeg("-i " + shell_quote(wav) + " -ar 44100 -ac 2 -c:a flac " + shell_quote(talk));
  std::vector<nlohmann::json> results;
  for (const std::string threads : {"1", "3"}) {
    auto a = args({talk}, "verbose_json");
    a[std::find(a.begin(), a.end(), "-o") - a.begin() + 1] = (in_ / threads).string();
    a.insert(a.end(), {"--decode-threads", threads});
    const CliRun r = run_ifw(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    results.push_back(util::read_json_file(in_ / threads / "talk.verbose.json"));
  }
  EXPECT_DOUBLE_EQ(results[0].at("duration").get<double>(), 132.0);
  EXPECT_EQ(results[1].at("duration"), results[0].at("duration"));
  ASSERT_GE(results[0].at("segments").size(), 5u);
  EXPECT_EQ(results[1].at("segments"), results[0].at("segments"));
}

// `ifw translate` asks the model for English (the <|translate|> task token): another task in the
// output and, from the same audio, other tokens than transcribing.
TEST_F(Transcribe, TranslateIsItsOwnTask) {
  auto a = args({jfk()}, "verbose_json");
  a[0] = "translate";
  a[std::find(a.begin(), a.end(), "en") - a.begin()] = "fr";
  const CliRun r = run_ifw(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto translated = util::read_json_file(out_ / "jfk.verbose.json");
  EXPECT_EQ(translated.at("task"), "translate");
  EXPECT_EQ(translated.at("language"), "french");
  a[0] = "transcribe";
  ASSERT_EQ(run_ifw(a).exit_code, 0);
  const auto transcribed = util::read_json_file(out_ / "jfk.verbose.json");
  EXPECT_EQ(transcribed.at("task"), "transcribe");
  EXPECT_NE(translated.at("segments"), transcribed.at("segments"));
}

// The bar (asked for: stderr is no terminal here) redraws one line with windows, speed and ETA.
TEST_F(Transcribe, ProgressBar) {
  auto a = args({jfk()});
  a[std::find(a.begin(), a.end(), "none") - a.begin()] = "bar";
  const CliRun r = run_ifw(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "\r[")) << r.err;
  EXPECT_TRUE(contains(r.err, "1/1 windows")) << r.err;
  EXPECT_TRUE(contains(r.err, "x realtime")) << r.err;
  EXPECT_TRUE(contains(r.err, "ETA 00:00")) << r.err;
  EXPECT_TRUE(contains(r.err, "file 1/1 jfk.flac")) << r.err;
  EXPECT_EQ(r.out, "") << "progress never goes to standard output";
}

TEST_F(Transcribe, EveryFormatAndFfmpegReadsTheSubtitles) {
  REQUIRE_FFMPEG();
  auto a = args({jfk()}, "all");
  a.insert(a.end(), {"--timestamps", "word"});
  const CliRun r = run_ifw(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* ext : {"txt", "srt", "vtt", "json", "verbose.json", "tsv"}) {
    EXPECT_TRUE(std::filesystem::exists(out_ / (std::string("jfk.") + ext))) << ext;
  }
  const auto v = util::read_json_file(out_ / "jfk.verbose.json");
  EXPECT_TRUE(v.contains("words"));
  EXPECT_EQ(util::read_json_file(out_ / "jfk.json").at("text"), v.at("text"));
  for (const char* ext : {"srt", "vtt"}) {
    const std::string sub = (out_ / (std::string("jfk.") + ext)).string();
    const std::string log = (out_ / "ffmpeg.log").string();
    // FFmpeg parses the cues and writes them out again as SRT.
    EXPECT_EQ(run_shell("ffmpeg -nostdin -v error -i " + shell_quote(sub) +
                        " -map 0 -f srt - >/dev/null 2>" + shell_quote(log)),
              0);
    EXPECT_EQ(read_file(log), "") << ext;
  }
}

nlohmann::json segments_of(const std::filesystem::path& verbose_json) {
  return util::read_json_file(verbose_json).at("segments");
}

// openai/whisper's loop: each window after the last one's text, text that is too repetitive or
// too unlikely decoded again at a higher temperature. The random model's text is repetitive.
TEST_F(Transcribe, SequentialStrategyFallsBackToHigherTemperatures) {
  auto a = args({jfk()}, "verbose_json");
  a[std::find(a.begin(), a.end(), "8") - a.begin()] = "40";
  a.insert(a.end(), {"--strategy", "sequential", "--best-of", "2"});
  CliRun r = run_ifw(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto segments = segments_of(out_ / "jfk.verbose.json");
  ASSERT_FALSE(segments.empty());
  bool fell_back = false;
  int last_seek = -1;
  for (const auto& s : segments) {
    const double t = s.at("temperature").get<double>();
    const double ratio = s.at("compression_ratio").get<double>();
    const double logprob = s.at("avg_logprob").get<double>();
    const bool silence = s.at("no_speech_prob").get<double>() > 0.6 && logprob < -1.0;
    EXPECT_NEAR(t * 5, std::round(t * 5), 1e-9) << "temperatures go 0, 0.2, ... 1";
    if (t < 1.0 - 1e-9 && !silence) {
      // Below the last temperature, only text within the thresholds is accepted.
      EXPECT_LE(ratio, 2.4);
      EXPECT_GE(logprob, -1.0);
    }
    fell_back = fell_back || t > 0.0;
    EXPECT_GE(s.at("seek").get<int>(), last_seek);
    last_seek = s.at("seek").get<int>();
  }
  EXPECT_TRUE(fell_back);

  // Without fallback, and in the batched strategy (no fallback unless asked): temperature 0 only.
  a.insert(a.end(), {"--temperature-increment", "0"});
  r = run_ifw(a);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& s : segments_of(out_ / "jfk.verbose.json"))
    EXPECT_EQ(s.at("temperature").get<double>(), 0.0);
  r = run_ifw(args({jfk()}, "verbose_json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& s : segments_of(out_ / "jfk.verbose.json"))
    EXPECT_EQ(s.at("temperature").get<double>(), 0.0);
}

// --vad: nothing is transcribed from a silent stretch (where Whisper makes text up).
TEST_F(Transcribe, VoiceActivitySkipsSilence) {
  REQUIRE_FFMPEG();
  const std::string file = (in_ / "pause_then_speech.flac").string();
  ffmpeg("-f lavfi -t 35 -i anullsrc=r=16000:cl=mono -i " + shell_quote(jfk()) +
         " -filter_complex \"[1:a]aformat=sample_rates=16000:channel_layouts=mono[b];"
         "[0:a][b]concat=n=2:v=0:a=1\" -c:a flac " +
         shell_quote(file));
  for (const char* strategy : {"batched", "sequential"}) {
    SCOPED_TRACE(strategy);
    auto a = args({file}, "verbose_json");
    a.insert(a.end(), {"--strategy", strategy, "--temperature-increment", "0"});
    CliRun r = run_ifw(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto without = segments_of(out_ / "pause_then_speech.verbose.json");
    ASSERT_FALSE(without.empty());
    EXPECT_LT(without.front().at("start").get<double>(), 30.0)
        << "the random model makes text up in silence";
    a.push_back("--vad");
    r = run_ifw(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto with = segments_of(out_ / "pause_then_speech.verbose.json");
    ASSERT_FALSE(with.empty()) << "the speech is still transcribed";
    for (const auto& s : with)
      EXPECT_GE(s.at("start").get<double>(), 34.6);
    EXPECT_NEAR(
        util::read_json_file(out_ / "pause_then_speech.verbose.json").at("duration").get<double>(),
        46.0, 0.1);
  }
}

// `ifw` on an 11-minute file, with JSON-lines progress on a pipe, running until a window is done
// (so that the partial output has something in it), however slowly a loaded machine gets there.
class Interrupt : public Transcribe {
 protected:
  void start() {
    const std::string long_file = (in_ / "long.flac").string();
    ffmpeg("-stream_loop 60 -i " + shell_quote(jfk()) + " -c:a flac " + shell_quote(long_file));
    auto a = args({long_file}, "txt,verbose_json");
    a[std::find(a.begin(), a.end(), "8") - a.begin()] = "100";
    a[std::find(a.begin(), a.end(), "none") - a.begin()] = "json";
    a.insert(a.end(), {"--batch-size", "1"});
    int progress[2];
    ASSERT_EQ(::pipe2(progress, O_CLOEXEC), 0);
    pid_ = spawn_ifw(a, progress[1]);
    ::close(progress[1]);
    ASSERT_GE(pid_, 0);
    std::string seen;
    char buffer[4096];
    while (seen.find("\"window_done\"") == std::string::npos) {
      const ssize_t n = ::read(progress[0], buffer, sizeof buffer);
      if (n <= 0) break;
      seen.append(buffer, static_cast<std::size_t>(n));
    }
    EXPECT_TRUE(contains(seen, "\"window_done\"")) << seen;
    // The rest of the progress is read to its end, so that ifw never blocks writing it.
    drain_ = std::thread([fd = progress[0]] {
      char rest[4096];
      while (::read(fd, rest, sizeof rest) > 0) {
      }
      ::close(fd);
    });
  }
  // Sends the signals; returns the exit status and how long the process took to end.
  std::pair<int, double> stop(std::initializer_list<int> signals) {
    const auto begin = std::chrono::steady_clock::now();
    for (const int sig : signals)
      EXPECT_EQ(::kill(pid_, sig), 0);
    int status = 0;
    EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    drain_.join();
    return {status, seconds};
  }
  void TearDown() override {  // a test that failed before stop(): no process or thread left
    if (!drain_.joinable()) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    drain_.join();
  }
  pid_t pid_ = -1;
  std::thread drain_;
};

// SIGINT during a long file: exit 130 within 2 s (6 s under the sanitizers), with valid partial
// outputs. Under the sanitizers LeakSanitizer checks the exit too (a leak aborts, and the exit
// code is not 130).
TEST_F(Interrupt, KeepsWhatIsFinished) {
  REQUIRE_FFMPEG();
  ASSERT_NO_FATAL_FAILURE(start());
  const auto [status, seconds] = stop({SIGINT});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_LT(seconds, kStopSeconds);
  ASSERT_TRUE(std::filesystem::exists(out_ / "long.partial.verbose.json"));
  const auto v = util::read_json_file(out_ / "long.partial.verbose.json");
  EXPECT_TRUE(v.at("partial").get<bool>());
  EXPECT_FALSE(v.at("segments").empty());
  EXPECT_LT(v.at("duration").get<double>(), 600.0);
  EXPECT_TRUE(std::filesystem::exists(out_ / "long.partial.txt"));
  EXPECT_FALSE(std::filesystem::exists(out_ / "long.verbose.json"));
}

// SIGTERM is the same request to stop; a second signal (another one: two of a kind may merge
// while pending) ends the process without waiting for the step or writing partial outputs.
TEST_F(Interrupt, SecondSignalExitsAtOnce) {
  REQUIRE_FFMPEG();
  ASSERT_NO_FATAL_FAILURE(start());
  const auto [status, seconds] = stop({SIGTERM, SIGINT});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_LT(seconds, kStopSeconds);
  EXPECT_FALSE(std::filesystem::exists(out_ / "long.verbose.json"));
  EXPECT_FALSE(std::filesystem::exists(out_ / "long.partial.verbose.json"));
}

}  // namespace
}  // namespace ifw::test
