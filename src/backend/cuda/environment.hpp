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

// `message` as a warning, the first time it is given in this process (a switch that cannot be
// honoured is read on every call).
void warn_once(std::string_view message);

// Whether the comma-separated `list` holds `item`.
bool list_has(std::string_view list, std::string_view item);

}  // namespace ifw::backend::cuda
