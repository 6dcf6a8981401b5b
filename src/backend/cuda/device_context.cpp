#include "backend/cuda/device_context.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "backend/cuda/environment.hpp"

namespace ifw::backend::cuda {

cudaDataType cuda_data_type(DType type) {
  switch (type) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

bool leaves_the_device_unusable(cudaError_t err) noexcept {
  // The errors CUDA's documentation says leave "the process in an inconsistent state" (any
  // further CUDA work returns the same error), and the uncorrectable hardware ones. By number
  // where older toolkits lack the name.
  switch (static_cast<int>(err)) {
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case 226:  // cudaErrorContained (CUDA 12.4)
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case 721:  // cudaErrorTensorMemoryLeak (CUDA 12.8)
    case 810:  // cudaErrorMpsClientTerminated
    case 911:  // cudaErrorExternalDevice
      return true;
    default:
      return false;
  }
}

namespace {

[[noreturn]] void throw_device_failure(cudaError_t err, const char* what) {
  int device = -1;
  cudaGetDevice(&device);
  throw Error(ErrorKind::kDeviceFailure,
              fmt::format("{}: {} ({}): cuda:{} cannot be used again by this process (a restart "
                          "makes it usable again)",
                          what, cudaGetErrorString(err), cudaGetErrorName(err), device));
}

}  // namespace

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (leaves_the_device_unusable(err)) throw_device_failure(err, what);
  cudaGetLastError();  // a failed allocation leaves an error behind; later calls start clean
  const ErrorKind kind =
      err == cudaErrorMemoryAllocation ? ErrorKind::kOutOfMemory : ErrorKind::kUnsupported;
  throw Error(kind,
              fmt::format("{}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

void check(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  // cuBLAS reports work refused by a failed device as a failure of its own (an allocation's, an
  // execution's): the context tells. cuBLAS has its own copy of the runtime, so the module's
  // last error may not know; the context's free memory is a query that does not wait for the GPU.
  cudaError_t state = cudaPeekAtLastError();
  if (!leaves_the_device_unusable(state)) {
    std::size_t free = 0, total = 0;
    state = cudaMemGetInfo(&free, &total);
  }
  if (leaves_the_device_unusable(state)) {
    throw_device_failure(state,
                         fmt::format("{} ({})", what, cublasGetStatusString(status)).c_str());
  }
  if (state != cudaSuccess) cudaGetLastError();  // the probe's own error: not the next call's
  const ErrorKind kind =
      status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorKind::kOutOfMemory : ErrorKind::kUnsupported;
  throw Error(kind, fmt::format("{}: {}", what, cublasGetStatusString(status)));
}

DeviceContext::DeviceContext(int index) : index_(index) {
  int count = 0;
  check(cudaGetDeviceCount(&count), "looking for GPUs");
  if (index < 0 || index >= count) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("cuda:{}: no such GPU ({} visible)", index, count));
  }
  activate();
  try {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a CUDA stream");
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = index;
    check(cudaMemPoolCreate(&pool_, &props), "creating a GPU memory pool");
    // Keep freed memory for reuse until release_cached(): a decoder step allocates the same
    // buffers every time.
    std::uint64_t keep = std::numeric_limits<std::uint64_t>::max();
    check(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep),
          "configuring the GPU memory pool");
    check(cublasCreate(&cublas_), "starting cuBLAS");
    check(cublasSetStream(cublas_, stream_), "binding cuBLAS to the stream");
    workspace_ = allocate(kWorkspaceBytes);
    staging_device_ = allocate(kStagingBytes);
    check(cudaMallocHost(&staging_host_, kStagingBytes), "allocating pinned host memory");
    check(cublasSetWorkspace(cublas_, workspace_, kWorkspaceBytes), "giving cuBLAS a workspace");
  } catch (...) {
    close();
    throw;
  }
}

DeviceContext::~DeviceContext() {
  close();
}

void DeviceContext::close() noexcept {
  // Cleanup failures are logged with their reason: there is no caller to tell.
  const auto log = [&](cudaError_t err, const char* what) { release_failed(err, what); };
  // At process exit the CUDA runtime may already be gone (a backend owned by a static): the
  // driver reclaims everything then, and calling into it or the libraries could crash.
  if (cudaSetDevice(index_) == cudaErrorCudartUnloading) return;
  if (cublas_ != nullptr) {
    if (const cublasStatus_t s = cublasDestroy(cublas_);
        s != CUBLAS_STATUS_SUCCESS && !failure_said_.load())
      spdlog::warn("cuda:{}: stopping cuBLAS: {}", index_, cublasGetStatusString(s));
    cublas_ = nullptr;
  }
  if (workspace_ != nullptr) {
    free(workspace_);
    workspace_ = nullptr;
  }
  if (staging_device_ != nullptr) {
    free(staging_device_);
    staging_device_ = nullptr;
  }
  if (stream_ != nullptr) {
    log(cudaStreamSynchronize(stream_), "finishing the stream");
    log(cudaStreamDestroy(stream_), "destroying the stream");
    stream_ = nullptr;
  }
  free_pinned_blocks();
  if (staging_host_ != nullptr) {  // after the stream finished: no copy reads it any more
    log(cudaFreeHost(staging_host_), "freeing pinned host memory");
    staging_host_ = nullptr;
  }
  if (pool_ != nullptr) {
    log(cudaMemPoolDestroy(pool_), "returning the memory pool");
    pool_ = nullptr;
  }
}

void DeviceContext::release_failed(cudaError_t err, const char* what) const noexcept {
  if (err == cudaSuccess || err == cudaErrorCudartUnloading) return;  // at exit: the process's
  if (!leaves_the_device_unusable(err)) {
    spdlog::warn("cuda:{}: {}: {}", index_, what, cudaGetErrorString(err));
  } else if (!failure_said_.exchange(true)) {
    spdlog::warn(
        "cuda:{}: {}: {}; after the device failed nothing it holds can be released (the process "
        "keeps it until it ends), and further failures to release are not said",
        index_, what, cudaGetErrorString(err));
  }
}

void DeviceContext::activate() const {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != index_)
    check(cudaSetDevice(index_), "selecting the GPU");
}

