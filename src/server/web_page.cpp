#include "server/web_page.hpp"

#include <string>

#include <httplib.h>

namespace ifw::server {
namespace {

std::string_view content_type_of(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

void serve(httplib::Response& res, const WebAsset& asset) {
  // no-cache: a browser revalidates, so a new binary's page is seen at the next load.
  res.set_header("Cache-Control", "no-cache");
  // The page loads nothing from elsewhere and talks only to this server: scripts, styles and
  // requests from 'self' alone; never framed (clickjacking), no <base> or plugins.
  res.set_header("Content-Security-Policy",
                 "default-src 'self'; base-uri 'none'; object-src 'none'; form-action 'self'; "
                 "frame-ancestors 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_content(std::string(asset.body), std::string(content_type_of(asset.name)));
}

}  // namespace

void add_web_routes(httplib::Server& server) {
  for (const WebAsset& asset : web_assets()) {
    const auto handler = [&asset](const httplib::Request&, httplib::Response& res) {
      serve(res, asset);
    };
    // cpp-httplib's patterns are regular expressions: the dots are taken literally.
    std::string pattern = "/";
    for (const char c : asset.name)
      pattern += c == '.' ? std::string("\\.") : std::string(1, c);
    server.Get(pattern, handler);
    if (asset.name == "index.html") server.Get("/", handler);
  }
}

}  // namespace ifw::server
