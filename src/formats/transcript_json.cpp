#include "formats/transcript_json.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "util/json.hpp"
#include "util/utf8.hpp"

namespace ifw::formats {
namespace {

// JSON numbers cannot be NaN or infinite; nlohmann would write them as null, losing them.
constexpr const char* kNaN = "NaN";
constexpr const char* kInfinity = "Infinity";
constexpr const char* kMinusInfinity = "-Infinity";

nlohmann::json number_to_json(double value) {
  if (std::isfinite(value)) return value;
  if (std::isnan(value)) return kNaN;
  return value > 0 ? kInfinity : kMinusInfinity;
}

// A JSON string must be UTF-8 (dump() throws otherwise, or replaces bytes when told to), so
// other byte strings are kept as their byte values.
nlohmann::json text_to_json(const std::string& text) {
  if (!util::find_invalid_utf8(text)) return text;
  nlohmann::json bytes = nlohmann::json::array();
  for (const char c : text)
    bytes.push_back(static_cast<unsigned char>(c));
  return bytes;
}

nlohmann::json segment_to_json(const Segment& s) {
  nlohmann::json words = nlohmann::json::array();
  for (const Word& w : s.words) {
    words.push_back({{"text", text_to_json(w.text)},
                     {"start", number_to_json(w.start)},
                     {"end", number_to_json(w.end)}});
  }
  return {{"id", s.id},
          {"seek", s.seek},
          {"start", number_to_json(s.start)},
          {"end", number_to_json(s.end)},
          {"text", text_to_json(s.text)},
          {"tokens", s.tokens},
          {"temperature", number_to_json(s.temperature)},
          {"avg_logprob", number_to_json(s.avg_logprob)},
          {"compression_ratio", number_to_json(s.compression_ratio)},
          {"no_speech_prob", number_to_json(s.no_speech_prob)},
          {"words", std::move(words)}};
}

// Reads one document, naming each bad field by its path from the root ("segments[2].start").
class Reader {
 public:
  explicit Reader(const char* document) : document_(document) {}

  [[noreturn]] void fail(const std::string& path, const std::string& problem) const {
    if (path.empty()) {
      throw Error(ErrorKind::kInvalidArgument, fmt::format("{} JSON: {}", document_, problem));
    }
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{} JSON: field \"{}\" {}", document_, path, problem));
  }
  [[noreturn]] void wrong_type(const nlohmann::json& value, const std::string& path,
                               const char* expected) const {
    fail(path, fmt::format("must be {}, got {}", expected, util::json_excerpt(value)));
  }

  static std::string member(const std::string& path, const char* key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string item(const std::string& path, std::size_t index) {
    return fmt::format("{}[{}]", path, index);
  }

  const nlohmann::json& field(const nlohmann::json& object, const std::string& path,
                              const char* key) const {
    const auto it = object.find(key);
    if (it == object.end()) fail(member(path, key), "is missing");
    return *it;
  }

  void require_object(const nlohmann::json& value, const std::string& path) const {
    if (!value.is_object()) wrong_type(value, path, "an object");
  }
  void require_list(const nlohmann::json& value, const std::string& path) const {
    if (!value.is_array()) wrong_type(value, path, "a list");
  }

  double number(const nlohmann::json& value, const std::string& path) const {
    if (value.is_number()) return value.get<double>();
    if (value.is_string()) {
      const auto& s = value.get_ref<const std::string&>();
      if (s == kNaN) return std::numeric_limits<double>::quiet_NaN();
      if (s == kInfinity) return std::numeric_limits<double>::infinity();
      if (s == kMinusInfinity) return -std::numeric_limits<double>::infinity();
    }
    wrong_type(value, path, "a number (or \"NaN\", \"Infinity\", \"-Infinity\")");
  }

  std::int64_t integer(const nlohmann::json& value, const std::string& path, std::int64_t lo,
                       std::int64_t hi) const {
    const auto v = util::as_integer(value);
    if (!v) wrong_type(value, path, "an integer");
    if (*v < lo || *v > hi) fail(path, fmt::format("is {}, expected {} to {}", *v, lo, hi));
    return *v;
  }
  int int32(const nlohmann::json& value, const std::string& path) const {
    return static_cast<int>(integer(value, path, std::numeric_limits<std::int32_t>::min(),
                                    std::numeric_limits<std::int32_t>::max()));
  }

  bool boolean(const nlohmann::json& value, const std::string& path) const {
    if (!value.is_boolean()) wrong_type(value, path, "true or false");
    return value.get<bool>();
  }

  std::string text(const nlohmann::json& value, const std::string& path) const {
    if (value.is_string()) return value.get<std::string>();
    if (!value.is_array()) wrong_type(value, path, "a string or a list of byte values");
    std::string bytes;
    bytes.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i) {
      bytes.push_back(static_cast<char>(integer(value[i], item(path, i), 0, 255)));
    }
    return bytes;
  }

