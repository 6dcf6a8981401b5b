#include "model/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <ifw/error.hpp>

#include "util/json.hpp"
#include "util/utf8.hpp"

namespace ifw::model {
namespace {

// The reference library's limit; a larger header is corrupt or hostile.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kIndexFile = "model.safetensors.index.json";
constexpr std::string_view kSingleFile = "model.safetensors";

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& message) {
  throw Error(ErrorKind::kInvalidModel, file.string() + ": " + message);
}

[[noreturn]] void fail_tensor(const std::filesystem::path& file, std::string_view tensor,
                              const std::string& message) {
  fail(file, fmt::format("tensor {}: {}", util::quote_for_message(tensor), message));
}

std::optional<backend::DType> compute_dtype(std::string_view name) {
  if (name == "F32") return backend::DType::kF32;
  if (name == "F16") return backend::DType::kF16;
  if (name == "BF16") return backend::DType::kBF16;
  return std::nullopt;
}

std::uint64_t read_u64_le(std::span<const std::byte> bytes) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<std::uint8_t>(bytes[static_cast<std::size_t>(i)]);
  return v;
}

// [begin, end) offsets into the data section, checked to be non-negative integers.
std::pair<std::uint64_t, std::uint64_t> parse_offsets(const std::filesystem::path& file,
                                                      const std::string& name,
                                                      const nlohmann::json& offsets) {
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail_tensor(file, name,
                "data_offsets must be [begin, end] as non-negative integers, got " +
                    util::json_excerpt(offsets));
  }
  const auto begin = offsets[0].get<std::uint64_t>();
  const auto end = offsets[1].get<std::uint64_t>();
  if (begin > end)
    fail_tensor(file, name, fmt::format("data_offsets [{}, {}] end before they begin", begin, end));
  return {begin, end};
}

std::vector<std::int64_t> parse_shape(const std::filesystem::path& file, const std::string& name,
                                      const nlohmann::json& shape) {
  if (!shape.is_array()) {
    fail_tensor(file, name, "shape must be a list of sizes, got " + util::json_excerpt(shape));
  }
  std::vector<std::int64_t> dims;
  for (const nlohmann::json& d : shape) {
    if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (std::uint64_t{1} << 40)) {
      fail_tensor(file, name,
                  "shape must hold non-negative sizes, got " + util::json_excerpt(shape));
    }
    dims.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
  }
  return dims;
}

}  // namespace

std::optional<std::size_t> safetensors_dtype_size(std::string_view name) {
  static const std::map<std::string_view, std::size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},
  };
  const auto it = sizes.find(name);
  if (it == sizes.end()) return std::nullopt;
  return it->second;
}

