#include "server/transcription_service.hpp"

#include <algorithm>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

namespace ifw::server {
namespace {

constexpr std::string_view kAlias = "whisper-1";  // what OpenAI's clients send

// The scheduler's messages name the stored upload; the client should read its own file's name
// and never learn the server's paths.
std::string client_message(std::string message, const std::string& stored_path,
                           const std::string& upload_name) {
  for (std::size_t at = message.find(stored_path); at != std::string::npos;
       at = message.find(stored_path, at + upload_name.size())) {
    message.replace(at, stored_path.size(), upload_name);
  }
  return message;
}

}  // namespace

TranscriptionService::TranscriptionService(ServiceOptions options, Resolver resolver)
    : options_(std::move(options)),
      spool_(options_.upload_dir),
      cache_(
          [resolver = std::move(resolver), runtime = options_.runtime](const std::string& name) {
            return std::make_unique<ModelRuntime>(resolver(name), runtime);
          },
          options_.cache) {}

TranscriptionService::~TranscriptionService() {
  const ClearResult cleared = cache_.clear();
  if (cleared.deferred > 0)
    spdlog::warn("{} model(s) still in use at shutdown; released as their requests end",
                 cleared.deferred);
}

void TranscriptionService::load_default_model() {
  const ModelLease lease = cache_.acquire(options_.default_model);
  default_loaded_ = true;
}

std::string TranscriptionService::model_key(const std::string& requested) const {
  if (requested.empty() || requested == kAlias || requested == options_.default_model)
    return options_.default_model;
  if (std::ranges::find(options_.models, requested) != options_.models.end()) return requested;
  throw ApiError::model_not_found(requested);
}

std::vector<std::string> TranscriptionService::model_ids() const {
  std::vector<std::string> ids{std::string(kAlias), options_.default_model};
  for (const std::string& m : options_.models) {
    if (std::ranges::find(ids, m) == ids.end()) ids.push_back(m);
  }
  return ids;
}

ModelLease TranscriptionService::lease_model(const std::string& key) {
  std::optional<ModelLease> lease;
  try {
    lease.emplace(cache_.acquire(key));
  } catch (const std::exception& e) {
    spdlog::error("model {} could not be loaded: {}", key, e.what());
    throw ApiError(500, fmt::format("The model '{}' could not be loaded", key), "server_error",
                   "model", "model_load_failed");
  }
  if (lease->as<ModelRuntime>().failed()) {
    lease.reset();
    cache_.clear();  // the failed model goes once its other requests have their answers
    throw ApiError::busy(
        fmt::format("The model '{}' stopped on an error and is being reloaded; try again", key),
        503);
  }
  return std::move(*lease);
}

std::unique_ptr<TranscriptionService::Transcription> TranscriptionService::start(
    const TranscriptionRequest& request, ModelRuntime::ProgressListener on_progress) {
  // Counted before anything else, so that a shutdown that starts meanwhile waits for it (or
  // refuses it, below).
  ++in_flight_;
  std::shared_ptr<void> in_flight(nullptr, [this](void*) { --in_flight_; });
  if (shutting_down_)
    throw ApiError::busy("The server is shutting down; send the request again later", 503);
  const std::string key = model_key(request.model);
  ModelLease lease = lease_model(key);
  UploadSpool::File upload = spool_.store(request.audio, request.filename);
  const std::string path = upload.path().string();
  auto t = std::make_unique<Transcription>(Transcription::Key(), *this, std::move(lease),
                                           std::move(upload), path, request.filename,
                                           std::move(in_flight));
  pipeline::JobOptions o;
  o.task = request.task;
  o.language = request.language;
  o.prompt = request.prompt;
  o.temperature = request.temperature;
  // Subtitles are regrouped into readable cues from word timings, as the command line does.
  o.word_timings = request.word_timestamps || request.response_format == ResponseFormat::kSrt ||
                   request.response_format == ResponseFormat::kVtt;
  submit(*t, key, std::move(o), nullptr, std::move(on_progress));
  return t;
}

std::unique_ptr<TranscriptionService::Transcription> TranscriptionService::start_file(
    const std::string& audio_path, const std::string& name, const std::string& model,
    pipeline::JobOptions options, std::shared_ptr<const pipeline::ResumeState> resume,
    ModelRuntime::ProgressListener on_progress) {
  if (shutting_down_)
    throw ApiError::busy("The server is shutting down; the job runs after its restart", 503);
  const std::string key = model_key(model);
  auto t = std::make_unique<Transcription>(Transcription::Key(), *this, lease_model(key),
                                           std::nullopt, audio_path, name, nullptr);
  submit(*t, key, std::move(options), std::move(resume), std::move(on_progress));
  return t;
}

void TranscriptionService::submit(Transcription& t, const std::string& key,
                                  pipeline::JobOptions options,
                                  std::shared_ptr<const pipeline::ResumeState> resume,
                                  ModelRuntime::ProgressListener on_progress) {
  pipeline::Job job(t.audio_path_, std::move(options), -1, t.cancel_);
  job.resume = std::move(resume);
  ++queued_;
  auto listener = [this, started = t.started_,
                   on_progress = std::move(on_progress)](const pipeline::ProgressEvent& e) {
    if (!started->exchange(true)) {
      --queued_;
      ++decoding_;
    }
    if (on_progress) on_progress(e);
  };
  auto future = t.lease_.as<ModelRuntime>().submit(std::move(job), std::move(listener));
  if (!future) {
    {
      const std::lock_guard lock(mutex_);
      ++counters_.rejected_busy;
    }
    throw ApiError::busy(fmt::format("The server's queue for '{}' is full; try again shortly", key),
                         429);
  }
  t.result_ = std::move(*future);
  t.queued_at_ = std::chrono::steady_clock::now();
  {
    const std::lock_guard lock(mutex_);
    std::erase_if(running_, [](const auto& w) { return w.expired(); });
    running_.push_back(t.cancel_);
    if (cancelled_all_) t.cancel_->cancel();
  }
}

TranscriptionService::Transcription::Transcription(Key, TranscriptionService& service,
                                                   ModelLease lease,
                                                   std::optional<UploadSpool::File> upload,
                                                   std::string audio_path, std::string upload_name,
                                                   std::shared_ptr<void> in_flight)
    : service_(service),
      lease_(std::move(lease)),
      upload_(std::move(upload)),
      audio_path_(std::move(audio_path)),
      upload_name_(std::move(upload_name)),
      in_flight_(std::move(in_flight)),
      cancel_(std::make_shared<pipeline::CancellationToken>()),
      started_(std::make_shared<std::atomic<bool>>(false)) {}

TranscriptionService::Transcription::~Transcription() {
  if (result_.valid() && !ended_) {
    // Nobody waits for this job any more: stop it, and let it end (at its next batch) before
    // its upload and model are given back.
    cancel_->cancel();
    result_.wait();
  }
  // Set by the job's first progress event, or here for a job that never left the queue.
  if (started_->exchange(true)) {
    --service_.decoding_;
  } else {
    --service_.queued_;
  }
}

std::optional<Transcript> TranscriptionService::Transcription::wait(
    const std::function<bool()>& client_gone, const std::function<void()>& on_poll,
    std::chrono::milliseconds poll) {
  bool gone = false, withdrawn = false;
  while (result_.wait_for(poll) != std::future_status::ready) {
    if (on_poll) on_poll();
    if (!gone && client_gone && client_gone()) {
      gone = true;
      cancel_->cancel();
      spdlog::info("{}: the client left; its transcription is cancelled", upload_name_);
    }
    if (cancel_->cancelled() && !withdrawn && !started_->load()) {
      withdrawn = true;  // still queued: answered now rather than when its turn comes
      lease_.as<ModelRuntime>().withdraw_cancelled();
    }
  }
  pipeline::FileResult r = result_.get();
  ended_ = true;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - queued_at_).count();
  const auto count = [&](std::uint64_t ServiceStats::*counter) {
    const std::lock_guard lock(service_.mutex_);
    ++(service_.counters_.*counter);
    if (counter == &ServiceStats::completed) {
      service_.counters_.audio_seconds += r.transcript.duration;
      service_.counters_.processing_seconds += seconds;
    }
  };
  if (gone) {
    count(&ServiceStats::abandoned);
    return std::nullopt;
  }
  const bool stopped = cancel_->cancelled() && (r.transcript.partial || !r.ok);
  if (r.ok && !stopped) {
    count(&ServiceStats::completed);
    spdlog::info("{}: {:.1f} s of audio ({}) in {:.2f} s", upload_name_, r.transcript.duration,
                 r.transcript.language, seconds);
    return std::move(r.transcript);
  }
  count(&ServiceStats::failed);
  if (stopped || service_.shutting_down()) {
    throw ApiError::busy("The server shut down before this request finished; send it again", 503);
  }
  if (lease_.as<ModelRuntime>().failed()) {
    service_.cache_.clear();
    throw ApiError::busy(
        fmt::format("The model '{}' stopped on an error; try again", lease_.name()), 503);
  }
  spdlog::info("{}: {}", upload_name_, r.error);
  throw ApiError::bad_request(client_message(r.error, audio_path_, upload_name_), "file",
                              "invalid_audio");
}

