// Checks shared by the tests that talk to a real `ifw serve`: OpenAI's error shape, the tokens
// of a verbose_json result, and starting a server or failing the test with its log.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "integration/serve_process.hpp"

namespace ifw::test {

// The OpenAI error document of a response ({"error": {...}} as JSON, every field there); fails
// the test when it is not one.
nlohmann::json error_of(const httplib::Result& r);

// The tokens of every segment of a verbose_json body.
std::vector<std::vector<int>> tokens_of(const std::string& verbose_json);

}  // namespace ifw::test

#define START_SERVER(var, ...)   \
  ServeProcess var(__VA_ARGS__); \
  ASSERT_TRUE(var.ready()) << "ifw serve did not start:\n" << var.log()