std::string TensorView::shape_string() const {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : map_(path) {
  const std::span<const std::byte> bytes = map_.bytes();
  if (bytes.size() < 8) {
    fail(path, fmt::format("file is {} bytes, too short for a safetensors header (truncated?)",
                           bytes.size()));
  }
  const std::uint64_t header_len = read_u64_le(bytes.first(8));
  if (header_len > bytes.size() - 8) {
    fail(path, fmt::format("header length {} runs past the end of the file ({} bytes; truncated "
                           "or not a safetensors file)",
                           header_len, bytes.size()));
  }
  if (header_len > kMaxHeaderBytes) {
    fail(path, fmt::format("header length {} exceeds the format's limit of {} bytes", header_len,
                           kMaxHeaderBytes));
  }
  if (header_len < 2)
    fail(path, fmt::format("header length {} cannot hold a JSON object", header_len));
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + 8), header_len);
  if (header.front() != '{') fail(path, "header does not start with a JSON object '{'");
  const nlohmann::json json = util::parse_json(header, path.string() + ": header");
  if (!json.is_object()) fail(path, "header is not a JSON object");

  const std::span<const std::byte> data = bytes.subspan(8 + header_len);
  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;  // the reference reader treats null as absent
      if (!entry.is_object()) fail(path, "__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          fail(path, fmt::format("__metadata__ entry \"{}\" must be a string, got {}", key,
                                 util::json_excerpt(value)));
        }
        metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    if (!entry.is_object())
      fail_tensor(path, name, "entry must be an object, got " + util::json_excerpt(entry));
    for (const auto& [field, value] : entry.items()) {
      if (field != "dtype" && field != "shape" && field != "data_offsets") {
        fail_tensor(path, name, fmt::format("unexpected field \"{}\"", field));
      }
    }
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string())
      fail_tensor(path, name, "dtype missing or not a string");
    if (shape_it == entry.end()) fail_tensor(path, name, "shape missing");
    if (offsets_it == entry.end()) fail_tensor(path, name, "data_offsets missing");

    TensorView view;
    view.name = name;
    view.dtype_name = dtype_it->get<std::string>();
    const auto element_size = safetensors_dtype_size(view.dtype_name);
    if (!element_size)
      fail_tensor(path, name, fmt::format("unknown dtype \"{}\"", view.dtype_name));
    view.dtype = compute_dtype(view.dtype_name);
    view.shape = parse_shape(path, name, *shape_it);
    const auto [begin, end] = parse_offsets(path, name, *offsets_it);

    // Element count times size, without overflow.
    std::uint64_t expected = *element_size;
    for (const std::int64_t d : view.shape) {
      const auto ud = static_cast<std::uint64_t>(d);
      if (ud != 0 && expected > std::numeric_limits<std::uint64_t>::max() / ud) {
        fail_tensor(path, name,
                    fmt::format("shape {} is too large", util::json_excerpt(*shape_it)));
      }
      expected *= ud;
    }
    if (end > data.size()) {
      fail_tensor(path, name,
                  fmt::format("data_offsets [{}, {}] run past the end of the data "
                              "({} bytes; truncated file?)",
                              begin, end, data.size()));
    }
    if (end - begin != expected) {
      fail_tensor(path, name,
                  fmt::format("{} x shape {} needs {} bytes but data_offsets [{}, {}] "
                              "hold {}",
                              view.dtype_name, util::json_excerpt(*shape_it), expected, begin, end,
                              end - begin));
    }
    view.data = data.subspan(begin, end - begin);
    // The byte count fits the file, so the element count does too (0 when a dimension is 0).
    view.elements = static_cast<std::int64_t>(expected / *element_size);
    view.file = &map_.path();
    tensors_.push_back(std::move(view));
  }

  // The data section must be tiled exactly: no overlap, no hole, nothing after the last tensor.
  std::sort(tensors_.begin(), tensors_.end(), [&](const TensorView& a, const TensorView& b) {
    return a.data.data() != b.data.data() ? a.data.data() < b.data.data()
                                          : a.data.size() < b.data.size();
  });
  std::uint64_t covered = 0;
  const TensorView* previous = nullptr;
  for (const TensorView& t : tensors_) {
    const auto begin = static_cast<std::uint64_t>(t.data.data() - data.data());
    const auto end = begin + t.data.size();
    if (begin < covered) {
      fail(path, fmt::format("tensors \"{}\" (bytes {}..{}) and \"{}\" (bytes {}..{}) overlap",
                             previous->name, covered - previous->data.size(), covered, t.name,
                             begin, end));
    }
    if (begin > covered) {
      fail(path, fmt::format("data bytes {}..{} belong to no tensor (before \"{}\")", covered,
                             begin, t.name));
    }
    covered = end;
    previous = &t;
  }
  if (covered != data.size()) {
    fail(path,
         fmt::format("{} bytes after the last tensor belong to no tensor", data.size() - covered));
  }
}

WeightFiles WeightFiles::open_folder(const std::filesystem::path& model_dir) {
  std::error_code ec;
  const auto single = model_dir / kSingleFile;
  const auto index = model_dir / kIndexFile;
  // transformers prefers the single file when both exist; so do we.
  if (std::filesystem::exists(single, ec)) return open_file(single);
  if (std::filesystem::exists(index, ec)) return open_index(index);

  std::vector<std::string> others;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
    const auto name = entry.path().filename().string();
    const auto ext = entry.path().extension().string();
    if (ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt" || ext == ".msgpack" ||
        ext == ".h5" || ext == ".safetensors") {
      others.push_back(name);
    }
  }
  std::sort(others.begin(), others.end());
  std::string hint;
  if (!others.empty()) {
    hint = fmt::format(
        " (found {}: ifw reads Hugging Face safetensors weights named "
        "model.safetensors or listed in model.safetensors.index.json; PyTorch "
        "pickles are not loaded because they can run code)",
        fmt::join(others, ", "));
  }
  throw Error(ErrorKind::kInvalidModel,
              fmt::format("{}: no weights: neither {} nor {}{}", model_dir.string(), kSingleFile,
                          kIndexFile, hint));
}

