// OpenAI's audio API as ifw serves it: the multipart fields of /v1/audio/transcriptions and
// /v1/audio/translations checked into a request, and errors in OpenAI's shape
// {"error": {"message", "type", "param", "code"}} with their HTTP status.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "formats/formats.hpp"

namespace ifw::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type, std::string param = "",
           std::string code = "");
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }  // "" is JSON null
  const std::string& code() const { return code_; }    // "" is JSON null
  std::string body() const;                            // the JSON document

  // The usual cases.
  static ApiError bad_request(std::string message, std::string param = "",
                              std::string code = "invalid_value");
  static ApiError unauthorized(std::string message);
  static ApiError model_not_found(const std::string& model);
  static ApiError too_large(std::size_t limit_bytes);
  static ApiError busy(std::string message, int status);  // 429 or 503, with Retry-After

 private:
  int status_;
  std::string type_, param_, code_;
};

// One part of a multipart/form-data body.
struct FormField {
  std::string name;
  std::string content;
  std::string filename;  // set for file parts
  std::string content_type;
};

enum class ResponseFormat { kJson, kText, kSrt, kVerboseJson, kVtt };

struct TranscriptionRequest {
  std::string task;                     // "transcribe" or "translate"
  std::string_view audio;               // the uploaded file's bytes, in the parsed fields
  std::string filename;                 // its name, without any folder (for logs and format hints)
  std::string model;                    // "" when absent: the server's default
  std::optional<std::string> language;  // ISO 639-1 code, as OpenAI takes it
  std::string prompt;
  ResponseFormat response_format = ResponseFormat::kJson;
  double temperature = 0.0;
  bool word_timestamps = false;
  bool segment_timestamps = true;
  bool stream = false;
};

// Throws ApiError (400) naming the field and the bad value. The request's `audio` points into
// `fields`, which must outlive it. Fields OpenAI's clients may send that
// ifw does not use are ignored.
TranscriptionRequest parse_transcription_request(const std::vector<FormField>& fields,
                                                 const std::string& task);

std::string_view content_type(ResponseFormat format);
formats::Format file_format(ResponseFormat format);
std::string_view response_format_name(ResponseFormat format);

// "../../etc/passwd" -> "passwd"; control characters and quotes replaced; never empty.
std::string safe_filename(const std::string& name);

}  // namespace ifw::server
