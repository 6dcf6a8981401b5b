// Element types that weights are stored and computed in, and exact conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "backend/element_type.hpp"

namespace ifw::backend {

std::size_t dtype_size(DType dtype) noexcept;
std::string_view dtype_name(DType dtype) noexcept;  // "float32", "float16", "bfloat16"

// IEEE binary16 / bfloat16 bits to float: exact, including subnormals, infinities and NaN.
float half_to_float(std::uint16_t bits) noexcept;
float bfloat16_to_float(std::uint16_t bits) noexcept;
// Round-to-nearest-even, overflow to infinity (as every GPU and numpy do).
std::uint16_t float_to_half(float value) noexcept;
std::uint16_t float_to_bfloat16(float value) noexcept;

// Converts little-endian raw elements of `dtype` to float. `raw` need not be aligned.
// dst.size() * dtype_size(dtype) must equal raw.size().
void convert_to_float(DType dtype, std::span<const std::byte> raw, std::span<float> dst);

}  // namespace ifw::backend