WeightFiles WeightFiles::open_file(const std::filesystem::path& file) {
  WeightFiles w;
  w.add_file(std::make_unique<SafetensorsFile>(file));
  return w;
}

WeightFiles WeightFiles::open_index(const std::filesystem::path& index_file) {
  const nlohmann::json index = util::read_json_file(index_file);
  const util::JsonObject obj(index, index_file.string());
  const nlohmann::json* map = obj.find("weight_map");
  if (map == nullptr || !map->is_object())
    obj.fail("weight_map", "must be an object of tensor -> file");
  if (map->empty()) obj.fail("weight_map", "is empty");

  // Shard names come from a file a stranger may have written: only plain names in the folder.
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string())
      obj.fail("weight_map", fmt::format("entry \"{}\" must name a file", tensor));
    const auto name = shard.get<std::string>();
    const std::filesystem::path p(name);
    if (name.empty() || p.has_parent_path() || p.is_absolute() || name == "." || name == "..") {
      obj.fail("weight_map", fmt::format("entry \"{}\" names {}, which is not a file name in the "
                                         "model folder",
                                         tensor, util::quote_for_message(name)));
    }
    tensors_by_shard[name].push_back(tensor);
  }

  WeightFiles w;
  const auto dir = index_file.parent_path();
  for (const auto& [shard, listed] : tensors_by_shard) {
    const auto shard_path = dir / shard;
    std::error_code ec;
    if (!std::filesystem::exists(shard_path, ec)) {
      throw Error(ErrorKind::kInvalidModel,
                  fmt::format("{}: shard {} is listed in the index but missing ({} tensors)",
                              index_file.string(), shard, listed.size()));
    }
    auto file = std::make_unique<SafetensorsFile>(shard_path);
    std::unordered_map<std::string_view, bool> present;
    for (const TensorView& t : file->tensors())
      present.emplace(t.name, false);
    for (const std::string& tensor : listed) {
      const auto it = present.find(tensor);
      if (it == present.end()) {
        throw Error(ErrorKind::kInvalidModel,
                    fmt::format("{}: the index places tensor \"{}\" in {}, which does not hold it",
                                index_file.string(), tensor, shard));
      }
      it->second = true;
    }
    for (const auto& [tensor, listed_in_index] : present) {
      if (!listed_in_index) {
        throw Error(ErrorKind::kInvalidModel,
                    fmt::format("{}: tensor \"{}\" is in {} but the index does not list it there",
                                index_file.string(), tensor, shard));
      }
    }
    w.add_file(std::move(file));
  }

  std::uint64_t tensor_bytes = 0;
  for (const TensorView* t : w.all())
    tensor_bytes += t->data.size();
  if (const nlohmann::json* meta = obj.find("metadata"); meta != nullptr && meta->is_object()) {
    const auto total = meta->find("total_size");
    if (total != meta->end() && util::as_integer(*total) &&
        static_cast<std::uint64_t>(*util::as_integer(*total)) != tensor_bytes) {
      // Informational only in the format; some exporters count differently. Worth a warning.
      spdlog::warn("{}: metadata.total_size is {} but the shards hold {} bytes of tensors",
                   index_file.string(), util::json_excerpt(*total), tensor_bytes);
    }
  }
  return w;
}

void WeightFiles::add_file(std::unique_ptr<SafetensorsFile> file) {
  for (const TensorView& t : file->tensors()) {
    const auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted) {
      throw Error(ErrorKind::kInvalidModel,
                  fmt::format("tensor \"{}\" appears in both {} and {}", t.name,
                              it->second->file->string(), file->path().string()));
    }
  }
  files_.push_back(std::move(file));
}

const TensorView* WeightFiles::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const TensorView*> WeightFiles::all() const {
  std::vector<const TensorView*> out;
  out.reserve(by_name_.size());
  for (const auto& f : files_) {
    for (const TensorView& t : f->tensors())
      out.push_back(&t);
  }
  return out;
}

}  // namespace ifw::model
