#include "server/http_server.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <ifw/error.hpp>

#include "formats/formats.hpp"
#include "server/connection_watch.hpp"
#include "server/http_replies.hpp"
#include "server/job_manager.hpp"
#include "server/jobs_api.hpp"
#include "server/metrics.hpp"
#include "server/web_page.hpp"

namespace ifw::server {

// Requests answered, by route and status (the route's pattern, so that the number of label
// values stays bounded whatever paths clients send).
struct HttpServer::Counters {
  std::mutex mutex;
  std::map<std::pair<std::string, int>, std::uint64_t> responses;
};

namespace {

std::string route_of(const std::string& path) {
  static const char* const kRoutes[] = {"/v1/audio/transcriptions",
                                        "/v1/audio/translations",
                                        "/v1/models",
                                        "/health",
                                        "/ready",
                                        "/metrics",
                                        "/admin/cache",
                                        "/admin/cache/clear",
                                        "/v1/jobs",
                                        "/v1/jobs/archive",
                                        "/",
                                        "/app.js",
                                        "/app.css"};
  for (const char* r : kRoutes) {
    if (path == r) return r;
  }
  if (path.starts_with("/v1/models/")) return "/v1/models/{id}";
  if (path.starts_with("/v1/jobs/job_")) {
    for (const char* tail : {"/events", "/result", "/archive"}) {
      if (path.ends_with(tail)) return std::string("/v1/jobs/{id}") + tail;
    }
    return "/v1/jobs/{id}";
  }
  return "other";
}

// "Bearer <token>" against the expected token, in time independent of where they differ.
bool bearer_matches(const httplib::Request& req, const std::string& expected) {
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kPrefix = "Bearer ";
  if (!header.starts_with(kPrefix)) return false;
  const std::string_view given = std::string_view(header).substr(kPrefix.size());
  return given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

// After an answer given before the body was read (refused by pre-routing), the body must not be
// taken for the next request on the connection: once the answer is written (the logger runs
// then) no more is read from it, so it closes. Before the answer it would not be sent at all:
// cpp-httplib takes a socket that reads as closed for a dead one.
void stop_reading(const httplib::Request& req) {
  if (const auto watch = ConnectionWatch::find(req.remote_addr, req.remote_port, req.local_port)) {
    if (::shutdown(watch->descriptor(), SHUT_RD) != 0)
      spdlog::warn("could not close a refused request's connection: {}", std::strerror(errno));
  }
}

bool has_body(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding") ||
         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
}

std::vector<FormField> form_fields(const httplib::Request& req) {
  std::vector<FormField> fields;
  for (const auto& [name, part] : req.files)
    fields.push_back({part.name, part.content, part.filename, part.content_type});
  return fields;
}

// The response body of a finished transcript in the requested format.
std::string render(const Transcript& t, const TranscriptionRequest& request) {
  std::string body = formats::render(t, file_format(request.response_format));
  if (request.response_format == ResponseFormat::kVerboseJson && !request.segment_timestamps) {
    // Only words were asked for: OpenAI leaves the segments out.
    auto j = nlohmann::ordered_json::parse(body);
    j.erase("segments");
    body = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  return body;
}

std::string sse_event(const nlohmann::ordered_json& data) {
  return "data: " + data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

// What a streaming request has decoded and not yet sent. Filled on the scheduler's thread, read
// on the connection's.
struct StreamState {
  std::mutex mutex;
  std::string pending;
};

}  // namespace

HttpServer::HttpServer(TranscriptionService& service, HttpOptions options, JobManager* jobs)
    : service_(service),
      options_(std::move(options)),
      jobs_(jobs),
      server_(std::make_unique<httplib::Server>()),
      counters_(std::make_unique<Counters>()) {
  const int threads = std::max(options_.connection_threads, 4);
  // cpp-httplib takes ownership of the queue it is given (and deletes it).
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(options_.max_upload_bytes);
  server_->set_read_timeout(options_.read_timeout);
  server_->set_write_timeout(options_.write_timeout);
  server_->set_keep_alive_timeout(options_.keep_alive_timeout.count());
  // cpp-httplib closes a keep-alive connection after 5 requests by default; clients that send
  // many (OpenAI's keep their connections) would pay a new connection and thread each time.
  server_->set_keep_alive_max_count(1000);
  add_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const int port = options_.port == 0 ? server_->bind_to_any_port(options_.host)
                   : server_->bind_to_port(options_.host, options_.port) ? options_.port
                                                                         : -1;
  if (port <= 0) {
    throw Error(ErrorKind::kIo, fmt::format("cannot listen on {}:{} (in use, or not an address "
                                            "of this machine?)",
                                            options_.host, options_.port));
  }
  return port;
}

bool HttpServer::run() {
  running_ = true;
  const bool listened = stopping_ || server_->listen_after_bind();
  finished_ = true;
  if (!listened && !stopping_) {
    spdlog::error("the server stopped accepting connections (the listening socket failed)");
    return false;
  }
  return true;
}

void HttpServer::stop() {
  // cpp-httplib's stop() does nothing before its loop has started, and the loop would then run
  // for ever: wait for it to start (at once) unless run() has not been called or has returned.
  if (stopping_.exchange(true)) return;  // once: cpp-httplib's stop() is not idempotent
  if (!running_) return;                 // run() will see stopping_ and not start
  while (!server_->is_running() && !finished_)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server_->stop();
}

void HttpServer::add_routes() {
  httplib::Server& s = *server_;

  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    // Called once the response is written. A body left unread (refused early, or over the
    // upload limit) must not be read as the next request.
    if (res.get_header_value("Connection") == "close" || res.status == 413) stop_reading(req);
    {
      const std::lock_guard lock(counters_->mutex);
      ++counters_->responses[{route_of(req.path), res.status}];
    }
    spdlog::debug("{} {} {} -> {}", req.remote_addr, req.method, req.path, res.status);
  });

  // Runs before the body is read: refusals here cost no upload.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    using R = httplib::Server::HandlerResponse;
    const auto refuse = [&](const ApiError& e) {
      send_error(res, e);
      if (has_body(req)) res.set_header("Connection", "close");  // the logger closes it
      return R::Handled;
    };
    // cpp-httplib checks the upload limit against Content-Length only, and would inflate a
    // compressed body without bound: bodies must state their length and come as they are.
    if (req.has_header("Transfer-Encoding") ||
        (req.method == "POST" && !req.has_header("Content-Length"))) {
      return refuse(ApiError(411, "Send the body with a Content-Length (not chunked)",
                             "invalid_request_error", "", "length_required"));
    }
    if (const std::string encoding = req.get_header_value("Content-Encoding");
        !encoding.empty() && encoding != "identity") {
      return refuse(ApiError(415,
                             fmt::format("Content-Encoding {} is not accepted; send the upload "
                                         "as it is",
                                         encoding.substr(0, 40)),
                             "invalid_request_error", "", "unsupported_encoding"));
    }
    if (req.path.starts_with("/admin/")) {
      if (options_.admin_token.empty()) {
        return refuse(ApiError(403,
                               "The admin endpoints are off; start the server with "
                               "IFW_ADMIN_TOKEN set to use them",
                               "invalid_request_error", "", "admin_disabled"));
      }
      if (!bearer_matches(req, options_.admin_token)) {
        return refuse(ApiError::unauthorized(
            "The admin endpoints need 'Authorization: Bearer <IFW_ADMIN_TOKEN>'"));
      }
    } else if (req.path.starts_with("/v1/") && !options_.api_key.empty() &&
               !bearer_matches(req, options_.api_key)) {
      return refuse(ApiError::unauthorized(
          req.has_header("Authorization")
              ? "Incorrect API key provided"
              : "You didn't provide an API key; send 'Authorization: Bearer <key>' (the "
                "server's IFW_API_KEY)"));
    }
    return R::Unhandled;
  });

