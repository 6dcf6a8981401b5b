// preprocessor_config.json: how audio becomes features. ifw computes Whisper's standard features
// (16 kHz, n_fft 400, hop 160, 30 s windows); the only free parameter is the number of mel bins.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace ifw::model {

struct PreprocessorConfig {
  int feature_size = 80;  // mel bins
  int sampling_rate = 16000;
  int hop_length = 160;
  int n_fft = 400;
  int chunk_length = 30;
  int n_samples = 480000;
  int nb_max_frames = 3000;
  double padding_value = 0.0;
};

PreprocessorConfig parse_preprocessor_config(const nlohmann::json& json, const std::string& source);
PreprocessorConfig load_preprocessor_config(const std::filesystem::path& file);

}  // namespace ifw::model
