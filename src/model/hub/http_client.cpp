#include "model/hub/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <mutex>

#include <curl/curl.h>
#include <fmt/format.h>

#include <ifw/error.hpp>
#include <ifw/version.hpp>

namespace ifw::model::hub {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& r = *static_cast<HttpResponse*>(user);
  const std::string line(data, size * count);
  if (line.starts_with("HTTP/")) r.headers.clear();  // a new response (after a redirect)
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    const auto b = value.find_first_not_of(" \t");
    const auto e = value.find_last_not_of(" \t\r\n");
    r.headers[name] = b == std::string::npos ? "" : value.substr(b, e - b + 1);
  }
  return size * count;
}

std::size_t to_string(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::size_t to_file(char* data, std::size_t size, std::size_t count, void* user) {
  return std::fwrite(data, size, count, static_cast<std::FILE*>(user)) * size;
}

struct ProgressState {
  const ProgressCallback* callback;
  std::uint64_t offset;
};

int on_progress(void* user, curl_off_t total, curl_off_t done, curl_off_t, curl_off_t) {
  const auto& p = *static_cast<ProgressState*>(user);
  if (p.callback == nullptr || !*p.callback) return 0;
  const std::uint64_t whole = total > 0 ? p.offset + static_cast<std::uint64_t>(total) : 0;
  return (*p.callback)(p.offset + static_cast<std::uint64_t>(done), whole) ? 0 : 1;
}

}  // namespace

struct HttpClient::Curl {
  CURL* handle = nullptr;
  curl_slist* headers = nullptr;
  ~Curl() {
    curl_slist_free_all(headers);
    if (handle != nullptr) curl_easy_cleanup(handle);
  }
};

HttpClient::HttpClient(std::string token)
    : curl_(std::make_unique<Curl>()), token_(std::move(token)) {
  global_init();
  curl_->handle = curl_easy_init();
  if (curl_->handle == nullptr) throw Error(ErrorKind::kIo, "libcurl could not start");
}

HttpClient::~HttpClient() = default;

namespace {

// Common settings of every request; `headers` receives the request headers list to free.
void prepare(CURL* c, const std::string& url, const std::string& token, curl_slist*& headers,
             HttpResponse& r) {
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_USERAGENT, fmt::format("ifw/{}", version()).c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
  // A transfer that stalls (under 1 kB/s for 60 s) is failed rather than waited for forever.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_slist_free_all(headers);
  headers = nullptr;
  if (!token.empty())
    headers = curl_slist_append(headers, ("Authorization: Bearer " + token).c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  // The token goes to the Hub only, not to the storage a redirect points at.
  curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
}

void perform(CURL* c, const std::string& url, HttpResponse& r) {
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    throw Error(ErrorKind::kIo, fmt::format("{}: {}", url, curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  char* effective = nullptr;
  curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &effective);
  if (effective != nullptr) r.effective_url = effective;
}

}  // namespace

HttpResponse HttpClient::head(const std::string& url, bool follow) {
  HttpResponse r;
  prepare(curl_->handle, url, token_, curl_->headers, r);
  curl_easy_setopt(curl_->handle, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(curl_->handle, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
  perform(curl_->handle, url, r);
  return r;
}

HttpResponse HttpClient::get(const std::string& url) {
  HttpResponse r;
  prepare(curl_->handle, url, token_, curl_->headers, r);
  curl_easy_setopt(curl_->handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl_->handle, CURLOPT_WRITEFUNCTION, to_string);
  curl_easy_setopt(curl_->handle, CURLOPT_WRITEDATA, &r.body);
  perform(curl_->handle, url, r);
  return r;
}

HttpResponse HttpClient::download(const std::string& url, const std::filesystem::path& file,
                                  const ProgressCallback& progress) {
  std::error_code ec;
  const std::uint64_t have =
      std::filesystem::exists(file, ec) ? std::filesystem::file_size(file, ec) : 0;
  std::unique_ptr<std::FILE, FileCloser> out(std::fopen(file.c_str(), have > 0 ? "ab" : "wb"));
  if (!out) throw Error(ErrorKind::kIo, fmt::format("{}: cannot write", file.string()));
  HttpResponse r;
  prepare(curl_->handle, url, token_, curl_->headers, r);
  curl_easy_setopt(curl_->handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl_->handle, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl_->handle, CURLOPT_WRITEFUNCTION, to_file);
  curl_easy_setopt(curl_->handle, CURLOPT_WRITEDATA, out.get());
  if (have > 0)
    curl_easy_setopt(curl_->handle, CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(have));
  ProgressState state{&progress, have};
  curl_easy_setopt(curl_->handle, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl_->handle, CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(curl_->handle, CURLOPT_NOPROGRESS, 0L);
  const CURLcode rc = curl_easy_perform(curl_->handle);
  curl_easy_getinfo(curl_->handle, CURLINFO_RESPONSE_CODE, &r.status);
  if (std::fflush(out.get()) != 0)
    throw Error(ErrorKind::kIo, fmt::format("{}: write failed", file.string()));
  if (rc == CURLE_ABORTED_BY_CALLBACK)
    throw Error(ErrorKind::kIo, fmt::format("{}: download cancelled", url));
  if (rc != CURLE_OK) {
    throw Error(ErrorKind::kIo,
                fmt::format("{}: {}{}", url, curl_easy_strerror(rc),
                            r.status >= 400 ? fmt::format(" (HTTP {})", r.status) : ""));
  }
  if (have > 0 && r.status == 200) {
    // The server ignored the range and sent the whole file after what we had: start over.
    out.reset();
    std::filesystem::remove(file, ec);
    return download(url, file, progress);
  }
  return r;
}

}  // namespace ifw::model::hub
