// A dense, row-major tensor in one device's memory. Tensors share their storage (a view is
// cheap); the storage is freed when the last tensor using it goes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/dtype.hpp"

namespace ifw::backend {

enum class Device { kCpu, kCuda };

using Shape = std::vector<std::int64_t>;
std::int64_t element_count(const Shape& shape);
std::string shape_string(const Shape& shape);

// Memory owned by a device; what "free" means is the device's business.
class Storage {
 public:
  virtual ~Storage() = default;
  virtual void* data() = 0;
  virtual std::size_t bytes() const = 0;
  virtual Device device() const = 0;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, std::size_t offset_bytes = 0);

  bool empty() const { return !storage_; }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(std::size_t i) const { return shape_.at(i); }
  std::size_t rank() const { return shape_.size(); }
  std::int64_t numel() const { return element_count(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::kCpu; }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  void* raw() const { return static_cast<std::byte*>(storage_->data()) + offset_; }
  // Typed access for host-visible storage (the CPU backend).
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // The same memory seen with another shape of the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, begin + count) of the first dimension.
  Tensor rows(std::int64_t begin, std::int64_t count) const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  DType dtype_ = DType::kF32;
  std::size_t offset_ = 0;
};

}  // namespace ifw::backend
