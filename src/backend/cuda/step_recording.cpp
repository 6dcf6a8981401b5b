#include "backend/cuda/step_recording.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/cuda/device_context.hpp"
#include "backend/cuda/environment.hpp"

namespace ifw::backend::cuda {

StepRecording::~StepRecording() {
  context_.free(tensors_);
  context_.free(scratch_);
  context_.free(staged_device_);
  // Back to the context's pinned blocks once the copies issued so far are done.
  if (staged_host_.data == nullptr && downloads_host_.data == nullptr) return;
  if (const cudaError_t err = cudaStreamSynchronize(context_.stream()); err != cudaSuccess) {
    context_.release_failed(err, "waiting for a step graph's copies (its pinned memory is left)");
    return;
  }
  context_.give_pinned(staged_host_);
  context_.give_pinned(downloads_host_);
}

void StepRecording::begin(RecordingMode mode) {
  mode_ = mode;
  cursor_ = 0;
  deliveries_.clear();
  if (mode == RecordingMode::kMeasure) {
    tensor_capacity_ = staged_capacity_ = download_capacity_ = scratch_capacity_ = 0;
  } else if (mode == RecordingMode::kCapture) {
    slots_.clear();
    used_[0] = used_[1] = used_[2] = 0;
  }
}

void StepRecording::finish_replay() const {
  if (cursor_ != slots_.size()) {
    throw ReplayMismatch(
        fmt::format("the step asked for {} of the {} recorded buffers", cursor_, slots_.size()));
  }
}

void StepRecording::reserve() {
  if (tensors_ != nullptr) return;
  tensors_ = context_.allocate(std::max<std::size_t>(tensor_capacity_, 256));
  if (scratch_capacity_ > 0) scratch_ = context_.allocate(scratch_capacity_);
  staged_device_ = context_.allocate(std::max<std::size_t>(staged_capacity_, 256));
  staged_host_ = context_.take_pinned(pinned_bytes(staged_capacity_));
  downloads_host_ = context_.take_pinned(pinned_bytes(download_capacity_));
}

const StepRecording::Slot& StepRecording::next(Use use, std::size_t bytes) {
  const auto u = static_cast<std::size_t>(use);
  if (mode_ == RecordingMode::kCapture) {
    const std::size_t capacity = use == Use::kTensor   ? tensor_capacity_
                                 : use == Use::kStaged ? staged_capacity_
                                                       : download_capacity_;
    if (used_[u] + aligned(bytes) > capacity) {
      throw ReplayMismatch(fmt::format(
          "the captured step needs more than the {} bytes its measured run used", capacity));
    }
    slots_.push_back({use, used_[u], bytes});
    used_[u] += aligned(bytes);
    return slots_.back();
  }
  if (mode_ != RecordingMode::kReplay) throw std::logic_error("step recording: not recording");
  if (cursor_ >= slots_.size() || slots_[cursor_].use != use || slots_[cursor_].bytes != bytes) {
    throw ReplayMismatch(fmt::format("buffer {} of the step differs from its capture", cursor_));
  }
  return slots_[cursor_++];
}

void* StepRecording::tensor(std::size_t bytes) {
  return static_cast<std::byte*>(tensors_) + next(Use::kTensor, bytes).offset;
}

void* StepRecording::scratch(std::size_t bytes) {
  if (mode_ == RecordingMode::kMeasure) throw std::logic_error("step recording: not recording");
  if (aligned(bytes) > scratch_capacity_) {
    throw ReplayMismatch(fmt::format(
        "the step asks for {} bytes of scratch memory; its measured run used at most {}", bytes,
        scratch_capacity_));
  }
  return scratch_;
}

const void* StepRecording::stage(const void* values, std::size_t bytes) {
  const Slot& slot = next(Use::kStaged, bytes);
  std::memcpy(static_cast<std::byte*>(staged_host_.data) + slot.offset, values, bytes);
  return static_cast<std::byte*>(staged_device_) + slot.offset;
}

void StepRecording::copy_to_host(const void* device, void* host, std::size_t bytes,
                                 cudaStream_t stream) {
  const Slot& slot = next(Use::kDownload, bytes);
  if (mode_ == RecordingMode::kCapture) {
    check(cudaMemcpyAsync(static_cast<std::byte*>(downloads_host_.data) + slot.offset, device,
                          bytes, cudaMemcpyDeviceToHost, stream),
          "copying from the GPU");
  }
  deliveries_.push_back({host, slot.offset, bytes});
}

void StepRecording::upload_staged(cudaStream_t stream) const {
  const std::size_t bytes = used_[static_cast<std::size_t>(Use::kStaged)];
  if (bytes == 0) return;
  check(cudaMemcpyAsync(staged_device_, staged_host_.data, bytes, cudaMemcpyHostToDevice, stream),
        "copying a step's indices to the GPU");
}

void StepRecording::deliver_downloads() {
  for (const Delivery& d : deliveries_)
    std::memcpy(d.host, static_cast<const std::byte*>(downloads_host_.data) + d.offset, d.bytes);
  deliveries_.clear();
}

namespace {

std::atomic<std::uint64_t> launches{0};

// While alive, the context's operations go through `recording` in `mode`.
class RecordingScope {
 public:
  RecordingScope(DeviceContext& context, StepRecording& recording, RecordingMode mode)
      : context_(context) {
    recording.begin(mode);
    context.set_recording(&recording);
  }
  ~RecordingScope() { context_.set_recording(nullptr); }
  RecordingScope(const RecordingScope&) = delete;
  RecordingScope& operator=(const RecordingScope&) = delete;

