// Assertions for "this input fails with a clear ifw::Error".
#pragma once

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include <ifw/error.hpp>

namespace ifw::test {

// Runs `f`; succeeds when it throws ifw::Error whose message contains every one of `parts`.
// Any other exception, or none, fails with what happened instead.
::testing::AssertionResult throws_error(const std::function<void()>& f,
                                        std::initializer_list<std::string> parts);
// The message of the ifw::Error `f` throws ("" when it throws none).
std::string error_message(const std::function<void()>& f);

}  // namespace ifw::test

#define EXPECT_IFW_ERROR(statement, ...) \
  EXPECT_TRUE(::ifw::test::throws_error([&] { statement; }, {__VA_ARGS__}))
