// Host memory for values bound for the device in bulk (a batch's log-mel features): beside a GPU
// page-locked, so that their upload runs at the link's full speed without the driver's staging
// copy; plain memory elsewhere (Backend::host_buffer). Move-only; the memory goes back to where
// it came from when the buffer goes.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <utility>

namespace ifw::backend {

class HostBuffer {
 public:
  HostBuffer() = default;
  // `count` floats of plain memory (not initialised).
  explicit HostBuffer(std::size_t count)
      : plain_(std::make_unique_for_overwrite<float[]>(count)),
        data_(plain_.get()),
        count_(count) {}
  // Memory owned elsewhere: `give_back` runs once when the buffer goes.
  HostBuffer(float* data, std::size_t count, std::function<void()> give_back)
      : data_(data), count_(count), give_back_(std::move(give_back)) {}
  HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }
  HostBuffer& operator=(HostBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      plain_ = std::move(other.plain_);
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
      give_back_ = std::exchange(other.give_back_, nullptr);
    }
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { reset(); }

  std::span<float> values() { return {data_, count_}; }
  std::span<const float> values() const { return {data_, count_}; }

 private:
  void reset() noexcept {
    if (give_back_) std::exchange(give_back_, nullptr)();
    plain_.reset();
    data_ = nullptr;
    count_ = 0;
  }

  std::unique_ptr<float[]> plain_;
  float* data_ = nullptr;
  std::size_t count_ = 0;
  std::function<void()> give_back_;
};

}  // namespace ifw::backend
