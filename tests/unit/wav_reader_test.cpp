// The WAV reader of builds without FFmpeg (GPU hosts): every encoding it claims, read as mono
// floats in pieces, exact seeks, and clear refusals of what it does not read.
#include "audio/wav_reader.hpp"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "support/expect_error.hpp"
#include "support/temp_dir.hpp"
#include "support/wav_files.hpp"

namespace ifw::test {
namespace {

std::vector<float> read_all(audio::WavReader& reader, std::size_t piece = 1000) {
  std::vector<float> all, chunk(piece);
  for (std::size_t n; (n = reader.read(chunk)) > 0;)
    all.insert(all.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
  return all;
}

std::vector<float> ramp(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = std::sin(static_cast<float>(i) * 0.01f) * 0.5f;
  return v;
}

TEST(WavReader, ReadsPcmAndFloatOfEveryWidthAsMono) {
  TempDir dir;
  const std::vector<float> left = ramp(5000);
  struct Case {
    std::uint16_t bits, format;
    double tolerance;
  };
  for (const Case c : {Case{8, 1, 1.0 / 100}, Case{16, 1, 1.0 / 30000}, Case{24, 1, 1e-6},
                       Case{32, 1, 1e-7}, Case{32, 3, 0.0}, Case{64, 3, 0.0}}) {
    SCOPED_TRACE(testing::Message() << c.bits << "-bit, format " << c.format);
    // Stereo: the left channel, and its negative plus 0.2 on the right; mono is their mean, 0.1.
    std::string data;
    const auto put = [&](float v) {
      if (c.format == 3 && c.bits == 32) {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else if (c.format == 3) {
        const double d = v;
        data.append(reinterpret_cast<const char*>(&d), 8);
      } else if (c.bits == 8) {
        data.push_back(static_cast<char>(static_cast<int>(std::lround(v * 127.0f)) + 128));
      } else {
        const double scale = std::ldexp(1.0, c.bits - 1) - 1.0;
        const auto q = static_cast<std::int32_t>(std::lround(v * scale));
        data.append(reinterpret_cast<const char*>(&q), c.bits / 8);  // little-endian
      }
    };
    for (const float v : left) {
      put(v);
      put(0.2f - v);
    }
    const auto path = dir / "stereo.wav";
    write_file(path, wav_file(data, 16000, 2, c.bits, c.format));
    audio::WavReader reader(path.string());
    EXPECT_EQ(reader.frames(), 5000);
    const std::vector<float> mono = read_all(reader, 777);
    ASSERT_EQ(mono.size(), left.size());
    for (std::size_t i = 0; i < mono.size(); ++i)
      ASSERT_NEAR(mono[i], 0.1f, c.tolerance + 1e-7) << "sample " << i;
    std::vector<float> more(10);
    EXPECT_EQ(reader.read(more), 0u);
    EXPECT_EQ(reader.damaged(), 0);
  }
}

TEST(WavReader, SeeksExactlyAndSkipsOtherChunks) {
  TempDir dir;
  const std::vector<float> v = ramp(20000);
  std::string file = wav_of(v);
  // A LIST chunk of odd size (padded) between the format and the data.
  const std::string list =
      std::string("LIST") + std::string("\x05\x00\x00\x00", 4) + "abcde" + std::string(1, '\0');
  file.insert(36, list);
  const auto size = static_cast<std::uint32_t>(file.size() - 8);
  std::memcpy(file.data() + 4, &size, 4);
  write_file(dir / "a.wav", file);
  audio::WavReader reader((dir / "a.wav").string());
  EXPECT_EQ(reader.description(), "wav, pcm 16-bit, 16000 Hz, 1 channel");
  const std::vector<float> all = read_all(reader);
  ASSERT_EQ(all.size(), v.size());
  EXPECT_EQ(reader.seek(12345), 12345);
  std::vector<float> piece(100);
  ASSERT_EQ(reader.read(piece), 100u);
  for (std::size_t i = 0; i < piece.size(); ++i)
    EXPECT_EQ(piece[i], all[12345 + i]);
  EXPECT_EQ(reader.position(), 12445);
  EXPECT_EQ(reader.seek(1 << 30), 20000);  // past the end: at the end
  EXPECT_EQ(reader.read(piece), 0u);
}

// A read longer than the reader's raw buffer (1 MiB: 16 384 frames of 16 float channels) is
// served in pieces, all of it.
TEST(WavReader, ALongReadOfAWideFileComesWhole) {
  TempDir dir;
  const int channels = 16;
  const std::vector<float> v = ramp(40000);
  std::string data;
  for (const float x : v) {
    for (int c = 0; c < channels; ++c)
      data.append(reinterpret_cast<const char*>(&x), 4);
  }
  write_file(dir / "wide.wav", wav_file(data, 16000, channels, 32, 3));
  audio::WavReader reader((dir / "wide.wav").string());
  std::vector<float> all(50000);
  ASSERT_EQ(reader.read(all), v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_FLOAT_EQ(all[i], v[i]) << "sample " << i;
}

// A pipe named by a path (/dev/fd/N, a FIFO) reads in order: not seekable (a second reader
// would take the first one's bytes), its chunks before the data read through rather than sought.
TEST(WavReader, APipeNamedByAPathReadsInOrder) {
  const std::vector<float> v = ramp(3000);
  std::string file = wav_of(v);
  const std::string list =
      std::string("LIST") + std::string("\x05\x00\x00\x00", 4) + "abcde" + std::string(1, '\0');
  file.insert(36, list);
  int ends[2];
  ASSERT_EQ(pipe(ends), 0) << std::strerror(errno);
  // The whole file fits in the pipe's buffer (64 KiB): written and closed before it is read.
  ASSERT_EQ(write(ends[1], file.data(), file.size()), static_cast<ssize_t>(file.size()));
  close(ends[1]);
  std::vector<float> all;
  bool seekable = true;
  std::int64_t seek = 0;
  {
    audio::WavReader reader("/dev/fd/" + std::to_string(ends[0]));
    seekable = reader.seekable();
    seek = reader.seek(100);
    all = read_all(reader);
  }
  close(ends[0]);
  EXPECT_FALSE(seekable);
  EXPECT_EQ(seek, -1);
  ASSERT_EQ(all.size(), v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_NEAR(all[i], v[i], 1.0 / 30000) << "sample " << i;
}

TEST(WavReader, TruncatedAndDamagedFilesCountAsDamaged) {
  TempDir dir;
  std::string file = wav_of(ramp(1000));
  file.resize(file.size() - 500);  // 250 samples short of what the header says
  write_file(dir / "short.wav", file);
  audio::WavReader short_reader((dir / "short.wav").string());
  EXPECT_EQ(read_all(short_reader).size(), 750u);
  EXPECT_EQ(short_reader.damaged(), 1);

  std::vector<float> samples = ramp(1000);
  samples[10] = std::numeric_limits<float>::quiet_NaN();
  samples[20] = 1e30f;
  write_file(dir / "nan.wav", float_wav_of(samples, 16000));
  audio::WavReader nan_reader((dir / "nan.wav").string());
  const std::vector<float> got = read_all(nan_reader);
  ASSERT_EQ(got.size(), 1000u);
  EXPECT_EQ(got[10], 0.0f);
  EXPECT_EQ(got[20], 0.0f);
  EXPECT_EQ(got[30], samples[30]);
  EXPECT_EQ(nan_reader.damaged(), 1);
}

TEST(WavReader, RefusesWhatItDoesNotReadNamingTheFile) {
  TempDir dir;
  const std::string at = (dir / "x.wav").string();
  EXPECT_IFW_ERROR(audio::WavReader r((dir / "missing.wav").string()), "missing.wav: no such file");
  write_file(dir / "x.wav", "ID3 this is an mp3");
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": not a WAV file");
  write_file(dir / "x.wav", wav_file(std::string(100, '\0'), 44100, 1));
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": 44100 Hz audio: this build has no FFmpeg");
  write_file(dir / "x.wav", wav_file(std::string(100, '\0'), 16000, 1, 16, 2));  // ADPCM
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": WAV encoding 2");
  write_file(dir / "x.wav", wav_file(std::string(100, '\0'), 16000, 1, 12, 1));
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": 12-bit PCM samples");
  write_file(dir / "x.wav", wav_file(std::string(100, '\0'), 16000, 65535, 64, 3));
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": 65535 channels (this build reads 1 to 64)");
  std::string padded = wav_file(std::string(120, '\0'), 16000, 1);
  padded[32] = 6;  // block alignment: 6-byte frames for one 16-bit channel
  write_file(dir / "x.wav", padded);
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": frames of 6 bytes for 1 channels of 16 bits");
  write_file(dir / "x.wav", std::string("RIFF\x10\x00\x00\x00WAVEfmt ", 16));
  EXPECT_IFW_ERROR(audio::WavReader r(at), at + ": not a WAV file this build reads");
}

}  // namespace
}  // namespace ifw::test
