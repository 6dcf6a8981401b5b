#include "decode/window_stats.hpp"

#include <vector>

#include <zlib.h>

#include <ifw/error.hpp>

namespace ifw::decode {

double compression_ratio(std::string_view text) {
  if (text.empty()) return 0.0;
  uLongf size = compressBound(static_cast<uLong>(text.size()));
  std::vector<Bytef> out(size);
  // Python's zlib.compress default (level 6), as the reference computes it.
  const int rc = compress2(out.data(), &size, reinterpret_cast<const Bytef*>(text.data()),
                           static_cast<uLong>(text.size()), Z_DEFAULT_COMPRESSION);
  if (rc != Z_OK) throw Error(ErrorKind::kIo, "zlib could not compress a window's text");
  return static_cast<double>(text.size()) / static_cast<double>(size);
}

}  // namespace ifw::decode
