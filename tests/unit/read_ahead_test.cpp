// Audio read ahead on background threads (audio/read_ahead): segments decoded in parallel after
// seeks give the samples of one reading from the start, in the formats users bring; where seeks
// do not land exactly, or cannot be checked, the reading is still the same.
#include "audio/read_ahead.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "audio/audio_decoder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

constexpr int kRate = 16000;

bool have_ffmpeg() {
  return std::system("command -v ffmpeg >/dev/null 2>&1") == 0;
}

#define REQUIRE_FFMPEG()                                                       \
  do {                                                                         \
    if (!have_ffmpeg()) GTEST_SKIP() << "the ffmpeg program is not installed"; \
  } while (0)

// `seconds` of a tone under pink noise (never silent), made by the ffmpeg program with `codec`
// options into `path`.
void make_file(const std::filesystem::path& path, int seconds, const std::string& codec,
               const std::string& source = "") {
  const std::string input =
      !source.empty() ? source
                      : "-f lavfi -i sine=frequency=330:duration=" + std::to_string(seconds) +
                            " -f lavfi -i anoisesrc=color=pink:amplitude=0.2:seed=7:duration=" +
                            std::to_string(seconds) + " -filter_complex amix=inputs=2";
  const std::string command =
      "ffmpeg -nostdin -loglevel error -y " + input + " " + codec + " '" + path.string() + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

// Every sample of a decoder or a read-ahead, in pieces that never line up with segments.
template <typename Reader>
std::vector<float> read_all(Reader& reader) {
  std::vector<float> all;
  std::vector<float> piece(7777);
  while (const std::size_t n = reader.read(piece))
    all.insert(all.end(), piece.begin(), piece.begin() + static_cast<std::ptrdiff_t>(n));
  return all;
}

// Overwrites `bytes` bytes of `file` at each fraction of its size with junk (damaged packets).
void damage(const std::filesystem::path& file, std::initializer_list<double> fractions,
            std::size_t bytes) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  const auto size = static_cast<double>(std::filesystem::file_size(file));
  const std::string junk(bytes, '\x5a');
  for (const double at : fractions) {
    f.seekp(static_cast<std::streamoff>(size * at));
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
}

// ‖a - b‖ / ‖a‖ over [from, to).
double relative_difference(const std::vector<float>& a, const std::vector<float>& b,
                           std::size_t from, std::size_t to) {
  double energy = 0.0;
  double difference = 0.0;
  for (std::size_t i = from; i < to; ++i) {
    energy += static_cast<double>(a[i]) * a[i];
    difference += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  }
  return std::sqrt(difference / std::max(energy, 1e-30));
}

struct Format {
  const char* name;
  const char* extension;
  const char* codec;
  bool exact = true;  // its timestamps resolve a sample: segments decoded in parallel
};

// What podcasts, meetings and films come as; rates that are not multiples of 16 kHz on purpose.
const Format kFormats[] = {
    {"mp3", "mp3", "-ar 44100 -ac 2 -c:a libmp3lame -b:a 128k"},
    {"aac", "m4a", "-ar 48000 -ac 2 -c:a aac -b:a 96k"},
    {"opus", "opus", "-ar 48000 -ac 1 -c:a libopus -b:a 32k"},
    {"vorbis", "ogg", "-ar 22050 -ac 1 -c:a libvorbis -q:a 3"},
    {"flac", "flac", "-ar 44100 -ac 1 -c:a flac"},
    {"wav", "wav", "-ar 8000 -ac 1 -c:a pcm_s16le"},
    // Matroska counts milliseconds: seeks land near, not on, a sample; read by one thread.
    {"mkv_ac3", "mkv", "-ar 48000 -ac 2 -c:a ac3 -b:a 192k", false},
    {"webm_opus", "webm", "-ar 48000 -ac 1 -c:a libopus -b:a 32k", false},
    {"mkv_aac", "mkv", "-ar 44100 -ac 2 -c:a aac -b:a 96k", false},
};

class ReadAheadFormats : public ::testing::TestWithParam<Format> {};

// After a seek, reading lands on the 16 kHz grid of a reading from the start: once the codec
// has settled, the samples are the same (to its rounding), not a sample early or late.
TEST_P(ReadAheadFormats, SeekLandsOnTheGridOfAReadingFromTheStart) {
  REQUIRE_FFMPEG();
  if (!GetParam().exact) GTEST_SKIP() << GetParam().name << ": timestamps in milliseconds";
  const TempDir dir;
  const auto file = dir / (std::string("audio.") + GetParam().extension);
  make_file(file, 40, GetParam().codec);
  audio::AudioDecoder whole(file.string());
  const std::vector<float> reference = read_all(whole);
  ASSERT_GT(reference.size(), static_cast<std::size_t>(39 * kRate));
  for (const double at : {7.3, 21.0, 33.77}) {
    audio::AudioDecoder d(file.string());
    ASSERT_TRUE(d.seeks_exactly());
    const auto target = static_cast<std::int64_t>(at * kRate);
    const std::int64_t landed = d.seek(target);
    ASSERT_GE(landed, 0) << at;
    EXPECT_LE(landed, target);
    EXPECT_GT(landed, target - 10 * kRate) << "far too early to be of use";
    EXPECT_EQ(d.position(), landed);
    std::vector<float> after(static_cast<std::size_t>(2 * kRate));
    ASSERT_EQ(d.read(after), after.size());
    std::vector<float> same(reference.begin() + landed, reference.begin() + landed + 2 * kRate);
    // The second half second on: the codec's and the resampler's state have caught up.
    const double diff = relative_difference(same, after, kRate / 2, after.size());
    EXPECT_LT(diff, 2e-3) << GetParam().name << " at " << at << " s";
    RecordProperty(std::string("difference_at_") + std::to_string(static_cast<int>(at)),
                   std::to_string(diff));
  }
}

// Segments decoded in parallel give a reading from the start: as many samples, the same ones.
TEST_P(ReadAheadFormats, ParallelSegmentsGiveTheSamplesOfOneReading) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / (std::string("audio.") + GetParam().extension);
  make_file(file, 75, GetParam().codec);
  audio::AudioDecoder whole(file.string());
  const std::vector<float> reference = read_all(whole);

  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                     {.threads = 3, .ahead_seconds = 20, .segment_seconds = 10});
  EXPECT_EQ(r.parallel(), GetParam().exact);
  const std::vector<float> samples = read_all(r);
  ASSERT_EQ(samples.size(), reference.size());
  EXPECT_LT(relative_difference(reference, samples, 0, samples.size()), 2e-3);
  const audio::ReadAheadStats stats = r.stats();
  EXPECT_EQ(stats.joined, GetParam().exact ? 7 : 0) << "segments read on: " << stats.read_on;
  EXPECT_EQ(stats.read_on, 0);
  EXPECT_EQ(r.damaged_packets(), 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, ReadAheadFormats, ::testing::ValuesIn(kFormats),
                         [](const ::testing::TestParamInfo<Format>& p) {
                           return std::string(p.param.name);
                         });