 private:
  DeviceContext& context_;
};

class CudaStepGraph final : public StepGraph {
 public:
  explicit CudaStepGraph(std::shared_ptr<DeviceContext> context)
      : context_(std::move(context)), recording_(std::make_unique<StepRecording>(*context_)) {}
  ~CudaStepGraph() override { drop(); }
  CudaStepGraph(const CudaStepGraph&) = delete;
  CudaStepGraph& operator=(const CudaStepGraph&) = delete;
  bool usable() const override { return state_ != State::kBroken; }

  void run(const std::function<void()>& ops) override {
    context_->activate();
    if (state_ == State::kBroken) {
      ops();
      return;
    }
    if (state_ == State::kMeasure) {
      // A direct run: whatever fails here is the operations' own failure.
      RecordingScope scope(*context_, *recording_, RecordingMode::kMeasure);
      ops();
      state_ = State::kCapture;
      return;
    }
    try {
      if (state_ == State::kCapture) {
        capture(ops);
      } else {
        RecordingScope scope(*context_, *recording_, RecordingMode::kReplay);
        ops();
        recording_->finish_replay();
      }
      launch();
      state_ = State::kReady;
    } catch (const Error& e) {
      // Wrong input is the caller's problem, not the recording's: nothing was launched. A failed
      // device fails the operations issued one by one too.
      if (e.kind() == ErrorKind::kInvalidArgument || e.kind() == ErrorKind::kDeviceFailure) throw;
      fall_back(e, ops);
    } catch (const std::exception& e) {
      fall_back(e, ops);
    }
  }

 private:
  enum class State { kMeasure, kCapture, kReady, kBroken };

  // A capture CUDA refused or a replay that differs from its capture: the recording is dropped
  // and the operations issued one by one (where a genuine failure of theirs shows again).
  void fall_back(const std::exception& e, const std::function<void()>& ops) {
    spdlog::warn(
        "cuda:{}: a recorded decoder step cannot be used ({}); its operations are issued "
        "one by one",
        context_->index(), e.what());
    drop();
    state_ = State::kBroken;
    ops();
  }

  void capture(const std::function<void()>& ops) {
    recording_->reserve();
    const cudaStream_t stream = context_->stream();
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
          "starting a CUDA graph capture");
    cudaGraph_t graph = nullptr;
    try {
      RecordingScope scope(*context_, *recording_, RecordingMode::kCapture);
      ops();
    } catch (...) {
      // The stream leaves capture mode whatever went wrong.
      if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph != nullptr)
        cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    check(cudaStreamEndCapture(stream, &graph), "ending a CUDA graph capture");
    const cudaError_t err = cudaGraphInstantiate(&exec_, graph, 0);
    context_->release_failed(cudaGraphDestroy(graph), "destroying a captured graph");
    if (err != cudaSuccess) exec_ = nullptr;
    check(err, "instantiating a CUDA graph");
  }

  void launch() {
    const cudaStream_t stream = context_->stream();
    recording_->upload_staged(stream);
    check(cudaGraphLaunch(exec_, stream), "launching a CUDA graph");
    ++launches;
    check(cudaStreamSynchronize(stream), "waiting for the GPU");
    recording_->deliver_downloads();
  }

  void drop() noexcept {
    if (exec_ != nullptr) {
      context_->release_failed(cudaGraphExecDestroy(exec_), "destroying a CUDA graph");
      exec_ = nullptr;
    }
    recording_.reset();
  }

  std::shared_ptr<DeviceContext> context_;  // outlives the recording (declared first)
  std::unique_ptr<StepRecording> recording_;
  cudaGraphExec_t exec_ = nullptr;
  State state_ = State::kMeasure;
};

}  // namespace

bool step_graphs_enabled() {
  return switch_value("IFW_CUDA_GRAPHS", {"0", "1"}) != "0";
}

std::uint64_t step_graph_launches() {
  return launches.load();
}

std::unique_ptr<StepGraph> make_step_graph(std::shared_ptr<DeviceContext> context) {
  return std::make_unique<CudaStepGraph>(std::move(context));
}

}  // namespace ifw::backend::cuda
