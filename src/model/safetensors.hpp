// Safetensors weight files: memory-mapped, validated in full before any tensor is handed out.
// Format: u64 little-endian header length N, N bytes of JSON, then the tensors' bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/dtype.hpp"
#include "util/mapped_file.hpp"
#include "util/string_hash.hpp"

namespace ifw::model {

// One tensor inside a mapped file. `data` stays valid while its SafetensorsFile lives.
struct TensorView {
  std::string name;
  std::string dtype_name;               // as written in the file: "F32", "BF16", "I64", ...
  std::optional<backend::DType> dtype;  // set when ifw can compute with it (F32, F16, BF16)
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
  const std::filesystem::path* file = nullptr;  // the file it lives in, for messages
  std::int64_t elements = 0;                    // product of the shape, checked at parse

  std::int64_t element_count() const { return elements; }
  std::string shape_string() const;  // "[384, 80, 3]"
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws ifw::Error naming the file (and tensor) at fault.
  explicit SafetensorsFile(const std::filesystem::path& path);
  // Tensor views point into this object: it stays where it was made.
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return map_.path(); }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::size_t file_size() const { return map_.size(); }

 private:
  util::MappedFile map_;
  std::vector<TensorView> tensors_;  // sorted by offset
  std::map<std::string, std::string> metadata_;
};

// The weights of a model: one model.safetensors, or shards named by model.safetensors.index.json.
class WeightFiles {
 public:
  // Opens `model_dir`/model.safetensors, or else `model_dir`/model.safetensors.index.json.
  static WeightFiles open_folder(const std::filesystem::path& model_dir);
  static WeightFiles open_file(const std::filesystem::path& file);
  static WeightFiles open_index(const std::filesystem::path& index_file);

  const TensorView* find(std::string_view name) const;
  std::vector<const TensorView*> all() const;  // in file order
  std::size_t tensor_count() const { return by_name_.size(); }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  WeightFiles() = default;
  void add_file(std::unique_ptr<SafetensorsFile> file);

  std::vector<std::unique_ptr<SafetensorsFile>> files_;  // unique_ptr: views keep stable addresses
  util::StringMap<const TensorView*> by_name_;
};

// Element size in bytes of a safetensors dtype name, or nullopt for a name the format lacks.
std::optional<std::size_t> safetensors_dtype_size(std::string_view name);

}  // namespace ifw::model