  Word word(const nlohmann::json& value, const std::string& path) const {
    require_object(value, path);
    Word w;
    w.text = text(field(value, path, "text"), member(path, "text"));
    w.start = number(field(value, path, "start"), member(path, "start"));
    w.end = number(field(value, path, "end"), member(path, "end"));
    return w;
  }

  Segment segment(const nlohmann::json& value, const std::string& path) const {
    require_object(value, path);
    const auto get = [&](const char* key) -> const nlohmann::json& {
      return field(value, path, key);
    };
    Segment s;
    s.id = int32(get("id"), member(path, "id"));
    s.seek = int32(get("seek"), member(path, "seek"));
    s.start = number(get("start"), member(path, "start"));
    s.end = number(get("end"), member(path, "end"));
    s.text = text(get("text"), member(path, "text"));
    const std::string tokens_path = member(path, "tokens");
    const nlohmann::json& tokens = get("tokens");
    require_list(tokens, tokens_path);
    s.tokens.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      s.tokens.push_back(int32(tokens[i], item(tokens_path, i)));
    }
    s.temperature = number(get("temperature"), member(path, "temperature"));
    s.avg_logprob = number(get("avg_logprob"), member(path, "avg_logprob"));
    s.compression_ratio = number(get("compression_ratio"), member(path, "compression_ratio"));
    s.no_speech_prob = number(get("no_speech_prob"), member(path, "no_speech_prob"));
    const std::string words_path = member(path, "words");
    const nlohmann::json& words = get("words");
    require_list(words, words_path);
    s.words.reserve(words.size());
    for (std::size_t i = 0; i < words.size(); ++i) {
      s.words.push_back(word(words[i], item(words_path, i)));
    }
    return s;
  }

  std::vector<Segment> segments(const nlohmann::json& value, const std::string& path) const {
    require_list(value, path);
    std::vector<Segment> out;
    out.reserve(value.size());
    for (std::size_t i = 0; i < value.size(); ++i)
      out.push_back(segment(value[i], item(path, i)));
    return out;
  }

 private:
  const char* document_;
};

}  // namespace

nlohmann::json segments_to_json(const std::vector<Segment>& segments) {
  nlohmann::json out = nlohmann::json::array();
  for (const Segment& s : segments)
    out.push_back(segment_to_json(s));
  return out;
}

std::vector<Segment> segments_from_json(const nlohmann::json& j) {
  return Reader("segments").segments(j, "");
}

nlohmann::json transcript_to_json(const Transcript& t) {
  return {{"task", text_to_json(t.task)},
          {"language", text_to_json(t.language)},
          {"duration", number_to_json(t.duration)},
          {"partial", t.partial},
          {"segments", segments_to_json(t.segments)}};
}

Transcript transcript_from_json(const nlohmann::json& j) {
  const Reader r("transcript");
  r.require_object(j, "");
  Transcript t;
  t.task = r.text(r.field(j, "", "task"), "task");
  t.language = r.text(r.field(j, "", "language"), "language");
  t.duration = r.number(r.field(j, "", "duration"), "duration");
  t.partial = r.boolean(r.field(j, "", "partial"), "partial");
  t.segments = r.segments(r.field(j, "", "segments"), "segments");
  return t;
}

}  // namespace ifw::formats