void* DeviceContext::allocate(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t err =
      cudaMallocFromPoolAsync(&p, std::max<std::size_t>(bytes, 1), pool_, stream_);
  if (err != cudaSuccess) {
    if (leaves_the_device_unusable(err)) check(err, "allocating device memory");
    cudaGetLastError();
    MemoryInfo info;
    try {
      info = memory_info(index_);
    } catch (const Error&) {
    }
    throw Error(
        err == cudaErrorMemoryAllocation ? ErrorKind::kOutOfMemory : ErrorKind::kUnsupported,
        fmt::format("cuda:{}: cannot allocate {:.1f} MiB ({} MiB free of {} MiB): {}", index_,
                    static_cast<double>(bytes) / (1 << 20), info.free >> 20, info.total >> 20,
                    cudaGetErrorString(err)));
  }
  return p;
}

void DeviceContext::free(void* p) noexcept {
  if (p == nullptr) return;
  // Tensors and step graphs can go on a thread whose current GPU is another one (cuda:1's model
  // dropped after cuda:0 was used there).
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != index_) cudaSetDevice(index_);
  release_failed(cudaFreeAsync(p, stream_), "freeing device memory");
}

void* DeviceContext::allocate_tensor(std::size_t bytes, bool& owned) {
  owned = !recording();
  if (!owned) return recording_->tensor(bytes);
  if (recording_ != nullptr) recording_->count_tensor(bytes);
  return allocate(bytes);
}

void* DeviceContext::allocate_scratch(std::size_t bytes, bool& owned) {
  owned = !recording();
  if (!owned) return recording_->scratch(bytes);
  if (recording_ != nullptr) recording_->count_scratch(bytes);
  return allocate(bytes);
}

void DeviceContext::copy_to_host(const void* device, void* host, std::size_t bytes) {
  if (recording()) {
    recording_->copy_to_host(device, host, bytes, stream_);
    return;
  }
  if (recording_ != nullptr) recording_->count_download(bytes);
  check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_),
        "copying from the GPU");
  check(cudaStreamSynchronize(stream_), "waiting for the GPU");
}