pipeline::FileResult TranscriptionService::Transcription::result(std::chrono::milliseconds poll) {
  bool withdrawn = false;
  while (result_.wait_for(poll) != std::future_status::ready) {
    if (cancel_->cancelled() && !withdrawn && !started_->load()) {
      withdrawn = true;  // still queued: answered now rather than when its turn comes
      lease_.as<ModelRuntime>().withdraw_cancelled();
    }
  }
  pipeline::FileResult r = result_.get();
  ended_ = true;
  r.error = client_message(r.error, audio_path_, upload_name_);
  r.path = upload_name_;
  const std::lock_guard lock(service_.mutex_);
  if (r.ok) {
    ++service_.counters_.completed;
    service_.counters_.audio_seconds += r.transcript.duration;
    service_.counters_.processing_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - queued_at_).count();
  } else {
    ++service_.counters_.failed;
  }
  return r;
}

bool TranscriptionService::Transcription::model_failed() const {
  return lease_.as<ModelRuntime>().failed();
}

void TranscriptionService::cancel_all() {
  const std::lock_guard lock(mutex_);
  cancelled_all_ = true;
  for (const auto& w : running_) {
    if (const auto token = w.lock()) token->cancel();
  }
}

bool TranscriptionService::wait_idle(std::chrono::steady_clock::time_point deadline) const {
  while (in_flight_.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

ServiceStats TranscriptionService::stats() const {
  const std::lock_guard lock(mutex_);
  ServiceStats s = counters_;
  s.in_flight = in_flight_.load();
  s.queued = queued_.load();
  s.decoding = decoding_.load();
  return s;
}

}  // namespace ifw::server
