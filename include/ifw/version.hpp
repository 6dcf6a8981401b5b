// Version and build facts, for `ifw version` and for embedders that log them.
#pragma once

#include <string>

namespace ifw {

const char* version() noexcept;

// One line per fact: compiler, build type, which optional backends were compiled in.
std::string build_info();

}  // namespace ifw