const void* DeviceContext::stage(const void* values, std::size_t bytes) {
  constexpr std::size_t kAlign = 256;
  if (bytes == 0) return nullptr;
  if (recording()) return recording_->stage(values, bytes);
  if (recording_ != nullptr) recording_->count_staged(bytes);
  if (bytes > kStagingBytes / 4) return nullptr;
  if (staging_used_ + bytes > kStagingBytes) {
    // Starting over: every copy (and every kernel reading a copy) issued so far must be done.
    check(cudaStreamSynchronize(stream_), "waiting for the GPU");
    staging_used_ = 0;
  }
  std::byte* host = static_cast<std::byte*>(staging_host_) + staging_used_;
  std::byte* device = static_cast<std::byte*>(staging_device_) + staging_used_;
  std::memcpy(host, values, bytes);
  check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_),
        "copying indices to the GPU");
  staging_used_ += (bytes + kAlign - 1) / kAlign * kAlign;
  return device;
}

bool page_locked_uploads() {
  return switch_value("IFW_CUDA_PINNED", {"0", "1"}) != "0";
}

bool is_page_locked(const void* p) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    (void)cudaGetLastError();  // not an error of the next call
    return false;
  }
  return attributes.type == cudaMemoryTypeHost;
}

PinnedBlock DeviceContext::take_pinned(std::size_t bytes) {
  {
    const std::lock_guard lock(pinned_mutex_);
    // Not a block more than twice as large: a step recording keeps what it takes for sessions,
    // and a batch's feature block lent to it would make the next batch allocate anew.
    if (const auto it = pinned_blocks_.lower_bound(bytes);
        it != pinned_blocks_.end() && it->first / 2 <= bytes) {
      const PinnedBlock block{it->second, it->first};
      pinned_free_bytes_ -= block.bytes;
      pinned_blocks_.erase(it);
      return block;
    }
  }
  // Outside the lock: tens of milliseconds for a batch's features.
  void* p = nullptr;
  check(cudaMallocHost(&p, bytes), "allocating pinned host memory");
  return {p, bytes};
}

void DeviceContext::free_pinned(const PinnedBlock& block) const noexcept {
  release_failed(cudaFreeHost(block.data), "freeing pinned host memory");
}

void DeviceContext::give_pinned(const PinnedBlock& block) noexcept {
  if (block.data == nullptr) return;
  {
    const std::lock_guard lock(pinned_mutex_);
    if (pinned_free_bytes_ + block.bytes <= kPinnedPoolBytes) {
      try {
        pinned_blocks_.emplace(block.bytes, block.data);
        pinned_free_bytes_ += block.bytes;
        return;
      } catch (const std::bad_alloc&) {  // freed below
      }
    }
  }
  free_pinned(block);
}

void DeviceContext::free_pinned_blocks() noexcept {
  std::multimap<std::size_t, void*> blocks;
  {
    const std::lock_guard lock(pinned_mutex_);
    blocks.swap(pinned_blocks_);
    pinned_free_bytes_ = 0;
  }
  for (const auto& [bytes, p] : blocks)
    free_pinned({p, bytes});
}

void DeviceContext::release_cached() {
  activate();
  check(cudaStreamSynchronize(stream_), "finishing the GPU's work");
  check(cudaMemPoolTrimTo(pool_, 0), "returning cached GPU memory");
}

DeviceStorage::DeviceStorage(std::shared_ptr<DeviceContext> context, std::size_t bytes)
    : context_(std::move(context)),
      bytes_(bytes),
      data_(context_->allocate_tensor(bytes, owned_)) {}

DeviceStorage::DeviceStorage(std::shared_ptr<DeviceContext> context, std::size_t bytes, Scratch)
    : context_(std::move(context)),
      bytes_(bytes),
      data_(context_->allocate_scratch(bytes, owned_)) {}

DeviceStorage::~DeviceStorage() {
  if (owned_) context_->free(data_);
}

MemoryInfo memory_info(int index) {
  int current = -1;
  cudaGetDevice(&current);
  check(cudaSetDevice(index), "selecting the GPU");
  std::size_t free = 0, total = 0;
  const cudaError_t err = cudaMemGetInfo(&free, &total);
  if (current >= 0 && current != index) cudaSetDevice(current);
  check(err, "reading the GPU's free memory");
  return {free, total};
}

}  // namespace ifw::backend::cuda
