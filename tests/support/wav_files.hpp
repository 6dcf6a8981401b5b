// WAV files for tests, written byte by byte (no external programs or libraries).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ifw::test {

// A WAV file of `data`: interleaved samples of `bits` bits each, PCM (format 1) or IEEE float
// (format 3).
std::string wav_file(const std::string& data, std::uint32_t rate, std::uint16_t channels,
                     std::uint16_t bits = 16, std::uint16_t format = 1);
// A 16 kHz mono 16-bit PCM WAV file of `samples` (clamped to [-1, 1]).
std::string wav_of(const std::vector<float>& samples);
// A mono 32-bit float WAV file of `samples`, written as they are (NaN included).
std::string float_wav_of(const std::vector<float>& samples, std::uint32_t rate);

}  // namespace ifw::test
