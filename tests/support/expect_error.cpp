#include "support/expect_error.hpp"

namespace ifw::test {

::testing::AssertionResult throws_error(const std::function<void()>& f,
                                        std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) {
      if (message.find(part) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "error \"" << message << "\"\n  does not mention \"" << part << "\"";
      }
    }
    return ::testing::AssertionSuccess() << message;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-ifw exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "threw nothing";
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace ifw::test
