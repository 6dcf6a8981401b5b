// One GPU as the CUDA backend uses it: a stream every operation is issued on, a memory pool that
// tensors are allocated from in stream order (cheap after warm-up, returned to the device on
// release), and a cuBLAS handle bound to the stream. Shared by the backend and every tensor it
// made, so memory can outlive the backend object safely.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/step_recording.hpp"
#include "backend/tensor.hpp"

namespace ifw::backend::cuda {

// The CUDA library's name for an element type (cuBLAS, cuBLASLt).
cudaDataType cuda_data_type(DType type);

// Whether the backend lends page-locked host memory for bulk uploads (Backend::host_buffer): on
// unless IFW_CUDA_PINNED=0 (for comparisons: on an H200 a batch's features took 1.8 ms against
// 10.9 from plain memory).
bool page_locked_uploads();
// Whether `p` lies in page-locked host memory the CUDA runtime knows (cudaMallocHost).
bool is_page_locked(const void* p);

class DeviceContext {
 public:
  explicit DeviceContext(int index);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int index() const { return index_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  // Makes this GPU the calling thread's current device.
  void activate() const;
  // Logs a release that failed (memory, a stream, a graph), with its reason: each one, except
  // after the device failed, when every release fails alike and the first says so for all.
  void release_failed(cudaError_t err, const char* what) const noexcept;

  // Stream-ordered allocation from the pool; free() is ordered after the work issued before it.
  void* allocate(std::size_t bytes);
  void free(void* p) noexcept;
  // Memory for a tensor: from the pool, or from the step recording being captured or replayed
  // (then `owned` is false: the recording keeps it).
  void* allocate_tensor(std::size_t bytes, bool& owned);
  // Memory for an operation's own intermediate results, dead once the operation's kernels have
  // run: from the pool, or in a recorded step the recording's one scratch region, shared by every
  // such request of the step (owned is then false).
  void* allocate_scratch(std::size_t bytes, bool& owned);
  // Device to host; the host buffer is filled when the stream finished: at once, or after a
  // recorded step's launch.
  void copy_to_host(const void* device, void* host, std::size_t bytes);

  // A step recording the operations go through while it is measured, captured or replayed
  // (nullptr: none). Replaying, operations issue nothing.
  void set_recording(StepRecording* recording) { recording_ = recording; }
  bool replaying() const {
    return recording_ != nullptr && recording_->mode() == RecordingMode::kReplay;
  }
  bool recording() const {
    return recording_ != nullptr && recording_->mode() != RecordingMode::kMeasure;
  }
  // Waits for the stream, then returns the pool's unused memory to the device.
  void release_cached();
  // A device copy of a few host values (indices, lengths) for the next operations, made through
  // pinned memory so that the host does not wait for the GPU (a pageable copy would). The copy
  // stays valid until kStagingBytes more have been staged; nullptr when `bytes` is too large
  // (never while a step is captured or replayed: its values have their own slots).
  const void* stage(const void* values, std::size_t bytes);
  static constexpr std::size_t kStagingBytes = 4u << 20;

  // Pinned host memory of at least `bytes`, on any thread; given back, it is kept for reuse until
  // the context goes (cudaFreeHost would wait for the whole device, other models' work
  // included), up to kPinnedPoolBytes. A block reused for a smaller request (at least half its
  // size) keeps its own size, so that it serves as large a request again.
  PinnedBlock take_pinned(std::size_t bytes);
  void give_pinned(const PinnedBlock& block) noexcept;

  // cuBLAS workspace (kept for the context's life).
  void* workspace() const { return workspace_; }
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;

 private:
  void close() noexcept;
  void free_pinned_blocks() noexcept;
  void free_pinned(const PinnedBlock& block) const noexcept;
  // Given-back pinned memory kept at most (a batch's features: 98 MB at 64 windows).
  static constexpr std::size_t kPinnedPoolBytes = std::size_t{1} << 30;

  int index_;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* workspace_ = nullptr;
  void* staging_host_ = nullptr;    // pinned
  void* staging_device_ = nullptr;  // from the pool
  std::size_t staging_used_ = 0;
  StepRecording* recording_ = nullptr;
  std::mutex pinned_mutex_;  // buffers are taken and given back on any thread
  std::multimap<std::size_t, void*> pinned_blocks_;  // given back, by size
  std::size_t pinned_free_bytes_ = 0;
  mutable std::atomic<bool> failure_said_{false};  // a failed device's releases: said once
};

// Device memory of one tensor, freed (stream-ordered) when the last tensor using it goes.
class DeviceStorage final : public Storage {
 public:
  DeviceStorage(std::shared_ptr<DeviceContext> context, std::size_t bytes);
  // Scratch memory (DeviceContext::allocate_scratch).
  struct Scratch {};
  DeviceStorage(std::shared_ptr<DeviceContext> context, std::size_t bytes, Scratch);
  ~DeviceStorage() override;
  DeviceStorage(const DeviceStorage&) = delete;
  DeviceStorage& operator=(const DeviceStorage&) = delete;
  void* data() override { return data_; }
  std::size_t bytes() const override { return bytes_; }
  Device device() const override { return Device::kCuda; }

 private:
  std::shared_ptr<DeviceContext> context_;
  std::size_t bytes_;
  bool owned_ = true;
  void* data_;
};

// A short-lived device copy of host values (indices, lengths) for one operation: staged through
// pinned memory when small (no wait), else its own allocation and copy.
template <typename T>
class DeviceArray {
 public:
  DeviceArray(DeviceContext& context, std::span<const T> values) : context_(context) {
    if (values.empty()) return;  // nullptr: nothing to read
    if (const void* staged = context.stage(values.data(), values.size_bytes())) {
      data_ = static_cast<T*>(const_cast<void*>(staged));
      return;
    }
    owned_ = true;
    data_ = static_cast<T*>(context.allocate(values.size_bytes()));
    const cudaError_t err = cudaMemcpyAsync(data_, values.data(), values.size_bytes(),
                                            cudaMemcpyHostToDevice, context.stream());
    if (err != cudaSuccess) {
      context_.free(data_);
      check(err, "copying indices to the GPU");
    }
  }
  ~DeviceArray() {
    if (owned_) context_.free(data_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return data_; }

 private:
  DeviceContext& context_;
  T* data_ = nullptr;
  bool owned_ = false;
};

// Free and total memory of GPU `index` as the driver reports it (cudaMemGetInfo).
struct MemoryInfo {
  std::uint64_t free = 0;
  std::uint64_t total = 0;
};
MemoryInfo memory_info(int index);

}  // namespace ifw::backend::cuda
