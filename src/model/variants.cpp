#include "model/variants.hpp"

#include <fmt/format.h>

namespace ifw::model {
namespace {

struct KnownSize {
  const char* name;
  int d_model, heads, layers, ffn;
};
constexpr KnownSize kSizes[] = {
    {"tiny", 384, 6, 4, 1536},      {"base", 512, 8, 6, 2048},     {"small", 768, 12, 12, 3072},
    {"medium", 1024, 16, 24, 4096}, {"large", 1280, 20, 32, 5120},
};

}  // namespace

std::string variant_name(const WhisperConfig& c, bool multilingual) {
  for (const KnownSize& s : kSizes) {
    if (c.d_model != s.d_model || c.encoder_attention_heads != s.heads ||
        c.decoder_attention_heads != s.heads || c.encoder_layers != s.layers ||
        c.encoder_ffn_dim != s.ffn || c.decoder_ffn_dim != s.ffn) {
      continue;
    }
    std::string base = s.name;
    // large and large-v2 share one architecture; only large-v3 changed it (128 mel bins).
    if (base == "large") base = c.num_mel_bins == 128 ? "large-v3" : "large-v2";
    const std::string en = multilingual ? "" : ".en";
    if (c.decoder_layers == s.layers) return base == "large-v2" ? "large or large-v2" : base + en;
    if (base == "large-v3" && c.decoder_layers == 4 && multilingual) return "large-v3-turbo";
    return fmt::format("distil-{}{} ({} decoder layers)", base, en, c.decoder_layers);
  }
  return "custom";
}

}  // namespace ifw::model
