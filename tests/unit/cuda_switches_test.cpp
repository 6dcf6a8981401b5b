// The CUDA backend's IFW_CUDA_* switches: known values read as they are, anything else is
// reported once and reads as the default (backend/cuda/environment.hpp).
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include "backend/cuda/environment.hpp"
#include "support/captured_log.hpp"

namespace ifw {
namespace {

using backend::cuda::list_has;
using backend::cuda::switch_value;
using test::CapturedLog;

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

}  // namespace
}  // namespace ifw
