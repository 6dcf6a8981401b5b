// Hours of audio in the memory of minutes: a 3-hour recording (speech and silence, made here by
// bench/make_long_audio.sh) must peak within 10 % of the resident memory of a 3-minute one.
// Peak RSS comes from the kernel (wait4's ru_maxrss) for the real `ifw` process.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "integration/run_ifw.hpp"
#include "support/golden.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"
#include "util/json.hpp"

namespace ifw::test {
namespace {

struct MeasuredRun {
  int exit_code = -1;
  long peak_rss_kib = 0;
};

MeasuredRun run_measured(const std::vector<std::string>& args) {
  const pid_t pid = spawn_ifw(args);
  if (pid < 0) return {};
  int status = 0;
  rusage usage{};
  if (::wait4(pid, &status, 0, &usage) != pid) return {};
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), usage.ru_maxrss};
}

TEST(LongAudio, ThreeHoursTakeTheMemoryOfThreeMinutes) {
  if (kSanitized) {
    GTEST_SKIP() << "resident memory under AddressSanitizer (shadow memory, quarantine) says "
                    "nothing about the real build's";
  }
  IFW_REQUIRE_GOLDEN();
  for (const char* program : {"ffmpeg", "espeak-ng"}) {
    if (!have_program(program)) GTEST_SKIP() << "the " << program << " program is not installed";
  }
  const TempDir dir;
  ASSERT_EQ(run_shell(shell_quote(IFW_SOURCE_DIR "/bench/make_long_audio.sh") + " " +
                      shell_quote(dir.path().string()) + " 180 10800 >/dev/null"),
            0);
  const std::string model = (*golden_dir() / "models" / "tiny-random-v3").string();
  const auto transcribe = [&](int seconds) {
    const std::string name = "speech_" + std::to_string(seconds) + "s";
    // Batch 4 fills in both files; few tokens per window keep three hours to about a minute.
    const MeasuredRun r = run_measured({"transcribe", (dir / (name + ".opus")).string(), "--model",
                                        model, "--language", "en", "--batch-size", "4",
                                        "--max-new-tokens", "24", "-f", "srt,verbose_json", "-o",
                                        (dir / "out").string(), "--progress", "none", "-q"});
    EXPECT_EQ(r.exit_code, 0) << name;
    const auto v = util::read_json_file(dir / "out" / (name + ".verbose.json"));
    EXPECT_NEAR(v.at("duration").get<double>(), seconds, 0.5 + seconds * 0.001) << name;
    EXPECT_FALSE(v.at("segments").empty()) << name;
    if (!v.at("segments").empty()) {  // the end of the file is reached and transcribed
      EXPECT_GT(v.at("segments").back().at("end").get<double>(), seconds - 60.0) << name;
    }
    return r.peak_rss_kib;
  };
  const long minutes = transcribe(180);
  const long hours = transcribe(10800);
  ASSERT_GT(minutes, 0);
  const double ratio = static_cast<double>(hours) / static_cast<double>(minutes);
  RecordProperty("peak_rss_3min_kib", std::to_string(minutes));
  RecordProperty("peak_rss_3h_kib", std::to_string(hours));
  std::printf("peak RSS: 3 min %.1f MiB, 3 h %.1f MiB (x%.3f)\n", minutes / 1024.0, hours / 1024.0,
              ratio);
  EXPECT_LE(ratio, 1.10) << "3 min: " << minutes << " KiB, 3 h: " << hours << " KiB";
}

}  // namespace
}  // namespace ifw::test
