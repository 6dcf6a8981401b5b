#include "support/audio_files.hpp"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <vector>

#include "audio/audio_decoder.hpp"

namespace ifw::test {

void write_repeated_wav(const std::string& from, int times, const std::filesystem::path& to) {
  audio::AudioDecoder decoder(from);
  std::vector<float> samples(16000 * 12);
  samples.resize(decoder.read(samples));
  std::vector<std::int16_t> pcm;
  for (int t = 0; t < times; ++t) {
    for (const float s : samples)
      pcm.push_back(static_cast<std::int16_t>(std::clamp(s, -1.0f, 1.0f) * 32767.0f));
  }
  const auto u32 = [](std::ofstream& o, std::uint32_t v) {
    o.write(reinterpret_cast<const char*>(&v), 4);
  };
  const auto u16 = [](std::ofstream& o, std::uint16_t v) {
    o.write(reinterpret_cast<const char*>(&v), 2);
  };
  std::ofstream o(to, std::ios::binary);
  const auto bytes = static_cast<std::uint32_t>(pcm.size() * 2);
  o.write("RIFF", 4);
  u32(o, 36 + bytes);
  o.write("WAVEfmt ", 8);
  u32(o, 16);
  u16(o, 1);  // PCM
  u16(o, 1);  // mono
  u32(o, 16000);
  u32(o, 32000);
  u16(o, 2);
  u16(o, 16);
  o.write("data", 4);
  u32(o, bytes);
  o.write(reinterpret_cast<const char*>(pcm.data()), bytes);
}

}  // namespace ifw::test
