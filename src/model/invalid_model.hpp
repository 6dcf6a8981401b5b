// The error of a malformed model file, named first: shared by the readers of a model's files.
#pragma once

#include <string>

#include <ifw/error.hpp>

namespace ifw::model {

// Throws ifw::Error (kInvalidModel) reading "<source>: <message>".
[[noreturn]] inline void invalid_model(const std::string& source, const std::string& message) {
  throw Error(ErrorKind::kInvalidModel, source + ": " + message);
}

}  // namespace ifw::model
