#include "server/openai_api.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "model/languages.hpp"
#include "util/utf8.hpp"

namespace ifw::server {
namespace {

constexpr std::size_t kMaxPromptBytes = 16 * 1024;
constexpr std::size_t kMaxModelNameBytes = 256;

// A value as shown in a message: short, and with nothing that could break the line.
std::string shown(const std::string& value) {
  std::size_t cut = std::min<std::size_t>(value.size(), 60);
  while (cut > 0 && cut < value.size() && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80)
    --cut;  // not inside a UTF-8 character
  std::string s = value.substr(0, cut);
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"') c = '?';
  }
  return cut < value.size() ? s + "..." : s;
}

// Each response format: its name in requests, how ifw renders it, the content type OpenAI sends.
struct FormatInfo {
  ResponseFormat format;
  std::string_view name;
  formats::Format rendered_as;
  std::string_view content_type;
};
constexpr FormatInfo kFormats[] = {
    {ResponseFormat::kJson, "json", formats::Format::kJson, "application/json"},
    {ResponseFormat::kText, "text", formats::Format::kTxt, "text/plain; charset=utf-8"},
    {ResponseFormat::kSrt, "srt", formats::Format::kSrt, "text/plain; charset=utf-8"},
    {ResponseFormat::kVerboseJson, "verbose_json", formats::Format::kVerboseJson,
     "application/json"},
    {ResponseFormat::kVtt, "vtt", formats::Format::kVtt, "text/plain; charset=utf-8"},
};

const FormatInfo& info(ResponseFormat format) {
  return *std::find_if(std::begin(kFormats), std::end(kFormats),
                       [&](const FormatInfo& f) { return f.format == format; });
}

std::optional<ResponseFormat> parse_response_format(const std::string& s) {
  for (const FormatInfo& f : kFormats) {
    if (f.name == s) return f.format;
  }
  return std::nullopt;
}

bool parse_bool(const std::string& name, const std::string& value) {
  if (value == "true" || value == "True" || value == "1") return true;
  if (value == "false" || value == "False" || value == "0") return false;
  throw ApiError::bad_request(
      fmt::format("'{}' must be true or false, not \"{}\"", name, shown(value)), name);
}

}  // namespace

ApiError::ApiError(int status, std::string message, std::string type, std::string param,
                   std::string code)
    : std::runtime_error(std::move(message)),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

