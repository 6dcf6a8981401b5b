#include "model/preprocessor_config.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ifw/audio.hpp>
#include <ifw/error.hpp>

#include "util/json.hpp"

namespace ifw::model {

PreprocessorConfig parse_preprocessor_config(const nlohmann::json& json,
                                             const std::string& source) {
  const util::JsonObject obj(json, source);
  PreprocessorConfig p;
  if (const auto type = obj.get_string("feature_extractor_type");
      type && *type != "WhisperFeatureExtractor") {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: feature_extractor_type is \"{}\", ifw computes Whisper's features "
                            "(WhisperFeatureExtractor)",
                            source, *type));
  }
  p.feature_size = static_cast<int>(obj.int_in_range("feature_size", p.feature_size, 1, 1024));
  // Whisper's front end is fixed; anything else would be a different model family.
  const auto require = [&](std::string_view key, int expected) {
    const std::int64_t v = obj.get_int(key, expected);
    if (v != expected) {
      throw Error(
          ErrorKind::kUnsupported,
          fmt::format("{}: {} is {}; ifw supports Whisper's {} only", source, key, v, expected));
    }
    return expected;
  };
  p.sampling_rate = require("sampling_rate", kSampleRate);
  p.hop_length = require("hop_length", kHopLength);
  p.n_fft = require("n_fft", kFftSize);
  p.chunk_length = require("chunk_length", kWindowSeconds);
  p.n_samples = require("n_samples", static_cast<int>(kWindowSamples));
  p.nb_max_frames = require("nb_max_frames", kFramesPerWindow);
  p.padding_value = obj.get_number("padding_value").value_or(0.0);
  if (p.padding_value != 0.0) {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: padding_value is {}; Whisper pads with silence (0.0)", source,
                            p.padding_value));
  }
  if (const auto dither = obj.get_number("dither"); dither && *dither != 0.0) {
    // Dither adds random noise during training-time extraction; inference must be deterministic.
    spdlog::warn("{}: dither {} is ignored: ifw computes features without added noise", source,
                 *dither);
  }
  return p;
}

PreprocessorConfig load_preprocessor_config(const std::filesystem::path& file) {
  return parse_preprocessor_config(util::read_json_file(file), file.string());
}

}  // namespace ifw::model
