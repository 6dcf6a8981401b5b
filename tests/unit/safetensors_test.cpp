// The safetensors reader: valid files, shards, and every malformed input we could think of.
#include "model/safetensors.hpp"

#include <cstring>

#include <gtest/gtest.h>

#include "support/expect_error.hpp"
#include "support/model_builder.hpp"
#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using model::SafetensorsFile;
using model::WeightFiles;

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (const float v : values) {
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
  }
  return out;
}

class Safetensors : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& bytes, const std::string& name = "w.safetensors") {
    const auto path = dir_ / name;
    write_file(path, bytes);
    return path;
  }
  // A header with one tensor entry, given as raw JSON.
  std::filesystem::path write_header(const std::string& header, const std::string& data) {
    return write(build_safetensors_raw(header, data));
  }
  TempDir dir_;
};

TEST_F(Safetensors, ReadsTensorsDtypesShapesAndMetadata) {
  const std::string h16("\x00\x3C\x00\xC0", 4);  // 1.0, -2.0 as F16
  const auto path = write(build_safetensors({{"a", "F32", {2, 2}, f32_bytes({1, 2, 3, 4})},
                                             {"b", "F16", {2}, h16},
                                             {"c", "BF16", {1}, std::string("\x80\x3F", 2)},
                                             {"d", "I64", {1}, std::string(8, '\0')}},
                                            {{"format", "pt"}}));
  const SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 4u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const auto& a = file.tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(a.element_count(), 4);
  EXPECT_EQ(a.dtype, backend::DType::kF32);
  float values[4];
  std::memcpy(values, a.data.data(), 16);
  EXPECT_EQ(values[3], 4.0f);
  EXPECT_EQ(file.tensors()[1].dtype, backend::DType::kF16);
  EXPECT_EQ(file.tensors()[2].dtype, backend::DType::kBF16);
  EXPECT_FALSE(file.tensors()[3].dtype.has_value());  // readable, but not a compute type
  EXPECT_EQ(file.tensors()[3].dtype_name, "I64");
}

TEST_F(Safetensors, ScalarAndEmptyTensors) {
  const auto path = write(
      build_safetensors({{"scalar", "F32", {}, f32_bytes({5})}, {"empty", "F32", {0, 3}, ""}}));
  const SafetensorsFile file(path);
  EXPECT_EQ(file.tensors().size(), 2u);
}

TEST_F(Safetensors, HugeShapeWithAZeroDimensionHoldsNothing) {
  const auto path = write_header(
      R"({"t":{"dtype":"U8","shape":[2147483648,2147483648,2,0],"data_offsets":[0,0]},"__metadata__":null})",
      "");
  const SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 1u);
  EXPECT_EQ(file.tensors()[0].element_count(), 0);
  EXPECT_TRUE(file.metadata().empty());
}

TEST_F(Safetensors, EmptyOrShortFile) {
  EXPECT_IFW_ERROR(SafetensorsFile(write("")), "w.safetensors", "0 bytes, too short");
  EXPECT_IFW_ERROR(SafetensorsFile(write("1234567")), "7 bytes, too short");
}

TEST_F(Safetensors, HeaderLongerThanTheFile) {
  std::string bytes = build_safetensors({{"a", "F32", {1}, f32_bytes({1})}});
  bytes[0] = static_cast<char>(0xFF);  // header length now 255+ bytes beyond
  bytes[1] = static_cast<char>(0x7F);
  EXPECT_IFW_ERROR(SafetensorsFile(write(bytes)), "header length", "runs past the end of the file");
  std::string huge(8, '\xFF');
  EXPECT_IFW_ERROR(SafetensorsFile(write(huge + "{}")), "runs past the end");
}

TEST_F(Safetensors, TruncatedData) {
  std::string bytes = build_safetensors({{"a", "F32", {4}, f32_bytes({1, 2, 3, 4})}});
  bytes.resize(bytes.size() - 3);
  EXPECT_IFW_ERROR(SafetensorsFile(write(bytes)), "tensor \"a\"", "run past the end of the data",
                   "truncated");
}

TEST_F(Safetensors, HeaderIsNotJson) {
  EXPECT_IFW_ERROR(SafetensorsFile(write_header("{\"a\": }", "")),
                   "w.safetensors: header: not valid JSON");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header("[1,2,3]", "")),
                   "does not start with a JSON object");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(std::string("{}\0\0\0\0\0\0", 8), "")),
                   "not valid JSON");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header("{\"\xFF\": 1}", "")), "not valid JSON");
}

TEST_F(Safetensors, DuplicateTensorNames) {
  const std::string entry = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  EXPECT_IFW_ERROR(
      SafetensorsFile(write_header("{\"a\":" + entry + ",\"a\":" + entry + "}", f32_bytes({1}))),
      "key \"a\" appears twice");
}