std::string ApiError::body() const {
  const auto or_null = [](const std::string& s) {
    return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
  };
  const nlohmann::json j = {{"error",
                             {{"message", what()},
                              {"type", type_},
                              {"param", or_null(param_)},
                              {"code", or_null(code_)}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

ApiError ApiError::bad_request(std::string message, std::string param, std::string code) {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

ApiError ApiError::unauthorized(std::string message) {
  return {401, std::move(message), "invalid_request_error", "", "invalid_api_key"};
}

ApiError ApiError::model_not_found(const std::string& model) {
  return {404, fmt::format("The model '{}' does not exist on this server", shown(model)),
          "invalid_request_error", "model", "model_not_found"};
}

ApiError ApiError::too_large(std::size_t limit_bytes) {
  return {413,
          fmt::format("The upload is larger than this server's limit of {} MiB",
                      limit_bytes / (1024 * 1024)),
          "invalid_request_error", "file", "file_too_large"};
}

ApiError ApiError::busy(std::string message, int status) {
  return {status, std::move(message), status == 429 ? "rate_limit_error" : "server_error", "",
          status == 429 ? "rate_limit_exceeded" : "server_unavailable"};
}

TranscriptionRequest parse_transcription_request(const std::vector<FormField>& fields,
                                                 const std::string& task) {
  TranscriptionRequest r;
  r.task = task;
  std::set<std::string> seen;
  std::vector<std::string> granularities;
  bool have_file = false;
  for (const FormField& f : fields) {
    const bool repeatable = f.name == "timestamp_granularities[]" || f.name == "include[]";
    if (!repeatable && !seen.insert(f.name).second) {
      throw ApiError::bad_request(fmt::format("'{}' is given more than once", shown(f.name)),
                                  shown(f.name));
    }
    if (f.name == "file") {
      if (f.filename.empty()) {
        throw ApiError::bad_request("'file' must be an uploaded file, not a text field", "file");
      }
      if (f.content.empty()) throw ApiError::bad_request("the uploaded file is empty", "file");
      r.audio = f.content;
      r.filename = safe_filename(f.filename);
      have_file = true;
      continue;
    }
    if (!f.filename.empty()) {
      throw ApiError::bad_request(
          fmt::format("'{}' must be a text field, not a file", shown(f.name)), shown(f.name));
    }
    const std::string& v = f.content;
    if (f.name == "model") {
      if (v.size() > kMaxModelNameBytes)
        throw ApiError::bad_request("'model' is too long", "model");
      r.model = v;
    } else if (f.name == "language") {
      if (!v.empty()) {
        if (!model::language_index(v)) {
          throw ApiError::bad_request(
              fmt::format("'language' \"{}\" is not a language Whisper knows (use an ISO-639-1 "
                          "code such as en, de, ja)",
                          shown(v)),
              "language");
        }
        r.language = v;
      }
    } else if (f.name == "prompt") {
      if (v.size() > kMaxPromptBytes) {
        throw ApiError::bad_request(
            fmt::format("'prompt' is longer than {} bytes", kMaxPromptBytes), "prompt");
      }
      r.prompt = v;
    } else if (f.name == "response_format") {
      const auto format = parse_response_format(v);
      if (!format) {
        throw ApiError::bad_request(
            fmt::format("'response_format' \"{}\" is not one of json, text, srt, verbose_json, vtt",
                        shown(v)),
            "response_format");
      }
      r.response_format = *format;
    } else if (f.name == "temperature") {
      double t = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), t);
      if (ec != std::errc() || end != v.data() + v.size() || !std::isfinite(t) || t < 0 || t > 1) {
        throw ApiError::bad_request(
            fmt::format("'temperature' must be a number from 0 to 1, not \"{}\"", shown(v)),
            "temperature");
      }
      r.temperature = t;
    } else if (f.name == "timestamp_granularities[]" || f.name == "timestamp_granularities") {
      if (v != "word" && v != "segment") {
        throw ApiError::bad_request(
            fmt::format("'timestamp_granularities[]' \"{}\" is not word or segment", shown(v)),
            "timestamp_granularities[]");
      }
      granularities.push_back(v);
    } else if (f.name == "stream") {
      r.stream = parse_bool("stream", v);
    }
    // Anything else (chunking_strategy, include[], ...) is accepted and not used.
  }
  if (!have_file)
    throw ApiError::bad_request("'file' is required", "file", "missing_required_parameter");
  if (!granularities.empty()) {
    r.word_timestamps = std::ranges::count(granularities, "word") > 0;
    r.segment_timestamps = std::ranges::count(granularities, "segment") > 0;
    if (r.response_format != ResponseFormat::kVerboseJson) {
      throw ApiError::bad_request("'timestamp_granularities[]' needs response_format verbose_json",
                                  "timestamp_granularities[]");
    }
  }
  if (r.stream && r.response_format != ResponseFormat::kJson &&
      r.response_format != ResponseFormat::kText) {
    throw ApiError::bad_request(
        fmt::format("'stream' works with response_format json or text, not {}",
                    response_format_name(r.response_format)),
        "stream");
  }
  return r;
}

std::string_view content_type(ResponseFormat format) {
  return info(format).content_type;  // OpenAI sends subtitles as plain text too
}

formats::Format file_format(ResponseFormat format) {
  return info(format).rendered_as;
}

std::string_view response_format_name(ResponseFormat format) {
  return info(format).name;
}

std::string safe_filename(const std::string& name) {
  std::string base = name;
  const auto slash = base.find_last_of("/\\");
  if (slash != std::string::npos) base = base.substr(slash + 1);
  for (char& c : base) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == 0x7f) c = '_';
  }
  if (base.empty() || base == "." || base == "..") base = "upload";
  // Valid UTF-8 (names go into JSON, headers and ZIP archives), cut at a character boundary.
  base = util::to_valid_utf8(base);
  if (base.size() > 200) {
    base.resize(200);
    base.resize(200 - util::incomplete_utf8_suffix(base));
  }
  return base;
}

}  // namespace ifw::server
