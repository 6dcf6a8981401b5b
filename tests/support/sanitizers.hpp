// Whether the tests were built under AddressSanitizer: resident memory means little there, and
// everything takes several times as long.
#pragma once

namespace ifw::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace ifw::test