TEST_F(Safetensors, MalformedEntries) {
  const std::string data = f32_bytes({1, 2});
  const auto header = [](const std::string& entry) { return "{\"t\":" + entry + "}"; };
  EXPECT_IFW_ERROR(
      SafetensorsFile(write_header(header(R"({"shape":[2],"data_offsets":[0,8]})"), data)),
      "tensor \"t\"", "dtype missing");
  EXPECT_IFW_ERROR(
      SafetensorsFile(write_header(header(R"({"dtype":"F32","data_offsets":[0,8]})"), data)),
      "shape missing");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(header(R"({"dtype":"F32","shape":[2]})"), data)),
                   "data_offsets missing");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"Q4","shape":[2],"data_offsets":[0,8]})"), data)),
                   "unknown dtype \"Q4\"");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), data)),
                   "non-negative sizes");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), data)),
                   "shape must be a list");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), data)),
                   "end before they begin");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), data)),
                   "data_offsets must be [begin, end]");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(
                       header(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})"), data)),
                   "unexpected field \"x\"");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(header("3"), data)), "entry must be an object");
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(R"({"__metadata__":{"k":1}})", "")),
                   "__metadata__ entry \"k\" must be a string");
}

TEST_F(Safetensors, WrongDtypeForTheByteCount) {
  // F16 x [2] needs 4 bytes, the offsets give 8.
  EXPECT_IFW_ERROR(
      SafetensorsFile(write_header(R"({"t":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}})",
                                   f32_bytes({1, 2}))),
      "tensor \"t\"", "F16 x shape [2] needs 4 bytes but data_offsets [0, 8] hold 8");
  EXPECT_IFW_ERROR(
      SafetensorsFile(write_header(
          R"({"t":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}})",
          f32_bytes({1, 2}))),
      "tensor \"t\"");
}

TEST_F(Safetensors, OverlappingTensors) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(h, f32_bytes({1, 2, 3}))), "\"a\"", "\"b\"",
                   "overlap");
}

TEST_F(Safetensors, HolesAndTrailingBytes) {
  const std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(gap, f32_bytes({1, 2, 3}))),
                   "bytes 4..8 belong to no tensor");
  const std::string one = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_IFW_ERROR(SafetensorsFile(write_header(one, f32_bytes({1, 2}))),
                   "4 bytes after the last tensor");
}

TEST_F(Safetensors, MissingFile) {
  try {
    SafetensorsFile file(dir_ / "absent.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_TRUE(std::string(e.what()).find("absent.safetensors") != std::string::npos);
  }
}

class ShardedWeights : public Safetensors {
 protected:
  void write_shards() {
    write(build_safetensors({{"a", "F32", {1}, f32_bytes({1})}, {"b", "F32", {1}, f32_bytes({2})}}),
          "s1.safetensors");
    write(build_safetensors({{"c", "F32", {1}, f32_bytes({3})}}), "s2.safetensors");
  }
  void write_index(const nlohmann::json& weight_map) {
    write_json(dir_ / "model.safetensors.index.json",
               {{"metadata", {{"total_size", 12}}}, {"weight_map", weight_map}});
  }
};

TEST_F(ShardedWeights, ReadsEveryShardOfTheIndex) {
  write_shards();
  write_index({{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}});
  const WeightFiles w = WeightFiles::open_folder(dir_.path());
  EXPECT_EQ(w.tensor_count(), 3u);
  EXPECT_EQ(w.files().size(), 2u);
  ASSERT_NE(w.find("c"), nullptr);
  EXPECT_EQ(w.find("c")->file->filename(), "s2.safetensors");
  EXPECT_EQ(w.find("zzz"), nullptr);
}

TEST_F(ShardedWeights, InconsistentIndex) {
  write_shards();
  write_index({{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s3.safetensors"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()),
                   "shard s3.safetensors is listed in the index but missing");
  write_index({{"a", "s1.safetensors"},
               {"b", "s1.safetensors"},
               {"c", "s2.safetensors"},
               {"d", "s2.safetensors"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()),
                   "places tensor \"d\" in s2.safetensors, which does not hold it");
  write_index({{"a", "s1.safetensors"}, {"c", "s2.safetensors"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()),
                   "tensor \"b\" is in s1.safetensors but the index does not list it");
  write_index({{"a", "../s1.safetensors"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()), "not a file name in the model folder");
  write_index({{"a", "/etc/passwd"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()), "not a file name in the model folder");
  write_index(nlohmann::json::object());
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()), "weight_map", "is empty");
  write_index({{"a", 3}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()), "entry \"a\" must name a file");
  write_file(dir_ / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()),
                   "model.safetensors.index.json: not valid JSON");
}

TEST_F(ShardedWeights, SameTensorInTwoShards) {
  write(build_safetensors({{"a", "F32", {1}, f32_bytes({1})}}), "s1.safetensors");
  write(build_safetensors({{"a", "F32", {1}, f32_bytes({2})}, {"b", "F32", {1}, f32_bytes({3})}}),
        "s2.safetensors");
  write_index({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()),
                   "tensor \"a\" is in s2.safetensors but the index does not list it there");
}

TEST_F(Safetensors, NoWeightsAtAllNamesWhatWasFound) {
  write_file(dir_ / "pytorch_model.bin", "pickle");
  EXPECT_IFW_ERROR(WeightFiles::open_folder(dir_.path()), "no weights", "pytorch_model.bin",
                   "PyTorch pickles are not loaded");
}

TEST_F(Safetensors, SingleFileWinsOverAnIndex) {
  write(build_safetensors({{"a", "F32", {1}, f32_bytes({1})}}), "model.safetensors");
  write_file(dir_ / "model.safetensors.index.json", "not even json");
  EXPECT_EQ(WeightFiles::open_folder(dir_.path()).tensor_count(), 1u);
}

}  // namespace
}  // namespace ifw::test
