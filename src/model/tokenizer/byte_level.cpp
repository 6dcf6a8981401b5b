#include "model/tokenizer/byte_level.hpp"

#include <array>

#include "util/utf8.hpp"

namespace ifw::model {
namespace {

struct Alphabet {
  std::array<std::string, 256> spelling;
  std::array<int, 512> byte_of_code_point;  // stand-ins are all below U+0200; -1 = not a stand-in

  Alphabet() {
    byte_of_code_point.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest map to U+0100 onwards, in order.
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const int cp = printable(b) ? b : next++;
      util::append_utf8(spelling[static_cast<std::size_t>(b)], static_cast<char32_t>(cp));
      byte_of_code_point[static_cast<std::size_t>(cp)] = b;
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

const std::string& byte_level_char(unsigned char b) {
  return alphabet().spelling[b];
}

std::optional<std::string> byte_level_decode(std::string_view text) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const util::Utf8Step step = util::decode_utf8_step(text, pos);
    if (step.status != util::Utf8Step::Status::kOk ||
        step.code_point >= a.byte_of_code_point.size()) {
      return std::nullopt;
    }
    const int b = a.byte_of_code_point[step.code_point];
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
    pos += step.length;
  }
  return out;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes)
    out += byte_level_char(static_cast<unsigned char>(c));
  return out;
}

}  // namespace ifw::model
