// A decoder step as a CUDA graph. The host issues a step's ~17 operations per layer slower than
// the GPU runs them; a graph is issued in one call. The operations are recorded by running the
// model's own code under stream capture, so nothing is written twice: the first run of a step
// measures the memory it needs, the second is captured (tensors, staged host values and host
// copies at fixed addresses the graph keeps), and later runs walk the same code in replay mode,
// where operations issue nothing and only leave their new host values (token ids, positions,
// lengths) in the slots the graph reads. A replay that asks for anything other than the capture
// did, or a capture CUDA refuses, drops the graph and issues the operations directly.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include <cuda_runtime_api.h>

#include "backend/backend.hpp"

namespace ifw::backend::cuda {

class DeviceContext;

// Pinned host memory from DeviceContext::take_pinned, with its real size.
struct PinnedBlock {
  void* data = nullptr;
  std::size_t bytes = 0;
};

enum class RecordingMode {
  kMeasure,  // operations issued directly; the memory they use is counted
  kCapture,  // operations captured into a graph, their memory from the recording's slots
  kReplay,   // nothing issued: host values go to the captured slots, host copies are noted
};

// A replayed step asked for different memory than its capture did.
class ReplayMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The memory of one recorded step, at addresses that stay fixed for the graph's life: device
// memory for the tensors made during the step, one region shared by every operation's scratch
// memory (the largest asked for: the step's operations run in order on one stream, and scratch
// is dead once its operation is done), pinned host + device memory for the host values
// it stages (copied to the device in one transfer before each launch), and pinned host memory its
// downloads land in (copied to the callers' buffers after the launch).
class StepRecording {
 public:
  explicit StepRecording(DeviceContext& context) : context_(context) {}
  ~StepRecording();
  StepRecording(const StepRecording&) = delete;
  StepRecording& operator=(const StepRecording&) = delete;

  RecordingMode mode() const { return mode_; }
  // Starts a run in `mode` (slots are taken again from the first).
  void begin(RecordingMode mode);
  // Ends a replay: every captured slot must have been asked for again.
  void finish_replay() const;

  // Measure mode: the sizes a run used, the capacities of the slots.
  void count_tensor(std::size_t bytes) { tensor_capacity_ += aligned(bytes); }
  void count_staged(std::size_t bytes) { staged_capacity_ += aligned(bytes); }
  void count_download(std::size_t bytes) { download_capacity_ += aligned(bytes); }
  void count_scratch(std::size_t bytes) {
    scratch_capacity_ = std::max(scratch_capacity_, aligned(bytes));
  }
  // Allocates the measured capacities (before a capture; outside it).
  void reserve();

  // Capture and replay modes.
  void* tensor(std::size_t bytes);
  void* scratch(std::size_t bytes);
  const void* stage(const void* values, std::size_t bytes);
  // Capture: issues the copy into the pinned slot; both modes note where it goes afterwards.
  void copy_to_host(const void* device, void* host, std::size_t bytes, cudaStream_t stream);

  // Around a launch: the staged values to the device (before), the downloads to their callers'
  // buffers (after the stream finished).
  void upload_staged(cudaStream_t stream) const;
  void deliver_downloads();

 private:
  enum class Use { kTensor, kStaged, kDownload };
  struct Slot {
    Use use;
    std::size_t offset;
    std::size_t bytes;
  };
  struct Delivery {
    void* host;
    std::size_t offset;
    std::size_t bytes;
  };
  static std::size_t aligned(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
  static std::size_t pinned_bytes(std::size_t capacity) {
    return std::max<std::size_t>(capacity, 256);
  }
  // Capture: a new slot of `use`; replay: the next captured slot, which must match.
  const Slot& next(Use use, std::size_t bytes);

  DeviceContext& context_;
  RecordingMode mode_ = RecordingMode::kMeasure;
  std::size_t tensor_capacity_ = 0, staged_capacity_ = 0, download_capacity_ = 0;
  std::size_t scratch_capacity_ = 0;
  std::size_t used_[3] = {0, 0, 0};  // per Use, during a capture
  std::vector<Slot> slots_;
  std::size_t cursor_ = 0;  // next slot, during a replay
  std::vector<Delivery> deliveries_;
  void* tensors_ = nullptr;        // device
  void* scratch_ = nullptr;        // device
  void* staged_device_ = nullptr;  // device
  PinnedBlock staged_host_;        // pinned
  PinnedBlock downloads_host_;     // pinned
};

// A StepGraph for the CUDA backend (see above).
std::unique_ptr<StepGraph> make_step_graph(std::shared_ptr<DeviceContext> context);
// Step graphs are on unless IFW_CUDA_GRAPHS=0 (read when a decoder session starts; measured on
// an H100, docs/PERFORMANCE.md).
bool step_graphs_enabled();
// Step graphs launched in this process (tests, benchmarks).
std::uint64_t step_graph_launches();

}  // namespace ifw::backend::cuda
