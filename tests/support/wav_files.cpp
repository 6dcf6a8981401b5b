#include "support/wav_files.hpp"

#include <algorithm>
#include <cmath>

namespace ifw::test {

std::string wav_file(const std::string& data, std::uint32_t rate, std::uint16_t channels,
                     std::uint16_t bits, std::uint16_t format) {
  const auto u32 = [](std::uint32_t v) {
    return std::string(reinterpret_cast<const char*>(&v), 4);
  };
  const auto u16 = [](std::uint16_t v) {
    return std::string(reinterpret_cast<const char*>(&v), 2);
  };
  const auto block = static_cast<std::uint16_t>(channels * (bits / 8));
  std::string out = "RIFF";
  out += u32(36 + static_cast<std::uint32_t>(data.size()));
  out += "WAVEfmt ";
  out += u32(16) + u16(format) + u16(channels) + u32(rate) + u32(rate * block) + u16(block) +
         u16(bits);
  out += "data";
  out += u32(static_cast<std::uint32_t>(data.size()));
  return out + data;
}

std::string wav_of(const std::vector<float>& samples) {
  std::string data;
  for (const float v : samples) {
    const auto q = static_cast<std::int16_t>(std::lround(std::clamp(v, -1.0f, 1.0f) * 32767.0f));
    data.append(reinterpret_cast<const char*>(&q), 2);
  }
  return wav_file(data, 16000, 1);
}

std::string float_wav_of(const std::vector<float>& samples, std::uint32_t rate) {
  const std::string data(reinterpret_cast<const char*>(samples.data()),
                         samples.size() * sizeof(float));
  return wav_file(data, rate, 1, 32, 3);
}

}  // namespace ifw::test
