// Strict JSON reading for model files: duplicate keys rejected, every error names file and field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ifw::util {

// Parses text as JSON; `source` names it in errors (a file name, or "file: header").
// A key repeated within one object is an error, not "last one wins".
nlohmann::json parse_json(std::string_view text, const std::string& source);

// Reads and parses a file. Errors are ifw::Error of kind kInvalidModel naming the path
// (kNotFound when it does not exist).
nlohmann::json read_json_file(const std::filesystem::path& path);

// Reads a whole file into a string (ifw::Error naming the path on failure).
std::string read_text_file(const std::filesystem::path& path);

// Typed, named access to one JSON object's fields.
class JsonObject {
 public:
  // Throws when `value` is not an object; `source` names it, e.g. "config.json".
  JsonObject(const nlohmann::json& value, std::string source);

  bool has(std::string_view key) const;
  const nlohmann::json* find(std::string_view key) const;  // nullptr when absent or null

  std::optional<std::int64_t> get_int(std::string_view key) const;
  std::int64_t get_int(std::string_view key, std::int64_t fallback) const;
  std::int64_t require_int(std::string_view key) const;
  std::optional<double> get_number(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<std::vector<std::int64_t>> get_int_list(std::string_view key) const;

  // An int that must lie in [lo, hi]; the error names the field, value and range.
  std::int64_t int_in_range(std::string_view key, std::int64_t fallback, std::int64_t lo,
                            std::int64_t hi) const;

  [[noreturn]] void fail(std::string_view key, const std::string& problem) const;
  const std::string& source() const { return source_; }
  const nlohmann::json& value() const { return value_; }

 private:
  const nlohmann::json& value_;
  std::string source_;
};

// Integer value of a JSON number that is integral (1 and 1.0), or nullopt.
std::optional<std::int64_t> as_integer(const nlohmann::json& value);

// A JSON value for an error message, shortened.
std::string json_excerpt(const nlohmann::json& value, std::size_t max_bytes = 60);

}  // namespace ifw::util
