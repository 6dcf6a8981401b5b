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

}  // namespace ifw::backend::cuda
