#include "decode/language_detection.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ifw/error.hpp>

namespace ifw::decode {

std::vector<std::vector<LanguageProbability>> detect_language(
    const engine::WhisperModel& model, const backend::Tensor& encoder_states,
    engine::TokenId start_of_transcript,
    const std::vector<std::pair<std::string, engine::TokenId>>& languages) {
  if (languages.empty()) {
    throw Error(ErrorKind::kUnsupported, "the model's vocabulary has no language tokens");
  }
  const int batch = static_cast<int>(encoder_states.dim(0));
  engine::DecoderSession session(model, encoder_states);
  std::vector<int> items(static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b)
    items[static_cast<std::size_t>(b)] = b;
  const std::vector<engine::TokenId> tokens(static_cast<std::size_t>(batch), start_of_transcript);
  const std::vector<float> logits = session.forward(tokens, 1, items, engine::LogitRows::kLast);
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);

  std::vector<std::vector<LanguageProbability>> out(static_cast<std::size_t>(batch));
  for (std::size_t b = 0; b < out.size(); ++b) {
    const float* row = logits.data() + b * vocab;
    double max = -std::numeric_limits<double>::infinity();
    for (const auto& [code, id] : languages)
      max = std::max(max, static_cast<double>(row[id]));
    double sum = 0.0;
    for (const auto& [code, id] : languages)
      sum += std::exp(static_cast<double>(row[id]) - max);
    for (const auto& [code, id] : languages) {
      out[b].push_back({code, std::exp(static_cast<double>(row[id]) - max) / sum});
    }
    std::stable_sort(out[b].begin(), out[b].end(),
                     [](const auto& x, const auto& y) { return x.probability > y.probability; });
  }
  return out;
}

}  // namespace ifw::decode
