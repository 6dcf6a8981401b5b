// The web page of `ifw serve` (web/: index.html, app.js, app.css), embedded in the binary at build
// time (cmake/IfwWebAssets.cmake) and served at `/`. It works on the job API (docs/JOBS.md).
#pragma once

#include <span>
#include <string_view>

namespace httplib {
class Server;
}

namespace ifw::server {

// One embedded file: its name under web/ and its bytes.
struct WebAsset {
  std::string_view name;
  std::string_view body;
};
// Every embedded file (defined by the generated source).
std::span<const WebAsset> web_assets();

// GET `/` and `/index.html`, `/app.js`, `/app.css`: the page, with its content types, no caching
// without revalidation, and headers that keep it to its own origin. No API key is needed for
// these (the page asks for one when /v1/ answers 401).
void add_web_routes(httplib::Server& server);

}  // namespace ifw::server
