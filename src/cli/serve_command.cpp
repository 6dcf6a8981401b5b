#include "cli/serve_command.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ifw/error.hpp>

#include "backend/device_selection.hpp"
#include "cli/exit_codes.hpp"
#include "cli/models_command.hpp"
#include "server/http_server.hpp"
#include "server/job_manager.hpp"
#include "server/transcription_service.hpp"

namespace ifw::cli {
namespace {

// SIGINT/SIGTERM reach the main thread through a pipe (the handler may only write to it); a
// second signal ends the process at once.
int g_signal_pipe = -1;
std::atomic<int> g_shutdown_signals{0};

extern "C" void on_shutdown_signal(int) {
  if (g_shutdown_signals.fetch_add(1) >= 1) ::_exit(kExitInterrupted);
  const char byte = 's';
  if (::write(g_signal_pipe, &byte, 1) < 0) ::_exit(kExitInterrupted);  // cannot tell main
}

class ShutdownSignals {
 public:
  ShutdownSignals() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) {
      throw Error(ErrorKind::kIo,
                  fmt::format("cannot create the signal pipe: {}", std::strerror(errno)));
    }
    g_signal_pipe = fds_[1];
    struct sigaction sa {};
    sa.sa_handler = on_shutdown_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    // A client that disconnects mid-response must not end the server.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~ShutdownSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
    g_signal_pipe = -1;
    for (const int fd : fds_) {
      if (::close(fd) != 0) spdlog::warn("closing the signal pipe: {}", std::strerror(errno));
    }
  }
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;

  // Blocks until the first signal, or wake().
  void wait() const {
    char byte = 0;
    while (::read(fds_[0], &byte, 1) < 0 && errno == EINTR) {
    }
  }
  void wake() const {
    const char byte = 'w';
    if (::write(fds_[1], &byte, 1) < 0) spdlog::error("waking the main thread failed");
  }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  struct sigaction old_pipe_ {};
};

// The HTTP server's thread: stopped and joined however run_serve ends. A listening socket that
// fails wakes the main thread.
class ServingThread {
 public:
  ServingThread(server::HttpServer& http, const ShutdownSignals& signals)
      : http_(http), thread_([this, &http, &signals] {
          if (!http.run()) {
            failed_ = true;
            signals.wake();
          }
          done_ = true;
        }) {}
  ~ServingThread() { join(); }
  ServingThread(const ServingThread&) = delete;
  ServingThread& operator=(const ServingThread&) = delete;
  // Stops accepting; false when the connections' threads are still busy at the deadline.
  bool join(std::chrono::steady_clock::time_point deadline =
                std::chrono::steady_clock::time_point::max()) {
    http_.stop();
    while (!done_ && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!done_) return false;
    if (thread_.joinable()) thread_.join();
    return true;
  }
  bool failed() const { return failed_; }

 private:
  server::HttpServer& http_;
  std::atomic<bool> done_{false}, failed_{false};
  std::thread thread_;
};

// Stops the jobs when run_serve ends however it ends, before the serving thread is joined:
// their event streams would keep connections (and so that thread) busy.
class StopJobsFirst {
 public:
  explicit StopJobsFirst(server::JobManager& jobs) : jobs_(jobs) {}
  ~StopJobsFirst() { jobs_.stop(); }
  StopJobsFirst(const StopJobsFirst&) = delete;
  StopJobsFirst& operator=(const StopJobsFirst&) = delete;

 private:
  server::JobManager& jobs_;
};

// Ends the process now, without waiting for what still runs; uploads are not left behind.
[[noreturn]] void exit_abruptly(const server::TranscriptionService& service) {
  std::error_code ec;
  std::filesystem::remove_all(service.upload_folder(), ec);
  ::_exit(kExitFailed);
}

std::string environment(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::filesystem::path default_data_dir(const std::string& given) {
  if (!given.empty()) return given;
  if (const std::string env = environment("IFW_DATA_DIR"); !env.empty()) return env;
  if (const std::string xdg = environment("XDG_DATA_HOME"); !xdg.empty())
    return std::filesystem::path(xdg) / "ifw";
  if (const std::string home = environment("HOME"); !home.empty())
    return std::filesystem::path(home) / ".local" / "share" / "ifw";
  return "ifw-data";  // relative to where the server was started
}

}  // namespace

