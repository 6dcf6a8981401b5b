// Test recordings made from the reference one, without external programs.
#pragma once

#include <filesystem>
#include <string>

namespace ifw::test {

// The recording at `from` (decoded at 16 kHz, its first 12 s) `times` times over, as a 16-bit
// mono WAV file at `to`.
void write_repeated_wav(const std::string& from, int times, const std::filesystem::path& to);

}  // namespace ifw::test
