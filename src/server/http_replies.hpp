// What the server's routes (OpenAI's and the job API's) reply with for JSON and for errors.
#pragma once

#include <httplib.h>

#include "server/openai_api.hpp"

namespace ifw::server {

inline constexpr const char* kJsonContentType = "application/json";

// An error in OpenAI's shape, with its status; 429 and 503 also say when to try again.
inline void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  if (e.status() == 429 || e.status() == 503) res.set_header("Retry-After", "5");
  res.set_content(e.body(), kJsonContentType);
}

}  // namespace ifw::server
