// SHA-256 (OpenSSL) for checking that bytes were read exactly.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace ifw::test {

// Hex digest of the parts, hashed one after the other as a single message.
std::string sha256_hex(const std::vector<std::span<const std::byte>>& parts);

}  // namespace ifw::test
