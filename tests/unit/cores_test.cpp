// Cores a process may use: the affinity mask capped by a cgroup's CPU quota, read from files laid
// out as the kernel lays them out (cgroup v1 and v2, quotas on ancestors, containers that see
// their own cgroup as the root).
#include "util/cores.hpp"

#include <limits>

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
  write_file(root / "cpu" / "cpu.cfs_quota_us", "50000\n");
  EXPECT_EQ(cgroup_cpu_quota("2:cpuacct:/\n1:cpu:/\n0::/\n", root.path()), 0.5);
}

TEST(Cores, MalformedOrMissingFilesAreNoQuota) {
  const TempDir root;
  for (const char* text : {"", "abc 100000", "100000", "150000 0", "-5 100000", "1e400 1",
                           "150000.5 100000", "150000 100000 7", "99999999999999999999 1"}) {
    write_file(root / "cpu.max", text);
    EXPECT_EQ(cgroup_cpu_quota("0::/\n", root.path()), std::nullopt) << '"' << text << '"';
  }
  EXPECT_EQ(cgroup_cpu_quota("garbage\n\n:::\n0::\n", root.path()), std::nullopt);
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", root / "missing"), std::nullopt);
  // A cgroup outside this process's namespace ("/.."): nothing above the root is read.
  write_file(root / "cpu.max", "100000 100000");
  std::filesystem::create_directories(root / "namespace");
  EXPECT_EQ(cgroup_cpu_quota("0::/..\n", root / "namespace"), std::nullopt);
  EXPECT_EQ(cgroup_cpu_quota("0::/\n", root.path()), 1.0);
}

TEST(Cores, UsableCoresAreTheAffinityCappedByTheQuotaRoundedUp) {
  EXPECT_EQ(util::usable_cores_of(8, 1.5), 2);
  EXPECT_EQ(util::usable_cores_of(8, 2.0), 2);
  EXPECT_EQ(util::usable_cores_of(2, 16.0), 2);
  EXPECT_EQ(util::usable_cores_of(4, 0.2), 1);
  EXPECT_EQ(util::usable_cores_of(6, std::nullopt), 6);
  EXPECT_EQ(util::usable_cores_of(0, std::nullopt), 1);
  // Quotas larger than any int of cores (the kernel allows ~1.7e10), infinite or not a number.
  EXPECT_EQ(util::usable_cores_of(6, 1e11), 6);
  EXPECT_EQ(util::usable_cores_of(6, std::numeric_limits<double>::infinity()), 6);
  EXPECT_EQ(util::usable_cores_of(6, std::numeric_limits<double>::quiet_NaN()), 6);
  const util::CoreReport& r = util::cores();
  EXPECT_GE(r.usable, 1);
  EXPECT_LE(r.usable, r.affinity);
  EXPECT_LE(r.affinity, r.online);
}

}  // namespace
}  // namespace ifw::test
