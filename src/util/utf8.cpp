#include "util/utf8.hpp"

#include <fmt/format.h>

namespace ifw::util {
namespace {

constexpr bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

}  // namespace

Utf8Step decode_utf8_step(std::string_view text, std::size_t pos) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {Utf8Step::Status::kOk, 1, lead};

  std::size_t need;
  char32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
    cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Step::Status::kInvalid, 1, 0};
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (pos + k >= text.size()) return {Utf8Step::Status::kTruncated, k, 0};
    const unsigned char c = byte(pos + k);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : is_continuation(c);
    if (!ok) return {Utf8Step::Status::kInvalid, k, 0};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {Utf8Step::Status::kOk, need + 1, cp};
}

std::optional<std::size_t> find_invalid_utf8(std::string_view text) noexcept {
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Step step = decode_utf8_step(text, pos);
    if (step.status != Utf8Step::Status::kOk) return pos;
    pos += step.length;
  }
  return std::nullopt;
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (std::size_t pos = 0; pos < bytes.size();) {
    const Utf8Step step = decode_utf8_step(bytes, pos);
    if (step.status == Utf8Step::Status::kOk) {
      out.append(bytes.substr(pos, step.length));
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD REPLACEMENT CHARACTER
    }
    pos += step.length;
  }
  return out;
}

std::size_t incomplete_utf8_suffix(std::string_view bytes) noexcept {
  // A character is at most 4 bytes, so only the last 3 positions can start an unfinished one.
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const std::size_t pos = n - back;
    const Utf8Step step = decode_utf8_step(bytes, pos);
    if (step.status == Utf8Step::Status::kTruncated && step.length == back) return back;
  }
  return 0;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string quote_for_message(std::string_view text, std::size_t max_bytes) {
  std::string out = "\"";
  std::size_t pos = 0;
  while (pos < text.size() && pos < max_bytes) {
    const Utf8Step step = decode_utf8_step(text, pos);
    if (step.status != Utf8Step::Status::kOk) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[pos]));
      pos += 1;
      continue;
    }
    const char32_t cp = step.code_point;
    if (cp == '"' || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned>(cp));
    } else {
      out.append(text.substr(pos, step.length));
    }
    pos += step.length;
  }
  if (pos < text.size()) out += "...";
  out += '"';
  return out;
}

}  // namespace ifw::util
