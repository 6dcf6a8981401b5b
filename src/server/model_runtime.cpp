#include "server/model_runtime.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "backend/device_selection.hpp"
#include "engine/weight_source.hpp"
#include "pipeline/batch_size.hpp"

namespace ifw::server {

ModelRuntime::ModelRuntime(const std::filesystem::path& folder, const RuntimeOptions& options)
    : queue_(static_cast<std::size_t>(std::max(options.queue_capacity, 1))) {
  folder_ = std::make_unique<model::ModelFolder>(folder);
  backend_ = backend::make_backend(backend::parse_device(options.device),
                                   backend::parse_precision(options.precision), options.threads);
  {
    engine::CheckpointWeights weights(folder_->checkpoint());
    model_ = std::make_unique<engine::WhisperModel>(folder_->config(), weights, *backend_);
  }
  resident_bytes_ = static_cast<std::size_t>(folder_->checkpoint().parameter_count()) *
                    backend::dtype_size(backend_->weight_dtype());
  pipeline::TranscribeOptions o;
  if (options.batch_size > 0) {
    o.batch_size = options.batch_size;
  } else if (backend_->device() == backend::Device::kCuda) {
    // From the device memory free once the model is loaded (other models on the GPU included);
    // running out later still halves it until the runtime is idle again.
    const backend::DeviceSpec device = backend::parse_device(options.device);
    o.batch_size = pipeline::planned_batch_size(folder_->config(), *backend_,
                                                device.automatic ? 0 : device.index, kCpuBatch);
    spdlog::info("{}: batches of {} windows (from the free device memory)", folder_->dir().string(),
                 o.batch_size);
  } else {
    o.batch_size = kCpuBatch;
  }
  o.max_open_jobs = options.max_open_jobs;
  o.max_new_tokens = options.max_new_tokens;
  o.temperature_increment = 0.0;  // a re-decoded window would stall every request's batch
  transcriber_ = std::make_unique<pipeline::Transcriber>(*folder_, *model_, o);
  thread_ = std::thread([this] { serve(); });
}

ModelRuntime::~ModelRuntime() {
  unload();
}

void ModelRuntime::serve() {
  try {
    transcriber_->run(
        queue_, stop_,
        [this](const pipeline::ProgressEvent& e) {
          const std::lock_guard lock(mutex_);
          const auto it = pending_.find(e.file);
          if (it != pending_.end() && it->second.on_progress) it->second.on_progress(e);
        },
        [this](pipeline::FileResult&& r) {
          const std::lock_guard lock(mutex_);
          const auto it = pending_.find(r.file);
          if (it == pending_.end()) return;
          it->second.result.set_value(std::move(r));
          pending_.erase(it);
        });
  } catch (const std::exception& e) {
    failed_ = true;
    spdlog::error("the scheduler of {} stopped: {}", folder_->dir().string(), e.what());
  }
  // Whatever did not get a result (queued when stopped, or after a failure) gets an error now,
  // and nothing more is taken.
  queue_.close();
  const std::lock_guard lock(mutex_);
  for (auto& [id, pending] : pending_) {
    pipeline::FileResult r;
    r.file = id;
    r.ok = false;
    r.error = "the model was released before this request could be transcribed";
    pending.result.set_value(std::move(r));
  }
  pending_.clear();
}

void ModelRuntime::stop() {
  queue_.close();  // first: nothing new once the run has been told to stop
  stop_.cancel();
  unload();
}

void ModelRuntime::unload() {
  queue_.close();
  const std::lock_guard lock(join_mutex_);
  if (thread_.joinable()) thread_.join();
}

void ModelRuntime::withdraw_cancelled() {
  const std::lock_guard lock(mutex_);
  for (pipeline::Job& job : queue_.withdraw_cancelled()) {
    const auto it = pending_.find(job.id);
    if (it == pending_.end()) continue;
    pipeline::FileResult r;
    r.file = job.id;
    r.path = job.path;
    r.ok = false;
    r.error = job.path + ": cancelled before it started";
    it->second.result.set_value(std::move(r));
    pending_.erase(it);
  }
}

std::optional<std::future<pipeline::FileResult>> ModelRuntime::submit(
    pipeline::Job job, ProgressListener on_progress) {
  // Under the lock: the result (delivered under it too) cannot come before its promise exists,
  // and the scheduler's last word (failing what is pending) cannot slip in between.
  const std::lock_guard lock(mutex_);
  const int id = next_id_++;
  job.id = id;
  if (!queue_.submit(std::move(job))) return std::nullopt;
  Pending& pending = pending_[id];
  pending.on_progress = std::move(on_progress);
  return pending.result.get_future();
}

}  // namespace ifw::server
