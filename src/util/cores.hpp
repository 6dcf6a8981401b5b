// How many cores this process may keep busy. std::thread::hardware_concurrency counts every
// online CPU of the machine: in a container limited to 2 CPUs on a 64-core host (docker --cpus,
// a Kubernetes CPU limit) or under taskset, ifw would start 64 threads that take turns on 2.
#pragma once

#include <filesystem>
#include <optional>
#include <string_view>

namespace ifw::util {

struct CoreReport {
  int online = 1;               // CPUs of the machine (hardware_concurrency)
  int affinity = 1;             // CPUs this process may run on (sched_getaffinity)
  std::optional<double> quota;  // a cgroup's CPU quota in cores, when there is one
  int usable = 1;               // the smaller, the quota rounded up; at least 1
};

// Measured once, at the first call (the affinity of the thread that asks: threads inherit the
// process's mask).
const CoreReport& cores();
inline int usable_cores() {
  return cores().usable;
}

// The smallest CPU quota along the cgroup path of a process whose /proc/self/cgroup reads
// `proc_self_cgroup`, from the files under `cgroup_root` (/sys/fs/cgroup): cgroup v2's cpu.max
// ("150000 100000" is 1.5 cores, "max ..." none), or v1's cpu.cfs_quota_us / cpu.cfs_period_us
// (-1: none). Ancestors count (a limit on a parent binds its children), and a path that does not
// exist under the root is climbed (a container sees its own cgroup as the root). nullopt when no
// quota is set or none can be read; unreadable or malformed files are skipped.
std::optional<double> cgroup_cpu_quota(std::string_view proc_self_cgroup,
                                       const std::filesystem::path& cgroup_root);

// `affinity` CPUs capped by `quota` rounded up, at least 1.
int usable_cores_of(int affinity, std::optional<double> quota);

}  // namespace ifw::util
