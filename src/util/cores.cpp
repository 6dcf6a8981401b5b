#include "util/cores.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>

namespace ifw::util {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_small_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A whole number written alone on its line (cgroup files hold integers).
std::optional<long long> whole_number(std::string_view text) {
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return value;
}

// The quota in cores: `quota` microseconds of CPU time per `period`; none unless both are
// positive.
std::optional<double> cores_of(std::optional<long long> quota, std::optional<long long> period) {
  if (!quota || !period || *quota <= 0 || *period <= 0) return std::nullopt;
  return static_cast<double>(*quota) / static_cast<double>(*period);
}

// cgroup v2's cpu.max: "150000 100000" is 1.5 cores; "max 100000" (or anything else) none.
std::optional<double> v2_quota(const fs::path& dir) {
  const auto text = read_small_file(dir / "cpu.max");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string quota, period, rest;
  if (!(in >> quota >> period) || in >> rest) return std::nullopt;
  return cores_of(whole_number(quota), whole_number(period));
}

// cgroup v1's cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us.
std::optional<double> v1_quota(const fs::path& dir) {
  const auto quota = read_small_file(dir / "cpu.cfs_quota_us");
  const auto period = read_small_file(dir / "cpu.cfs_period_us");
  if (!quota || !period) return std::nullopt;
  const auto trimmed = [](const std::string& text) {
    const std::size_t end = text.find_last_not_of(" \n");
    return std::string_view(text).substr(0, end == std::string::npos ? 0 : end + 1);
  };
  return cores_of(whole_number(trimmed(*quota)), whole_number(trimmed(*period)));
}

// `smallest` becomes `q` where `q` is smaller (or `smallest` is empty).
void keep_smallest(std::optional<double>& smallest, std::optional<double> q) {
  if (q) smallest = smallest ? std::min(*smallest, *q) : *q;
}

// The smallest quota `read` finds in `base / path` and each of its ancestors up to `base`.
template <typename Read>
std::optional<double> smallest_along(const fs::path& base, std::string_view path, Read read) {
  std::optional<double> smallest;
  fs::path relative = fs::path(std::string(path)).relative_path();
  // "/../.." names a cgroup outside this process's cgroup namespace: nothing under `base`.
  for (const fs::path& part : relative) {
    if (part == "..") return std::nullopt;
  }
  while (true) {
    keep_smallest(smallest, read(base / relative));
    if (relative.empty()) break;
    relative = relative.parent_path();
  }
  return smallest;
}

int affinity_cpus() {
  // Sized for machines of up to 4096 CPUs; cpu_set_t alone holds 1024.
  constexpr int kMaxCpus = 4096;
  const std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)> set(CPU_ALLOC(kMaxCpus),
                                                             [](cpu_set_t* s) { CPU_FREE(s); });
  const std::size_t size = CPU_ALLOC_SIZE(kMaxCpus);
  if (!set || sched_getaffinity(0, size, set.get()) != 0) return 0;
  return CPU_COUNT_S(size, set.get());
}

CoreReport measure() {
  CoreReport r;
  r.online = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int affinity = affinity_cpus();
  r.affinity = affinity > 0 ? affinity : r.online;
  // (Under lxcfs the online count reflects the container's cpuset and can be the smaller.)
  r.affinity = std::min(r.affinity, r.online);
  if (const auto cgroup = read_small_file("/proc/self/cgroup")) {
    r.quota = cgroup_cpu_quota(*cgroup, "/sys/fs/cgroup");
  }
  r.usable = usable_cores_of(r.affinity, r.quota);
  return r;
}

}  // namespace

std::optional<double> cgroup_cpu_quota(std::string_view proc_self_cgroup,
                                       const fs::path& cgroup_root) {
  std::optional<double> smallest;
  std::istringstream lines{std::string(proc_self_cgroup)};
  std::string line;
  while (std::getline(lines, line)) {
    // hierarchy-ID:controllers:path
    const std::size_t first = line.find(':');
    const std::size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string id = line.substr(0, first);
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string_view path = std::string_view(line).substr(second + 1);
    if (id == "0" && controllers.empty()) {
      // cgroup v2: one hierarchy, mounted at the root (or at "unified" beside v1's).
      for (const fs::path& base : {cgroup_root, cgroup_root / "unified"}) {
        keep_smallest(smallest, smallest_along(base, path, v2_quota));
      }
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    bool cpu = false;
    while (std::getline(names, name, ','))
      cpu = cpu || name == "cpu";
    if (!cpu) continue;
    // cgroup v1: the cpu controller's own mount ("cpu", or "cpu,cpuacct" as listed).
    for (const fs::path& base : {cgroup_root / "cpu", cgroup_root / controllers}) {
      keep_smallest(smallest, smallest_along(base, path, v1_quota));
    }
  }
  return smallest;
}

int usable_cores_of(int affinity, std::optional<double> quota) {
  const int cores = std::max(1, affinity);
  if (!quota || !(*quota > 0) || *quota >= cores) return cores;  // no quota, or a larger one
  // A quota of 1.5 cores still keeps two threads busy half the time each: round up.
  return std::max(1, static_cast<int>(std::ceil(*quota - 1e-9)));
}

const CoreReport& cores() {
  static const CoreReport report = measure();
  return report;
}

}  // namespace ifw::util
