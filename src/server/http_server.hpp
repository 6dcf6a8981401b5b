// `ifw serve`'s HTTP front on cpp-httplib: OpenAI's audio endpoints, /v1/models, health,
// readiness, Prometheus metrics and the cache's admin endpoints, with API-key checks, an upload
// limit, errors in OpenAI's shape and server-sent events for `stream=true`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "server/transcription_service.hpp"

namespace httplib {
class Server;
}

namespace ifw::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (bind() says which)
  std::size_t max_upload_bytes = std::size_t{256} << 20;
  std::chrono::seconds read_timeout{30};   // a client that stops sending mid-request
  std::chrono::seconds write_timeout{30};  // a client that stops reading
  std::chrono::seconds keep_alive_timeout{5};
  int connection_threads = 96;  // connections served at once; more wait to be accepted
  std::string api_key;          // IFW_API_KEY: required as a Bearer token on /v1/ when set
  std::string admin_token;      // IFW_ADMIN_TOKEN: required on /admin/; off when empty
};

class JobManager;

class HttpServer {
 public:
  // `jobs`: the job API and the web page on top of it (nullptr: the OpenAI endpoints alone).
  HttpServer(TranscriptionService& service, HttpOptions options, JobManager* jobs = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port. Throws ifw::Error (kIo) naming host and port.
  int bind();
  // Serves until stop(); returns once every connection's handler has returned: true, or false
  // when the listening socket failed before stop() (logged).
  bool run();
  // Stops accepting connections and ends idle keep-alive ones; requests under way go on. Safe
  // from any thread, once bind() has returned.
  void stop();

 private:
  void add_routes();

  TranscriptionService& service_;
  HttpOptions options_;
  JobManager* jobs_;
  std::unique_ptr<httplib::Server> server_;
  struct Counters;
  std::unique_ptr<Counters> counters_;
  std::atomic<bool> running_{false}, stopping_{false}, finished_{false};
};

}  // namespace ifw::server
