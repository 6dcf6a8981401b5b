// A backend that hands every operation to another one: tests derive from it to change one thing
// (memory that runs out, step graphs) and keep the rest real.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "backend/backend.hpp"

namespace ifw::test {

// A step "recording" the simplest way the StepGraph contract allows: the steps run directly each
// time. With it a CPU backend takes the paths of a backend that records steps (rounded steps,
// decoder buffers kept from session to session). Counts in `used` the graphs that ran a step.
class DirectStepGraph final : public backend::StepGraph {
 public:
  explicit DirectStepGraph(int* used = nullptr) : used_(used) {}
  void run(const std::function<void()>& ops) override {
    if (!ran_ && used_ != nullptr) ++*used_;
    ran_ = true;
    ops();
  }

 private:
  int* used_;
  bool ran_ = false;
};

class DelegatingBackend : public backend::Backend {
 public:
  explicit DelegatingBackend(std::unique_ptr<backend::Backend> inner) : inner_(std::move(inner)) {}

  backend::Device device() const override { return inner_->device(); }
  std::string description() const override { return inner_->description(); }
  int threads() const override { return inner_->threads(); }
  backend::DType weight_dtype() const override { return inner_->weight_dtype(); }
  backend::DType activation_dtype() const override { return inner_->activation_dtype(); }
  backend::HostBuffer host_buffer(std::size_t count) override { return inner_->host_buffer(count); }
  backend::Tensor empty(const backend::Shape& shape,
                        backend::DType dtype = backend::DType::kF32) override {
    return inner_->empty(shape, dtype);
  }
  backend::Tensor upload(std::span<const float> values, const backend::Shape& shape,
                         backend::DType dtype = backend::DType::kF32) override {
    return inner_->upload(values, shape, dtype);
  }
  void download(const backend::Tensor& t, std::span<float> out) override {
    inner_->download(t, out);
  }
  void synchronize() override { inner_->synchronize(); }
  void release_cached_memory() override { inner_->release_cached_memory(); }
  void profile_section(std::string_view name) override { inner_->profile_section(name); }
  std::unique_ptr<backend::StepGraph> make_step_graph() override {
    return inner_->make_step_graph();
  }
  void linear(const backend::MatrixRef& x, const backend::Tensor& w, const backend::Tensor* bias,
              backend::Activation act, const backend::MatrixRef& y, std::int64_t rows,
              bool accumulate) override {
    inner_->linear(x, w, bias, act, y, rows, accumulate);
  }
  void layer_norm(const backend::Tensor& x, const backend::Tensor* shift,
                  const backend::Tensor& gamma, const backend::Tensor& beta, float eps,
                  backend::Tensor& y) override {
    inner_->layer_norm(x, shift, gamma, beta, eps, y);
  }
  void add_rows(backend::Tensor& x, const backend::Tensor& rows, std::int64_t block) override {
    inner_->add_rows(x, rows, block);
  }
  void transpose_last2(const backend::Tensor& x, backend::Tensor& y) override {
    inner_->transpose_last2(x, y);
  }
  void conv1d_gelu(const backend::Tensor& x, const backend::Tensor& w, const backend::Tensor& bias,
                   int stride, backend::Tensor& y) override {
    inner_->conv1d_gelu(x, w, bias, stride, y);
  }
  void attention(const backend::AttentionArgs& args) override { inner_->attention(args); }
  void embed(std::span<const std::int32_t> ids, std::span<const std::int32_t> pos,
             const backend::Tensor& table, const backend::Tensor& positions,
             backend::Tensor& y) override {
    inner_->embed(ids, pos, table, positions, y);
  }
  void write_rows(const backend::MatrixRef& src, int batch, int rows_per_item, backend::Tensor& dst,
                  std::int64_t dst_block, std::span<const int> blocks,
                  std::span<const int> starts) override {
    inner_->write_rows(src, batch, rows_per_item, dst, dst_block, blocks, starts);
  }
  void gather_rows(const backend::Tensor& x, std::span<const std::int64_t> index,
                   backend::Tensor& y) override {
    inner_->gather_rows(x, index, y);
  }
  void choose_tokens(const backend::Tensor& logits, std::span<const std::uint8_t> flags,
                     std::span<const backend::RowRules> rules,
                     std::span<backend::TokenChoice> out) override {
    inner_->choose_tokens(logits, flags, rules, out);
  }

 protected:
  backend::Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<backend::Backend> inner_;
};

}  // namespace ifw::test
