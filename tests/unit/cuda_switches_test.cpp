// The CUDA backend's IFW_CUDA_* switches: known values read as they are, anything else is
// reported once and reads as the default (backend/cuda/environment.hpp).
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "backend/cuda/environment.hpp"
#include "support/captured_log.hpp"
#include "support/scoped_env.hpp"

namespace ifw {
namespace {

using backend::cuda::list_has;
using backend::cuda::switch_value;
using test::CapturedLog;
using test::ScopedEnv;

TEST(CudaSwitches, KnownValuesReadAsTheyAreOthersAsTheDefaultWithOneWarning) {
  const char* name = "IFW_TEST_SWITCH";
  CapturedLog log;
  unsetenv(name);
  EXPECT_EQ(switch_value(name, {"1", "2"}), "");
  setenv(name, "", 1);
  EXPECT_EQ(switch_value(name, {"1", "2"}), "");
  setenv(name, "2", 1);
  EXPECT_EQ(switch_value(name, {"1", "2"}), "2");
  setenv(name, "7", 1);
  EXPECT_EQ(switch_value(name, {"1", "2"}), "");
  EXPECT_EQ(switch_value(name, {"1", "2"}), "");  // read on every call, reported once
  const std::string text = log.text();
  EXPECT_EQ(text.find("IFW_TEST_SWITCH=:"), std::string::npos) << "set empty is not wrong";
  EXPECT_NE(text.find("IFW_TEST_SWITCH=7: not one of 1, 2; the default is used"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("IFW_TEST_SWITCH=7", text.find("IFW_TEST_SWITCH=7") + 1), std::string::npos)
      << "reported twice: " << text;
  unsetenv(name);
}

TEST(CudaSwitches, ListsOfKnownItems) {
  const char* name = "IFW_TEST_SWITCH_LIST";
  CapturedLog log;
  setenv(name, "heads,fused", 1);
  const auto value = switch_value(name, {"heads", "early", "fused"}, true);
  EXPECT_TRUE(list_has(value, "heads"));
  EXPECT_TRUE(list_has(value, "fused"));
  EXPECT_FALSE(list_has(value, "early"));
  EXPECT_FALSE(list_has("headsfused", "heads")) << "items, not substrings";
  setenv(name, "heads,fast", 1);
  EXPECT_EQ(switch_value(name, {"heads", "early", "fused"}, true), "");
  EXPECT_NE(log.text().find("IFW_TEST_SWITCH_LIST=heads,fast: not a comma-separated list of "
                            "heads, early, fused"),
            std::string::npos)
      << log.text();
  unsetenv(name);
}

// The defaults measured on an H200 are what an unset (or misspelt) switch gives; each named
// value gives what it names.
TEST(CudaSwitches, SplitTweaksDefaultToHeadsAndEarly) {
  using backend::cuda::split_tweaks;
  const auto tweaks = [] {
    const backend::cuda::SplitTweaks t = split_tweaks();
    return std::string(t.heads_first ? "h" : "-") + (t.early_values ? "e" : "-") +
           (t.fused ? "f" : "-");
  };
  CapturedLog log;
  {
    const ScopedEnv unset("IFW_CUDA_SPLIT", nullptr);
    EXPECT_EQ(tweaks(), "he-");
  }
  const std::pair<const char*, const char*> cases[] = {
      {"", "he-"},           {"none", "---"},  {"heads", "h--"},
      {"early", "-e-"},      {"fused", "--f"}, {"heads,early,fused", "hef"},
      {"heads,fast", "he-"},  // not understood: the default, reported
      {"none,fused", "he-"},  // "none" only alone
  };
  for (const auto& [value, expected] : cases) {
    const ScopedEnv set("IFW_CUDA_SPLIT", value);
    EXPECT_EQ(tweaks(), expected) << "IFW_CUDA_SPLIT=" << value;
  }
  EXPECT_NE(log.text().find("IFW_CUDA_SPLIT=none,fused: not a comma-separated list"),
            std::string::npos)
      << log.text();
}

TEST(CudaSwitches, RowKernelsAndFlashVersionDefaultToTheMeasuredOnes) {
  using backend::cuda::flash_version;
  using backend::cuda::named_flash_version;
  using backend::cuda::row_kernels_v2;
  CapturedLog log;
  {
    const ScopedEnv unset("IFW_CUDA_ELEMENTWISE", nullptr);
    EXPECT_TRUE(row_kernels_v2());
  }
  for (const auto& [value, v2] : {std::pair{"1", false}, {"2", true}, {"3", true}}) {
    const ScopedEnv set("IFW_CUDA_ELEMENTWISE", value);
    EXPECT_EQ(row_kernels_v2(), v2) << "IFW_CUDA_ELEMENTWISE=" << value;
  }
  {
    const ScopedEnv unset("IFW_CUDA_FLASH", nullptr);
    EXPECT_EQ(named_flash_version(), 0);
    EXPECT_EQ(flash_version(), 6);  // version 2 runs in its place without sm_90a code
  }
  for (const auto& [value, named] :
       {std::pair{"1", 1}, {"2", 2}, {"6", 6}, {"7", 7}, {"8", 8}, {"3", 0}, {"5", 0}}) {
    const ScopedEnv set("IFW_CUDA_FLASH", value);
    EXPECT_EQ(named_flash_version(), named) << "IFW_CUDA_FLASH=" << value;
    EXPECT_EQ(flash_version(), named != 0 ? named : 6) << "IFW_CUDA_FLASH=" << value;
  }
  EXPECT_NE(log.text().find("IFW_CUDA_FLASH=3: not one of 1, 2, 6, 7, 8"), std::string::npos)
      << "the deleted versions are refused: " << log.text();
}

}  // namespace
}  // namespace ifw