void add_serve_options(CLI::App& c, ServeArgs& a) {
  c.add_option("--host", a.host, "Address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  c.add_option("--port", a.port, "Port (0: any free one, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  c.add_option("-m,--model", a.model,
               "Model for whisper-1 and requests that name none: folder or Hub id (default: "
               "$IFW_MODEL)");
  c.add_option("--models", a.models,
               "Further models requests may ask for by name (folders or Hub ids), loaded on "
               "demand")
      ->delimiter(',');
  c.add_option("--revision", a.revision, "Hub revision of the models")->capture_default_str();
  c.add_option("--threads", a.threads, "CPU threads per model (0: one per usable core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  c.add_option("--device", a.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  c.add_option("--precision", a.precision,
               "auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16, bf16")
      ->capture_default_str();
  c.add_option("--batch-size", a.batch_size,
               "Windows decoded together (0: 8 on the CPU, from the free memory on a GPU)")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  c.add_option("--max-concurrent", a.max_concurrent,
               "Requests decoded side by side per model (their windows share batches)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  c.add_option("--queue-size", a.queue_size,
               "Requests waiting per model beyond those; more get 429 with Retry-After")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  c.add_option("--max-new-tokens", a.max_new_tokens, "Tokens decoded per 30 s window at most")
      ->check(CLI::Range(1, 448))
      ->capture_default_str();
  c.add_option("--max-upload-size", a.max_upload, "Largest upload accepted (413 above)")
      ->capture_default_str();
  c.add_option("--shutdown-timeout", a.shutdown_timeout,
               "Seconds running requests get to finish after SIGTERM/SIGINT")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  c.add_option("--read-timeout", a.read_timeout,
               "Seconds a client may stay silent while sending a request")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  c.add_option("--connections", a.connections,
               "Connections served at once (0: enough for --max-concurrent and --queue-size)")
      ->check(CLI::Range(0, 100000));
  c.add_option("--upload-dir", a.upload_dir,
               "Where uploads wait while transcribed (default: the system's temporary folder)");
  c.add_option("--data-dir", a.data_dir,
               "Where jobs, their uploads and results are kept (default: $IFW_DATA_DIR, else "
               "$XDG_DATA_HOME/ifw or ~/.local/share/ifw)");
  c.add_option("--keep-results", a.keep_results_days,
               "Days ended jobs and their results are kept (0: until deleted)")
      ->check(CLI::Range(0.0, 36500.0))
      ->capture_default_str();
  c.add_option("--max-data-size", a.max_data_size,
               "Disk budget for job results and uploads; the oldest ended jobs go first")
      ->capture_default_str();
  c.add_option("--max-job-files", a.max_job_files, "Files one POST /v1/jobs may carry")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  c.add_option("--max-jobs", a.max_jobs, "Jobs queued or running at once (429 beyond)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  c.add_option("--job-concurrency", a.job_concurrency,
               "Jobs decoded side by side (their windows share batches)")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

int run_serve(const ServeArgs& a) {
  server::ServiceOptions so;
  server::HttpOptions ho;
  server::JobsOptions jo;
  try {
    so.default_model = a.model.empty() ? environment("IFW_MODEL") : a.model;
    if (so.default_model.empty()) {
      spdlog::error("no model: pass --model FOLDER_OR_HUB_ID (or set IFW_MODEL)");
      return kExitUsage;
    }
    so.models = a.models;
    so.runtime.threads = a.threads;
    backend::require_device(backend::parse_device(a.device));  // refused before anything starts
    backend::parse_precision(a.precision);
    so.runtime.device = a.device;
    so.runtime.precision = a.precision;
    so.runtime.batch_size = a.batch_size;
    so.runtime.max_open_jobs = a.max_concurrent;
    so.runtime.queue_capacity = a.queue_size;
    so.runtime.max_new_tokens = a.max_new_tokens;
    so.cache = server::cache_options_from_environment();
    if (!a.upload_dir.empty()) so.upload_dir = a.upload_dir;
    ho.host = a.host;
    ho.port = a.port;
    const auto upload = server::parse_byte_size(a.max_upload);
    if (!upload) {
      spdlog::error("--max-upload-size {}: use a size such as 256MiB or 2GB", a.max_upload);
      return kExitUsage;
    }
    ho.max_upload_bytes = *upload;
    ho.read_timeout = std::chrono::seconds(a.read_timeout);
    ho.connection_threads =
        a.connections > 0 ? a.connections : a.max_concurrent + a.queue_size + 16;
    jo.data_dir = default_data_dir(a.data_dir);
    jo.keep_results_days = a.keep_results_days;
    const auto budget = server::parse_byte_size(a.max_data_size);
    if (!budget) {
      spdlog::error("--max-data-size {}: use a size such as 10GiB or 500MB", a.max_data_size);
      return kExitUsage;
    }
    jo.max_data_bytes = static_cast<std::int64_t>(*budget);
    jo.max_files_per_request = a.max_job_files;
    jo.max_jobs = a.max_jobs;
    jo.concurrency = a.job_concurrency;
    ho.api_key = environment("IFW_API_KEY");
    ho.admin_token = environment("IFW_ADMIN_TOKEN");
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  }

  const ShutdownSignals signals;  // before any thread starts, so that all inherit the handlers
  server::TranscriptionService service(so, [revision = a.revision](const std::string& name) {
    return locate_model(name, revision, /*quiet=*/true);
  });
  std::optional<server::JobManager> jobs;
  try {
    jobs.emplace(service, jo);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kInvalidArgument ? kExitUsage : kExitFailed;
  }
  server::HttpServer http(service, ho, &*jobs);
  const int port = http.bind();
  ServingThread serving(http, signals);
  const StopJobsFirst stop_jobs(*jobs);
  spdlog::info("listening on http://{}:{} (not ready until the model has loaded)", a.host, port);
  try {
    service.load_default_model();
  } catch (const std::exception& e) {
    spdlog::error("cannot load the model: {}", e.what());
    return kExitFailed;
  }
  spdlog::info("jobs and results in {}; the page is at http://{}:{}/", jo.data_dir.string(), a.host,
               port);
  spdlog::info("ready: {} answers as whisper-1{}{}", so.default_model,
               ho.api_key.empty() ? "" : "; API key required",
               ho.admin_token.empty() ? "" : "; admin endpoints on");

  signals.wait();
  if (serving.failed()) {
    service.begin_shutdown();
    if (!jobs->stop(std::chrono::steady_clock::now() + std::chrono::seconds(10)))
      exit_abruptly(service);
    service.cancel_all();
    if (!serving.join(std::chrono::steady_clock::now() + std::chrono::seconds(10)))
      exit_abruptly(service);
    return kExitFailed;
  }
  const auto started = std::chrono::steady_clock::now();
  const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(a.shutdown_timeout));
  // Cancelled requests end at their next batch: they are stopped early enough for that.
  const auto grace =
      std::min<std::chrono::steady_clock::duration>(timeout / 4, std::chrono::seconds(3));
  spdlog::info("shutting down: new requests refused; {} in flight get up to {:.0f} s",
               service.in_flight(), a.shutdown_timeout);
  service.begin_shutdown();
  http.stop();
  // Jobs are not waited for: they stop at their next batch and resume at the next start.
  if (!jobs->stop(started + timeout)) {
    spdlog::error(
        "jobs still running at the deadline; exiting without them (they resume at the "
        "next start)");
    exit_abruptly(service);
  }
  if (!service.wait_idle(started + timeout - grace)) {
    spdlog::warn("cancelling {} request(s) still running at the shutdown deadline",
                 service.in_flight());
    service.cancel_all();
    if (!service.wait_idle(started + timeout)) {
      spdlog::error("{} request(s) did not stop by the deadline; exiting without them",
                    service.in_flight());
      exit_abruptly(service);
    }
  }
  // Connections still open: idle keep-alive ones close within their timeout; one that is still
  // sending a request is not waited for past the deadline.
  if (!serving.join(std::max(started + timeout,
                             std::chrono::steady_clock::now() + std::chrono::seconds(6)))) {
    spdlog::error("connections still busy at the deadline; exiting without them");
    exit_abruptly(service);
  }
  spdlog::info("stopped after {:.1f} s; releasing the models",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return kExitOk;
}

}  // namespace ifw::cli
