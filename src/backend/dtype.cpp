#include "backend/dtype.hpp"

#include <bit>
#include <cassert>
#include <cstring>

namespace ifw::backend {

static_assert(std::endian::native == std::endian::little,
              "weight files are little-endian; a big-endian host needs byte swapping here");

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
  }
  return "?";
}

float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  std::uint32_t mantissa = h & 0x3FFu;
  std::uint32_t bits;
  if (exponent == 0x1F) {  // infinity or NaN (payload kept)
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: renormalise
    std::uint32_t e = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

float bfloat16_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

std::uint16_t float_to_half(float value) noexcept {
  const std::uint32_t f = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((f >> 16) & 0x8000u);
  const std::uint32_t abs = f & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // infinity or NaN (keep NaN quiet and non-zero)
    return static_cast<std::uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // result is subnormal or zero: add with a magic number to round
    const float magic = std::bit_cast<float>(0x3F000000u);  // 0.5: aligns the half ulp
    const float r = std::bit_cast<float>(abs) + magic;
    return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(r) - 0x3F000000u));
  }
  // Normal: rebias and round to nearest even on the 13 dropped bits.
  const std::uint32_t odd = (abs >> 13) & 1u;
  const std::uint32_t rounded = abs + 0xC8000FFFu + odd;  // -(112 << 23) + 0xFFF + odd
  return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

std::uint16_t float_to_bfloat16(float value) noexcept {
  const std::uint32_t f = std::bit_cast<std::uint32_t>(value);
  if ((f & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<std::uint16_t>((f >> 16) | 0x40u);  // quiet NaN
  }
  const std::uint32_t odd = (f >> 16) & 1u;
  return static_cast<std::uint16_t>((f + 0x7FFFu + odd) >> 16);
}

void convert_to_float(DType dtype, std::span<const std::byte> raw, std::span<float> dst) {
  assert(raw.size() == dst.size() * dtype_size(dtype));
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst.data(), raw.data(), raw.size());
      return;
    case DType::kF16:
    case DType::kBF16: {
      const auto convert = dtype == DType::kF16 ? half_to_float : bfloat16_to_float;
      for (std::size_t i = 0; i < dst.size(); ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, raw.data() + 2 * i, 2);
        dst[i] = convert(bits);
      }
      return;
    }
  }
}

}  // namespace ifw::backend
