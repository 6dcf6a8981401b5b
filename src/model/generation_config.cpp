#include "model/generation_config.hpp"

#include <fmt/format.h>

#include <ifw/error.hpp>

#include "util/json.hpp"

namespace ifw::model {
namespace {

constexpr std::int64_t kMaxTokenId = (1 << 24) - 1;

std::map<std::string, int> parse_token_map(const util::JsonObject& obj, std::string_view key) {
  std::map<std::string, int> out;
  const nlohmann::json* map = obj.find(key);
  if (map == nullptr) return out;
  if (!map->is_object()) obj.fail(key, "must be an object of token ids");
  for (const auto& [name, value] : map->items()) {
    const auto id = util::as_integer(value);
    if (!id || *id < 0 || *id > kMaxTokenId) {
      obj.fail(key,
               fmt::format("maps \"{}\" to {}, not a token id", name, util::json_excerpt(value)));
    }
    out.emplace(name, static_cast<int>(*id));
  }
  return out;
}

std::optional<std::vector<int>> token_list(const util::JsonObject& obj, std::string_view key) {
  const auto values = obj.get_int_list(key);
  if (!values) return std::nullopt;
  std::vector<int> out;
  for (const std::int64_t v : *values) {
    if (v < 0 || v > kMaxTokenId) obj.fail(key, fmt::format("holds {}, not a token id", v));
    out.push_back(static_cast<int>(v));
  }
  return out;
}

std::optional<int> token_id(const util::JsonObject& obj, std::string_view key) {
  const auto v = obj.get_int(key);
  if (!v) return std::nullopt;
  if (*v < 0 || *v > kMaxTokenId) obj.fail(key, fmt::format("is {}, not a token id", *v));
  return static_cast<int>(*v);
}

}  // namespace

GenerationConfig parse_generation_config(const nlohmann::json& json, const std::string& source) {
  const util::JsonObject obj(json, source);
  GenerationConfig g;
  if (const nlohmann::json* heads = obj.find("alignment_heads")) {
    if (!heads->is_array()) obj.fail("alignment_heads", "must be a list of [layer, head] pairs");
    std::vector<AlignmentHead> list;
    for (std::size_t i = 0; i < heads->size(); ++i) {
      const nlohmann::json& pair = (*heads)[i];
      const bool is_pair = pair.is_array() && pair.size() == 2;
      const std::int64_t layer = is_pair ? util::as_integer(pair[0]).value_or(-1) : -1;
      const std::int64_t head = is_pair ? util::as_integer(pair[1]).value_or(-1) : -1;
      if (layer < 0 || head < 0 || layer > 1024 || head > 1024) {
        obj.fail("alignment_heads",
                 fmt::format("item {} is {}, expected [layer, head]", i, util::json_excerpt(pair)));
      }
      list.push_back({static_cast<int>(layer), static_cast<int>(head)});
    }
    g.alignment_heads = std::move(list);
  }
  g.suppress_tokens = token_list(obj, "suppress_tokens");
  g.begin_suppress_tokens = token_list(obj, "begin_suppress_tokens");
  g.decoder_start_token_id = token_id(obj, "decoder_start_token_id");
  if (const nlohmann::json* eos = obj.find("eos_token_id"); eos != nullptr && eos->is_array()) {
    g.eos_token_ids = token_list(obj, "eos_token_id");
    if (g.eos_token_ids->empty()) obj.fail("eos_token_id", "is an empty list");
  } else if (const auto id = token_id(obj, "eos_token_id")) {
    g.eos_token_ids = std::vector<int>{*id};
  }
  g.pad_token_id = token_id(obj, "pad_token_id");
  g.no_timestamps_token_id = token_id(obj, "no_timestamps_token_id");
  g.prev_sot_token_id = token_id(obj, "prev_sot_token_id");
  g.is_multilingual = obj.get_bool("is_multilingual");
  g.lang_to_id = parse_token_map(obj, "lang_to_id");
  g.task_to_id = parse_token_map(obj, "task_to_id");
  g.max_initial_timestamp_index = static_cast<int>(
      obj.int_in_range("max_initial_timestamp_index", g.max_initial_timestamp_index, 0, 1500));
  g.max_length = static_cast<int>(obj.int_in_range("max_length", g.max_length, 1, 1 << 20));
  g.return_timestamps = obj.get_bool("return_timestamps").value_or(false);
  return g;
}

GenerationConfig load_generation_config(const std::filesystem::path& file) {
  return parse_generation_config(util::read_json_file(file), file.string());
}

}  // namespace ifw::model
