// The CUDA backend's switches (IFW_CUDA_*: kernel versions and opt-ins for comparisons), read
// where they act, on every call (tests change them case by case).
#pragma once

#include <initializer_list>
#include <string_view>

namespace ifw::backend::cuda {

// The value of variable `name`: empty when unset or set empty, else one of `known` - or, with
// `list`, a comma-separated list of them. A value that is not (or a list with an item that is
// not) is reported once, naming what the variable accepts, and reads as unset: the default.
std::string_view switch_value(const char* name, std::initializer_list<std::string_view> known,
                              bool list = false);

// `message` as a warning in the process's log (for the kernels' sources, which do not include
// spdlog).
void log_warning(std::string_view message);

// Whether the comma-separated `list` holds `item`.
bool list_has(std::string_view list, std::string_view item);

}  // namespace ifw::backend::cuda