// Where segments meet in digital silence nothing can be compared: the decoder before reads on,
// and the samples are still exactly those of one reading.
TEST(ReadAhead, SilentBoundariesAreReadOn) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / "gaps.flac";
  // A tone in the middle of every 10 s, silence around 10 s, 20 s, ... where segments meet.
  make_file(file, 0, "-ar 16000 -ac 1 -c:a flac",
            "-f lavfi -i \"aevalsrc=sin(2*PI*300*t)*0.3*between(mod(t\\,10)\\,2.5\\,7.5):"
            "s=16000:d=45\"");
  audio::AudioDecoder whole(file.string());
  const std::vector<float> reference = read_all(whole);
  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                     {.threads = 2, .ahead_seconds = 20, .segment_seconds = 10});
  const std::vector<float> samples = read_all(r);
  EXPECT_EQ(samples, reference);
  EXPECT_EQ(r.stats().read_on, 3) << "three silent boundaries in a row: seeking given up";
  EXPECT_EQ(r.stats().joined, 0);
}

// A boundary read on, damage just after the next one (read on or joined, as the damage allows):
// counted once, the samples those of one reading.
TEST(ReadAhead, DamageAfterAReadOnBoundaryIsCountedOnce) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / "quiet_then_damaged.mp3";
  // Noise, silent from 9 s to 11.5 s (the boundary at 10 s cannot be checked).
  make_file(file, 0, "-ar 44100 -ac 1 -c:a libmp3lame -b:a 64k",
            "-f lavfi -i \"aevalsrc=(random(0)-0.5)*0.4*not(between(t\\,9\\,11.5)):s=44100:d=40\"");
  damage(file, {20.5 / 40.0}, 300);  // half a second after 20 s
  audio::AudioDecoder whole(file.string());
  const std::vector<float> reference = read_all(whole);
  ASSERT_GT(whole.damaged_packets(), 0);
  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                     {.threads = 3, .ahead_seconds = 30, .segment_seconds = 10});
  const std::vector<float> samples = read_all(r);
  ASSERT_EQ(samples.size(), reference.size());
  EXPECT_LT(relative_difference(reference, samples, 0, samples.size()), 2e-3);
  EXPECT_GE(r.stats().read_on, 1);
  EXPECT_GE(r.stats().joined, 1);
  EXPECT_EQ(r.damaged_packets(), whole.damaged_packets());
}

