#include "backend/tensor.hpp"

#include <algorithm>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <ifw/error.hpp>

#include "backend/backend.hpp"

namespace ifw::backend {

std::int64_t element_count(const Shape& shape) {
  std::int64_t n = 1;
  for (const std::int64_t d : shape)
    n *= d;
  return n;
}

std::string shape_string(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, std::size_t offset_bytes)
    : storage_(std::move(storage)), shape_(std::move(shape)), dtype_(dtype), offset_(offset_bytes) {
  if (storage_ && offset_ + bytes() > storage_->bytes()) {
    throw std::logic_error(fmt::format("tensor {} at offset {} exceeds its storage of {} bytes",
                                       shape_string(shape_), offset_, storage_->bytes()));
  }
}

Tensor Tensor::reshape(Shape shape) const {
  if (element_count(shape) != numel()) {
    throw std::logic_error(
        fmt::format("cannot reshape {} to {}", shape_string(shape_), shape_string(shape)));
  }
  return Tensor(storage_, std::move(shape), dtype_, offset_);
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t count) const {
  if (shape_.empty() || begin < 0 || count < 0 || begin + count > shape_[0]) {
    throw std::logic_error(
        fmt::format("rows {}..{} outside {}", begin, begin + count, shape_string(shape_)));
  }
  Shape s = shape_;
  s[0] = count;
  const std::size_t row_bytes =
      static_cast<std::size_t>(element_count(shape_) / std::max<std::int64_t>(shape_[0], 1)) *
      dtype_size(dtype_);
  return Tensor(storage_, std::move(s), dtype_,
                offset_ + static_cast<std::size_t>(begin) * row_bytes);
}

void check_embedding_inputs(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
                            std::int64_t vocabulary, std::int64_t positions) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocabulary) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("token id {} is outside the vocabulary of {}", ids[i], vocabulary));
    }
    if (pos[i] < 0 || pos[i] >= positions) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("position {} is past the decoder's {} positions", pos[i], positions));
    }
  }
}

}  // namespace ifw::backend
