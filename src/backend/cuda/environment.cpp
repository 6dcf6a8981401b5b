#include "backend/cuda/environment.hpp"

#include <cstdlib>
#include <mutex>
#include <set>
#include <string>

#include <spdlog/spdlog.h>

namespace ifw::backend::cuda {
namespace {

bool known_item(std::string_view item, std::initializer_list<std::string_view> known) {
  for (const std::string_view k : known) {
    if (item == k) return true;
  }
  return false;
}

template <typename Visit>
void for_each_item(std::string_view list, Visit visit) {
  while (true) {
    const std::size_t comma = list.find(',');
    visit(list.substr(0, comma));
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// Once per variable and value: a wrong value is set once and read on every call.
void report(const char* name, std::string_view value, std::initializer_list<std::string_view> known,
            bool list) {
  static std::mutex mutex;
  static std::set<std::string> reported;
  const std::lock_guard lock(mutex);
  if (!reported.insert(std::string(name) + "=" + std::string(value)).second) return;
  std::string accepted;
  for (const std::string_view k : known)
    accepted += (accepted.empty() ? "" : ", ") + std::string(k);
  spdlog::warn("{}={}: not {} {}; the default is used", name, value,
               list ? "a comma-separated list of" : "one of", accepted);
}

}  // namespace

std::string_view switch_value(const char* name, std::initializer_list<std::string_view> known,
                              bool list) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return {};  // set empty: as unset
  const std::string_view value(v);
  bool valid = true;
  if (list) {
    for_each_item(value, [&](std::string_view item) { valid = valid && known_item(item, known); });
  } else {
    valid = known_item(value, known);
  }
  if (valid) return value;
  report(name, value, known, list);
  return {};
}

void log_warning(std::string_view message) {
  spdlog::warn("{}", message);
}

bool list_has(std::string_view list, std::string_view item) {
  bool found = false;
  for_each_item(list, [&](std::string_view i) { found = found || i == item; });
  return found;
}

SplitTweaks split_tweaks() {
  // "none" only alone: a list that names it with others is not understood (reported, default).
  if (const char* v = std::getenv("IFW_CUDA_SPLIT"); v != nullptr && std::string_view(v) == "none")
    return {};
  const std::string_view choice = switch_value("IFW_CUDA_SPLIT", {"heads", "early", "fused"}, true);
  // H200, large-v3 at batch 64: cross-attention 0.138 ms a call with "heads,early" against 0.145
  // without; "fused" was slower.
  if (choice.empty()) return {true, true, false};
  return {list_has(choice, "heads"), list_has(choice, "early"), list_has(choice, "fused")};
}

bool row_kernels_v2() {
  // H200, large-v3: the encoder's layer norms 0.17 ms a window against 0.47, the decoder's fc1
  // with bias and GELU 0.0135 ms a call against 0.0158.
  return switch_value("IFW_CUDA_ELEMENTWISE", {"1", "2"}) != "1";
}

int named_flash_version() {
  const std::string_view choice = switch_value("IFW_CUDA_FLASH", {"1", "2", "6", "7", "8"});
  return choice.empty() ? 0 : choice[0] - '0';
}

int flash_version() {
  // H200, large-v3's shapes at batch 64: version 6 at 317 TFLOP/s, 2 at 196, 7 at 306, 8 at 316.
  constexpr int kDefault = 6;
  const int named = named_flash_version();
  return named != 0 ? named : kDefault;
}

}  // namespace ifw::backend::cuda