// Files whose seeks cannot be trusted are read by one thread from the start.
TEST(ReadAhead, DurationsGuessedFromTheBitRateAreReadInOnePiece) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / "raw.aac";  // ADTS: no index, its duration estimated
  make_file(file, 30, "-ar 48000 -ac 1 -c:a aac -b:a 64k");
  audio::AudioDecoder whole(file.string());
  ASSERT_TRUE(whole.duration_is_estimate());
  const std::vector<float> reference = read_all(whole);
  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                     {.threads = 4, .ahead_seconds = 20, .segment_seconds = 5});
  EXPECT_FALSE(r.parallel());
  EXPECT_EQ(read_all(r), reference);
}

// A file cut short of the duration its header states: the segments past its end find nothing,
// the reading stops where one from the start stops.
TEST(ReadAhead, TruncatedFilesEndWhereTheAudioEnds) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto full = dir / "full.flac";  // its header states the duration (a WAV file's is its size)
  make_file(full, 60, "-ar 16000 -ac 1 -c:a flac");
  const auto cut = dir / "cut.flac";
  std::filesystem::copy_file(full, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(full) / 3);
  audio::AudioDecoder whole(cut.string());
  const std::vector<float> reference = read_all(whole);
  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(cut.string()),
                     {.threads = 3, .ahead_seconds = 30, .segment_seconds = 10});
  EXPECT_TRUE(r.parallel());
  EXPECT_EQ(read_all(r), reference);
  EXPECT_EQ(r.damaged_packets(), whole.damaged_packets());
}

// Damage in the middle of a file: the same samples and the same count of damaged packets as one
// reading, whichever segment's decoder met it.
TEST(ReadAhead, DamagedPacketsAreCountedOnce) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / "damaged.mp3";
  make_file(file, 60, "-ar 44100 -ac 1 -c:a libmp3lame -b:a 64k");
  damage(file, {0.26, 0.55, 0.81}, 700);  // inside segments, not at their edges
  audio::AudioDecoder whole(file.string());
  const std::vector<float> reference = read_all(whole);
  ASSERT_GT(whole.damaged_packets(), 0);
  audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                     {.threads = 3, .ahead_seconds = 30, .segment_seconds = 10});
  const std::vector<float> samples = read_all(r);
  ASSERT_EQ(samples.size(), reference.size());
  EXPECT_LT(relative_difference(reference, samples, 0, samples.size()), 2e-3);
  EXPECT_EQ(r.damaged_packets(), whole.damaged_packets());
}

// Dropped halfway (a cancelled job), the reader stops its threads promptly.
TEST(ReadAhead, StopsWhenDroppedMidway) {
  REQUIRE_FFMPEG();
  const TempDir dir;
  const auto file = dir / "long.flac";
  make_file(file, 120, "-ar 16000 -ac 1 -c:a flac");
  for (const int threads : {1, 4}) {
    audio::ReadAhead r(std::make_unique<audio::AudioDecoder>(file.string()),
                       {.threads = threads, .ahead_seconds = 60, .segment_seconds = 10});
    std::vector<float> piece(kRate * 15);
    EXPECT_EQ(r.read(piece), piece.size());
  }
}

}  // namespace
}  // namespace ifw::test
