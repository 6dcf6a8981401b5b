#include "util/json.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "util/utf8.hpp"

namespace ifw::util {
namespace {

constexpr int kMaxJsonDepth = 64;
// Larger than any configuration or tokenizer file (tokenizer.json is about 2.5 MB).
constexpr std::uintmax_t kMaxJsonFileBytes = 256u << 20;

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  // The parser would take a NUL byte for the end of input and ignore what follows; JSON text
  // cannot contain one, so it is an error here.
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    throw Error(ErrorKind::kInvalidModel,
                source + ": not valid JSON: NUL byte at offset " + std::to_string(nul));
  }
  // Keys seen so far in each open object, innermost last.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const auto track_keys = [&](int depth, nlohmann::json::parse_event_t event,
                              nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    // Model files nest a few levels; deep nesting is an attack on everything that recurses.
    if ((event == E::object_start || event == E::array_start) && depth >= kMaxJsonDepth) {
      throw Error(ErrorKind::kInvalidModel,
                  fmt::format("{}: not valid here: JSON nested deeper than {} levels", source,
                              kMaxJsonDepth));
    }
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text.begin(), text.end(), track_keys);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    std::string what = e.what();
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    throw Error(ErrorKind::kInvalidModel, source + ": not valid JSON: " + what);
  }
  if (!duplicate.empty()) {
    throw Error(ErrorKind::kInvalidModel,
                source + ": key " + quote_for_message(duplicate) + " appears twice in one object");
  }
  return value;
}

std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw Error(ErrorKind::kNotFound, path.string() + ": no such file");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw Error(ErrorKind::kIo, path.string() + ": not a regular file");
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorKind::kIo, path.string() + ": cannot read its size: " + ec.message());
  if (size > kMaxJsonFileBytes) {
    throw Error(ErrorKind::kInvalidModel,
                fmt::format("{}: {} bytes is too large for a text file of a model (limit {})",
                            path.string(), size, kMaxJsonFileBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path.string() + ": cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kIo, path.string() + ": read failed");
  return std::move(buffer).str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json(read_text_file(path), path.string());
}

std::optional<std::int64_t> as_integer(const nlohmann::json& value) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() &&
        value.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      return std::nullopt;
    }
    return value.get<std::int64_t>();
  }
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e15) {
      return static_cast<std::int64_t>(d);
    }
  }
  return std::nullopt;
}

std::string json_excerpt(const nlohmann::json& value, std::size_t max_bytes) {
  // Containers of containers are described, not printed: printing recurses and may be huge.
  if (value.is_structured()) {
    const bool flat = std::none_of(value.begin(), value.end(),
                                   [](const nlohmann::json& v) { return v.is_structured(); });
    if (!flat || value.size() > 16) {
      return fmt::format("{} of {} item(s)", value.is_object() ? "an object" : "a list",
                         value.size());
    }
  }
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > max_bytes) text = text.substr(0, max_bytes) + "...";
  return text;
}

JsonObject::JsonObject(const nlohmann::json& value, std::string source)
    : value_(value), source_(std::move(source)) {
  if (!value_.is_object()) {
    throw Error(ErrorKind::kInvalidModel,
                source_ + ": expected a JSON object, got " + json_excerpt(value_));
  }
}

bool JsonObject::has(std::string_view key) const {
  return find(key) != nullptr;
}

const nlohmann::json* JsonObject::find(std::string_view key) const {
  const auto it = value_.find(std::string(key));
  if (it == value_.end() || it->is_null()) return nullptr;
  return &*it;
}

void JsonObject::fail(std::string_view key, const std::string& problem) const {
  throw Error(ErrorKind::kInvalidModel, fmt::format("{}: field \"{}\" {}", source_, key, problem));
}

std::optional<std::int64_t> JsonObject::get_int(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto i = as_integer(*v);
  if (!i) fail(key, "must be an integer, got " + json_excerpt(*v));
  return i;
}

std::int64_t JsonObject::get_int(std::string_view key, std::int64_t fallback) const {
  return get_int(key).value_or(fallback);
}

std::int64_t JsonObject::require_int(std::string_view key) const {
  const auto i = get_int(key);
  if (!i) fail(key, "is missing");
  return *i;
}

std::int64_t JsonObject::int_in_range(std::string_view key, std::int64_t fallback, std::int64_t lo,
                                      std::int64_t hi) const {
  const std::int64_t v = get_int(key, fallback);
  if (v < lo || v > hi) fail(key, fmt::format("is {}, expected {} to {}", v, lo, hi));
  return v;
}

std::optional<double> JsonObject::get_number(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) fail(key, "must be a number, got " + json_excerpt(*v));
  return v->get<double>();
}

std::optional<bool> JsonObject::get_bool(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) fail(key, "must be true or false, got " + json_excerpt(*v));
  return v->get<bool>();
}

std::optional<std::string> JsonObject::get_string(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail(key, "must be a string, got " + json_excerpt(*v));
  return v->get<std::string>();
}

std::optional<std::vector<std::int64_t>> JsonObject::get_int_list(std::string_view key) const {
  const nlohmann::json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) fail(key, "must be a list of integers, got " + json_excerpt(*v));
  std::vector<std::int64_t> out;
  out.reserve(v->size());
  for (std::size_t i = 0; i < v->size(); ++i) {
    const auto x = as_integer((*v)[i]);
    if (!x) fail(key, fmt::format("item {} must be an integer, got {}", i, json_excerpt((*v)[i])));
    out.push_back(*x);
  }
  return out;
}

}  // namespace ifw::util
