#include "audio/wav_reader.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "audio/damaged_samples.hpp"

namespace ifw::audio {
namespace {

constexpr std::uint16_t kFormatPcm = 1;
constexpr std::uint16_t kFormatFloat = 3;
constexpr std::uint16_t kFormatExtensible = 0xFFFE;
constexpr int kMostChannels = 64;
constexpr std::size_t kMostBytesPerRead = std::size_t{1} << 20;  // the raw buffer's bound

std::uint16_t u16(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
std::uint32_t u32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

// One sample of `bits` at p as a float in [-1, 1) (integers) or as stored (floats).
float sample_at(const unsigned char* p, int bits, bool is_float) {
  if (is_float) {
    if (bits == 32) {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    double d;
    std::memcpy(&d, p, 8);
    return static_cast<float>(d);
  }
  switch (bits) {
    case 8:
      return (static_cast<float>(p[0]) - 128.0f) / 128.0f;  // 8-bit WAV is unsigned
    case 16:
      return static_cast<float>(static_cast<std::int16_t>(u16(p))) / 32768.0f;
    case 24: {  // three bytes (a fourth may lie past the buffer), sign-extended
      const std::uint32_t raw = static_cast<std::uint32_t>(p[0]) |
                                (static_cast<std::uint32_t>(p[1]) << 8) |
                                (static_cast<std::uint32_t>(p[2]) << 16);
      const auto v = static_cast<std::int32_t>(raw << 8) >> 8;
      return static_cast<float>(v) / 8388608.0f;
    }
    default:
      return static_cast<float>(static_cast<double>(static_cast<std::int32_t>(u32(p))) /
                                2147483648.0);
  }
}

}  // namespace

void WavReader::Closer::operator()(std::FILE* f) const {
  if (std::fclose(f) != 0) spdlog::warn("closing a WAV file: {}", std::strerror(errno));
}

void WavReader::fail(const std::string& what) const {
  throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: {}", path_, what));
}

void WavReader::read_exact(void* data, std::size_t bytes, const char* what) {
  if (std::fread(data, 1, bytes, file_) != bytes) {
    fail(fmt::format("not a WAV file this build reads ({} missing)", what));
  }
}

WavReader::WavReader(const std::string& path) : path_(path == "-" ? "standard input" : path) {
  if (path == "-") {
    file_ = stdin;
  } else {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (status.type() == std::filesystem::file_type::not_found)
      throw Error(ErrorKind::kNotFound, path + ": no such file");
    if (ec) throw Error(ErrorKind::kIo, fmt::format("{}: cannot be read: {}", path, ec.message()));
    if (std::filesystem::is_directory(status))
      throw Error(ErrorKind::kInvalidArgument, path + ": is a directory, not an audio file");
    owned_.reset(std::fopen(path.c_str(), "rb"));
    if (!owned_) {
      throw Error(ErrorKind::kIo,
                  fmt::format("{}: cannot be opened: {}", path, std::strerror(errno)));
    }
    file_ = owned_.get();
    // Only a regular file seeks: a pipe or device named by a path (/dev/fd/N) reads in order,
    // and a second reader of it would take the first one's bytes.
    seekable_ = std::filesystem::is_regular_file(status);
  }
  std::array<unsigned char, 12> riff{};
  read_exact(riff.data(), riff.size(), "the RIFF header");
  if (std::memcmp(riff.data(), "RIFF", 4) != 0 || std::memcmp(riff.data() + 8, "WAVE", 4) != 0) {
    fail(
        "not a WAV file (this build has no FFmpeg and reads 16 kHz WAV only; the full build reads "
        "every format)");
  }
  bool have_format = false;
  std::uint16_t format = 0, block_align = 0;
  std::uint32_t rate = 0;
  std::int64_t offset = 12;
  while (true) {
    std::array<unsigned char, 8> chunk{};
    read_exact(chunk.data(), chunk.size(), "the data chunk");
    const std::uint32_t size = u32(chunk.data() + 4);
    offset += 8;
    if (std::memcmp(chunk.data(), "fmt ", 4) == 0) {
      if (size < 16 || size > 1024) fail(fmt::format("a format chunk of {} bytes", size));
      std::vector<unsigned char> fmt_chunk(size + (size & 1u));
      read_exact(fmt_chunk.data(), fmt_chunk.size(), "the format chunk");
      offset += static_cast<std::int64_t>(fmt_chunk.size());
      format = u16(fmt_chunk.data());
      channels_ = u16(fmt_chunk.data() + 2);
      rate = u32(fmt_chunk.data() + 4);
      block_align = u16(fmt_chunk.data() + 12);
      bits_ = u16(fmt_chunk.data() + 14);
      if (format == kFormatExtensible) {
        if (size < 40) fail("an extensible format chunk without its sub-format");
        format = u16(fmt_chunk.data() + 24);  // the sub-format GUID's first two bytes
      }
      have_format = true;
      continue;
    }
    if (std::memcmp(chunk.data(), "data", 4) == 0) {
      if (!have_format) fail("the data chunk comes before the format chunk");
      data_offset_ = offset;
      const std::int64_t frame_bytes = static_cast<std::int64_t>(channels_) * (bits_ / 8);
      // 0 and 0xFFFFFFFF: a stream's header written before its length was known.
      if (size != 0 && size != std::numeric_limits<std::uint32_t>::max() && frame_bytes > 0)
        frames_ = static_cast<std::int64_t>(size) / frame_bytes;
      break;
    }
    // Any other chunk (LIST, fact, ...): skipped.
    const std::int64_t skip = static_cast<std::int64_t>(size) + (size & 1u);
    if (seekable_) {
      if (std::fseek(file_, static_cast<long>(skip), SEEK_CUR) != 0) fail("a chunk past the end");
    } else {  // read through, a bounded piece at a time
      std::array<unsigned char, 65536> discard{};
      for (std::int64_t left = skip; left > 0;) {
        const auto n = static_cast<std::size_t>(
            std::min<std::int64_t>(left, static_cast<std::int64_t>(discard.size())));
        read_exact(discard.data(), n, "a chunk's contents");
        left -= static_cast<std::int64_t>(n);
      }
    }
    offset += skip;
  }
  is_float_ = format == kFormatFloat;
  if (format != kFormatPcm && format != kFormatFloat)
    fail(fmt::format("WAV encoding {} (this build reads PCM and IEEE float)", format));
  const bool bits_ok = is_float_ ? (bits_ == 32 || bits_ == 64)
                                 : (bits_ == 8 || bits_ == 16 || bits_ == 24 || bits_ == 32);
  if (!bits_ok) fail(fmt::format("{}-bit {} samples", bits_, is_float_ ? "float" : "PCM"));
  if (channels_ < 1 || channels_ > kMostChannels)
    fail(fmt::format("{} channels (this build reads 1 to {})", channels_, kMostChannels));
  const int frame_bytes = channels_ * (bits_ / 8);
  if (block_align != frame_bytes) {
    fail(fmt::format("frames of {} bytes for {} channels of {} bits (padded frames are not read)",
                     block_align, channels_, bits_));
  }
  if (rate != kSampleRate) {
    fail(fmt::format(
        "{} Hz audio: this build has no FFmpeg to resample it and reads 16 kHz WAV only", rate));
  }
  if (seekable_) {
    // A stream's header in a file (no length): the file says how long. A header that promises
    // more than the file holds: the file is truncated (damaged), and its length is what is there.
    std::error_code ec;
    const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(path, ec));
    if (!ec) {
      const std::int64_t present = std::max<std::int64_t>(bytes - data_offset_, 0) / frame_bytes;
      if (frames_ < 0) {
        frames_ = present;
      } else if (frames_ > present) {
        frames_ = present;
        ++damaged_;
      }
    }
  }
}

std::size_t WavReader::read(std::span<float> out) {
  // In pieces of at most kMostBytesPerRead raw bytes, so that a long read of a wide file does not
  // hold its whole raw size at once.
  const std::size_t frame_bytes =
      static_cast<std::size_t>(channels_) * static_cast<std::size_t>(bits_ / 8);
  const std::size_t piece = std::max<std::size_t>(1, kMostBytesPerRead / frame_bytes);
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t got = read_piece(out.subspan(done, std::min(piece, out.size() - done)));
    done += got;
    if (got == 0) break;
  }
  return done;
}

std::size_t WavReader::read_piece(std::span<float> out) {
  if (ended_ || out.empty()) return 0;
  const std::size_t frame_bytes =
      static_cast<std::size_t>(channels_) * static_cast<std::size_t>(bits_ / 8);
  std::size_t want = out.size();
  if (frames_ >= 0)
    want = std::min<std::size_t>(
        want, static_cast<std::size_t>(std::max<std::int64_t>(frames_ - position_, 0)));
  raw_.resize(want * frame_bytes);
  const std::size_t got_bytes = want == 0 ? 0 : std::fread(raw_.data(), 1, raw_.size(), file_);
  const std::size_t got = got_bytes / frame_bytes;
  if (got < want) {
    ended_ = true;
    if (std::ferror(file_) != 0) fail(fmt::format("reading failed: {}", std::strerror(errno)));
    if (frames_ >= 0) ++damaged_;  // shorter than its header says
  }
  const std::size_t sample_bytes = static_cast<std::size_t>(bits_ / 8);
  for (std::size_t i = 0; i < got; ++i) {
    const unsigned char* frame = raw_.data() + i * frame_bytes;
    float sum = 0.0f;
    for (int c = 0; c < channels_; ++c)
      sum += sample_at(frame + static_cast<std::size_t>(c) * sample_bytes, bits_, is_float_);
    out[i] = sum / static_cast<float>(channels_);
  }
  if (is_float_ && silence_damaged_samples(out.first(got))) ++damaged_;
  position_ += static_cast<std::int64_t>(got);
  if (frames_ >= 0 && position_ >= frames_) ended_ = true;
  return got;
}

std::int64_t WavReader::seek(std::int64_t sample) {
  if (!seekable_) return -1;
  sample = std::max<std::int64_t>(sample, 0);
  if (frames_ >= 0) sample = std::min(sample, frames_);
  std::clearerr(file_);
  const std::int64_t at =
      data_offset_ + sample * static_cast<std::int64_t>(channels_) * (bits_ / 8);
  if (std::fseek(file_, static_cast<long>(at), SEEK_SET) != 0) return -1;
  position_ = sample;
  ended_ = frames_ >= 0 && position_ >= frames_;
  return position_;
}

std::string WavReader::description() const {
  return fmt::format("wav, {} {}-bit, {} Hz, {} channel{}", is_float_ ? "float" : "pcm", bits_,
                     kSampleRate, channels_, channels_ == 1 ? "" : "s");
}

}  // namespace ifw::audio