  // Errors cpp-httplib answers itself (no route, body over the limit, unreadable body) get
  // OpenAI's shape too.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                  httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e = [&] {
      switch (res.status) {
        case 404:
          return ApiError(
              404,
              fmt::format("There is no {} {} on this server", req.method, req.path.substr(0, 200)),
              "invalid_request_error", "", "not_found");
        case 413:
          return ApiError::too_large(options_.max_upload_bytes);
        case 400:
          return ApiError::bad_request(
              "The request could not be read: malformed or truncated headers or body", "",
              "malformed_request");
        default:
          return ApiError(res.status, fmt::format("HTTP {}", res.status),
                          res.status >= 500 ? "server_error" : "invalid_request_error");
      }
    }();
    res.set_content(e.body(), kJsonContentType);
    return httplib::Server::HandlerResponse::Handled;
  }));

  s.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                             std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {  // reported below: nothing is swallowed
    }
    spdlog::error("{} {}: {}", req.method, req.path, what);
    send_error(
        res, ApiError(500, "The server failed on this request; its log says why", "server_error"));
  });

  const auto audio = [this](const std::string& task) {
    return [this, task](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!req.is_multipart_form_data()) {
          throw ApiError::bad_request(
              "The body must be multipart/form-data with the audio in a 'file' field", "file");
        }
        auto fields = std::make_shared<std::vector<FormField>>(form_fields(req));
        const TranscriptionRequest request = parse_transcription_request(*fields, task);
        service_.model_key(request.model);  // 404 before anything is stored or queued
        const auto watch = ConnectionWatch::find(req.remote_addr, req.remote_port, req.local_port);
        const auto client_gone = [watch] { return watch && watch->client_gone(); };

        if (!request.stream) {
          const auto transcription = service_.start(request);
          fields.reset();  // the upload is on disk now
          const std::optional<Transcript> t = transcription->wait(client_gone);
          if (!t) {
            res.status = 499;  // nobody to answer (nginx's "client closed request", for the log)
            return;
          }
          res.set_content(render(*t, request), std::string(content_type(request.response_format)));
          return;
        }

        auto stream = std::make_shared<StreamState>();
        std::shared_ptr<TranscriptionService::Transcription> transcription =
            service_.start(request, [stream](const pipeline::ProgressEvent& e) {
              if (e.kind != pipeline::ProgressEvent::Kind::kWindowDone || e.text.empty()) return;
              const std::lock_guard lock(stream->mutex);
              stream->pending += e.text;
            });
        fields.reset();
        // Sent as it comes: a delta per decoded window, then the whole text.
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream",
            [transcription, stream, client_gone](std::size_t, httplib::DataSink& sink) {
              std::string sent;  // what the deltas said so far (leading spaces left out)
              bool broken = false;
              const auto flush = [&] {
                std::string piece;
                {
                  const std::lock_guard lock(stream->mutex);
                  piece.swap(stream->pending);
                }
                if (sent.empty()) piece.erase(0, piece.find_first_not_of(' '));
                if (piece.empty() || piece.find_first_not_of(' ') == std::string::npos) return;
                sent += piece;
                const std::string event =
                    sse_event({{"type", "transcript.text.delta"}, {"delta", piece}});
                if (!sink.write(event.data(), event.size())) broken = true;
              };
              try {
                const auto t = transcription->wait([&] { return broken || client_gone(); }, flush);
                if (!t) return false;
                flush();
                const std::string done =
                    sse_event({{"type", "transcript.text.done"}, {"text", t->text()}});
                if (!sink.write(done.data(), done.size())) return false;
              } catch (const ApiError& e) {
                const std::string error = "data: " + e.body() + "\n";
                if (!sink.write(error.data(), error.size())) return false;
              } catch (const std::exception& e) {
                // Past cpp-httplib's own exception handling: nothing may escape this thread.
                spdlog::error("streaming a transcript: {}", e.what());
                return false;
              }
              sink.done();
              return true;
            });
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  s.Post("/v1/audio/transcriptions", audio("transcribe"));
  s.Post("/v1/audio/translations", audio("translate"));

  const auto model_object = [](const std::string& id) {
    return nlohmann::json{{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "ifw"}};
  };
  s.Get("/v1/models", [this, model_object](const httplib::Request&, httplib::Response& res) {
    nlohmann::json data = nlohmann::json::array();
    for (const std::string& id : service_.model_ids())
      data.push_back(model_object(id));
    res.set_content(nlohmann::json{{"object", "list"}, {"data", data}}.dump() + "\n",
                    kJsonContentType);
  });
  s.Get(R"(/v1/models/(.+))",
        [this, model_object](const httplib::Request& req, httplib::Response& res) {
          const std::string id = req.matches[1];
          const auto ids = service_.model_ids();
          if (std::ranges::find(ids, id) == ids.end()) {
            send_error(res, ApiError::model_not_found(id));
            return;
          }
          res.set_content(model_object(id).dump() + "\n", kJsonContentType);
        });

  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"status\":\"ok\"}\n", kJsonContentType);
  });
  s.Get("/ready", [this](const httplib::Request&, httplib::Response& res) {
    const bool ready = service_.ready();
    res.status = ready ? 200 : 503;
    const char* state = ready ? "ready" : service_.shutting_down() ? "shutting down" : "loading";
    res.set_content(nlohmann::json{{"status", state}}.dump() + "\n", kJsonContentType);
  });

  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    MetricsText m;
    const ServiceStats st = service_.stats();
    m.gauge("ifw_requests_in_flight", "Transcription requests being served", st.in_flight);
    m.gauge("ifw_requests_queued", "Transcription requests waiting for their model's scheduler",
            static_cast<double>(st.queued));
    m.gauge("ifw_requests_decoding", "Transcription requests their model's scheduler has taken up",
            static_cast<double>(st.decoding));
    m.add("ifw_transcriptions_total", "counter", "Transcription requests by outcome",
          {{{{"outcome", "completed"}}, static_cast<double>(st.completed)},
           {{{"outcome", "failed"}}, static_cast<double>(st.failed)},
           {{{"outcome", "abandoned"}}, static_cast<double>(st.abandoned)},
           {{{"outcome", "rejected_busy"}}, static_cast<double>(st.rejected_busy)}});
    m.counter("ifw_audio_seconds_total", "Seconds of audio in completed transcriptions",
              st.audio_seconds);
    m.counter("ifw_processing_seconds_total",
              "Seconds from queueing to result, summed over completed transcriptions",
              st.processing_seconds);
    std::vector<MetricsText::Sample> responses;
    {
      const std::lock_guard lock(counters_->mutex);
      for (const auto& [key, n] : counters_->responses)
        responses.push_back(
            {{{"route", key.first}, {"code", std::to_string(key.second)}}, static_cast<double>(n)});
    }
    m.add("ifw_http_responses_total", "counter", "HTTP responses by route and status", responses);
    add_cache_metrics(m, service_.cache().stats());
    if (jobs_ != nullptr) {
      std::vector<MetricsText::Sample> by_status;
      for (const auto& [status, n] : jobs_->count_by_status())
        by_status.push_back(
            {{{"status", std::string(status_name(status))}}, static_cast<double>(n)});
      m.add("ifw_jobs", "gauge", "Jobs kept by the server, by status", by_status);
    }
    res.set_content(m.text(), std::string(MetricsText::kContentType));
  });

  s.Get("/admin/cache", [this](const httplib::Request&, httplib::Response& res) {
    const CacheStats st = service_.cache().stats();
    nlohmann::json models = nlohmann::json::array();
    for (const CacheStats::Model& m : st.models) {
      models.push_back({{"name", m.name},
                        {"loading", m.loading},
                        {"leases", m.leases},
                        {"bytes", m.bytes},
                        {"release_when_idle", m.release_when_idle},
                        {"device_failed", m.device_failed}});
    }
    const nlohmann::json j = {{"models", models},
                              {"resident_bytes", st.resident_bytes},
                              {"hits", st.hits},
                              {"misses", st.misses},
                              {"loads", st.loads},
                              {"load_failures", st.load_failures},
                              {"load_seconds", st.load_seconds},
                              {"evictions", st.evictions},
                              {"releases", st.releases}};
    res.set_content(j.dump(2) + "\n", kJsonContentType);
  });
  s.Post("/admin/cache/clear", [this](const httplib::Request&, httplib::Response& res) {
    const ClearResult r = service_.cache().clear();
    spdlog::info("model cache cleared: {} released, {} when their requests end", r.released,
                 r.deferred);
    res.set_content(
        nlohmann::json{{"released", r.released}, {"deferred", r.deferred}}.dump() + "\n",
        kJsonContentType);
  });

  if (jobs_ != nullptr) {
    // Event streams hold a connection's thread each: at most half of them.
    add_job_routes(s, *jobs_, std::max(options_.connection_threads / 2, 4));
    add_web_routes(s);  // the page works through the job API
  }
}

}  // namespace ifw::server
