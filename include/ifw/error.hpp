// ifw::Error — the one exception type the library throws for problems a user can act on.
#pragma once

#include <stdexcept>
#include <string>

namespace ifw {

// What kind of problem; lets callers map errors to exit codes or HTTP statuses.
enum class ErrorKind {
  kInvalidArgument,  // a value passed by the caller is wrong (option, text, audio buffer)
  kInvalidModel,     // a model folder or one of its files is malformed or inconsistent
  kNotFound,         // a file or folder that must exist does not
  kUnsupported,      // well-formed input that ifw does not handle (yet)
  kIo,               // the operating system refused a read, write or map
  kOutOfMemory,      // a device (GPU) ran out of memory; a smaller batch may fit
  kDeviceFailure,    // a device (GPU) failed (a fault in a kernel, an uncorrectable memory error)
                     // and this process cannot use it again; the CPU can go on
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace ifw
