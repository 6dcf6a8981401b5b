// HTTP for model downloads (libcurl): metadata requests and resumable downloads to a file, with
// progress, cancellation and clear errors. One client per thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace ifw::model::hub {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, of the last response
  std::string body;
  std::string effective_url;
};

// Bytes done and total (total 0 when unknown); return false to abort the transfer.
using ProgressCallback = std::function<bool(std::uint64_t done, std::uint64_t total)>;

class HttpClient {
 public:
  // `token`: sent as "Authorization: Bearer ..." (only to the host of the first request when
  // redirects lead elsewhere, as the Hub's own client does).
  explicit HttpClient(std::string token = "");
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Without following redirects when `follow` is false (the Hub puts file metadata on the
  // redirect itself). Throws ifw::Error (kIo) on network failure; HTTP errors are returned.
  HttpResponse head(const std::string& url, bool follow);
  HttpResponse get(const std::string& url);

  // Downloads `url` to `file`, appending from the file's current size (HTTP Range) so that an
  // interrupted download resumes. Returns the final response (status 200 or 206 on success).
  HttpResponse download(const std::string& url, const std::filesystem::path& file,
                        const ProgressCallback& progress);

 private:
  struct Curl;
  std::unique_ptr<Curl> curl_;
  std::string token_;
};

}  // namespace ifw::model::hub
