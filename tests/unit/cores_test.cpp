// Cores a process may use: the affinity mask capped by a cgroup's CPU quota, read from files laid
// out as the kernel lays them out (cgroup v1 and v2, quotas on ancestors, containers that see
// their own cgroup as the root).
#include "util/cores.hpp"

#include <gtest/gtest.h>

#include "support/temp_dir.hpp"

namespace ifw::test {
namespace {

using util::cgroup_cpu_quota;

TEST(Cores, CgroupV2QuotaIsTheSmallestAlongThePath) {
  const TempDir root;
  std::filesystem::create_directories(root / "system.slice" / "ifw.service");
  write_file(root / "cpu.max", "max 100000\n");
  write_file(root / "system.slice" / "cpu.max", "400000 100000\n");
  write_file(root / "system.slice" / "ifw.service" / "cpu.max", "150000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/system.slice/ifw.service\n", root.path()), 1.5);
  // A parent's limit binds a child without one.
  write_file(root / "system.slice" / "ifw.service" / "cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/system.slice/ifw.service\n", root.path()), 4.0);
  write_file(root / "system.slice" / "cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/system.slice/ifw.service\n", root.path()), std::nullopt);
}

TEST(Cores, ContainerSeesItsOwnCgroupAsTheRoot) {
  // Without a cgroup namespace, /proc/self/cgroup names the host's path, which does not exist
  // in the container's mount; its root holds the container's limit.
  const TempDir v2;
  write_file(v2 / "cpu.max", "200000 100000\n");
  EXPECT_EQ(cgroup_cpu_quota("0::/docker/0123abcd\n", v2.path()), 2.0);
  const TempDir v1;
  std::filesystem::create_directories(v1 / "cpu,cpuacct");
  write_file(v1 / "cpu,cpuacct" / "cpu.cfs_quota_us", "250000\n");
  write_file(v1 / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(
      cgroup_cpu_quota("12:memory:/docker/0123abcd\n4:cpu,cpuacct:/docker/0123abcd\n", v1.path()),
      2.5);
}

TEST(Cores, CgroupV1WithoutAQuota) {
  const TempDir root;
  std::filesystem::create_directories(root / "cpu");
  write_file(root / "cpu" / "cpu.cfs_quota_us", "-1\n");
  write_file(root / "cpu" / "cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_quota("2:cpuacct:/\n1:cpu:/\n0::/\n", root.path()), std::nullopt);
  // This machine's own files, whatever they say, read without an error.
  const std::string self = read_file("/proc/self/cgroup");
  const std::optional<double> quota = cgroup_cpu_quota(self, "/sys/fs/cgroup");
  if (quota) {
    EXPECT_GT(*quota, 0.0);
  }
}

TEST(Cores, MalformedOrMissingFilesAreNoQuota) {
  const TempDir root;
  for (const char* text : {"", "abc 100000", "100000", "150000 0", "-5 100000", "1e400 1"}) {
    write_file(root / "cpu.max", text);
    EXPECT_EQ(cgroup_cpu_quota("0::/\n", root.path()), std::nullopt) << '"' << text << '"';
  }
  EXPECT_EQ(cgroup_cpu_quota("garbage\n\n:::\n0::\n", root.path()), std::nullopt);
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", root / "missing"), std::nullopt);
}

TEST(Cores, UsableCoresAreTheAffinityCappedByTheQuotaRoundedUp) {
  EXPECT_EQ(util::usable_cores_of(8, 1.5), 2);
  EXPECT_EQ(util::usable_cores_of(8, 2.0), 2);
  EXPECT_EQ(util::usable_cores_of(2, 16.0), 2);
  EXPECT_EQ(util::usable_cores_of(4, 0.2), 1);
  EXPECT_EQ(util::usable_cores_of(6, std::nullopt), 6);
  EXPECT_EQ(util::usable_cores_of(0, std::nullopt), 1);
  const util::CoreReport& r = util::cores();
  EXPECT_GE(r.usable, 1);
  EXPECT_LE(r.usable, r.affinity);
  EXPECT_LE(r.affinity, r.online);
}

}  // namespace
}  // namespace ifw::test
