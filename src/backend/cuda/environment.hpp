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

// The choices the kernels read, each measured on an H200 (docs/PERFORMANCE.md).
//
// The split decoding kernel's tweaks (kernels.cu), from IFW_CUDA_SPLIT: a comma-separated list of
// "heads", "early" and "fused", or "none" alone; unset (or not understood): "heads,early".
struct SplitTweaks {
  bool heads_first = false;
  bool early_values = false;
  bool fused = false;
};
SplitTweaks split_tweaks();
// The second version of the row kernels (layer norm, bias + GELU) unless IFW_CUDA_ELEMENTWISE=1.
bool row_kernels_v2();
// The flash-attention version IFW_CUDA_FLASH names (1, 2, 6, 7 or 8), 0 where unset (or not
// understood); flash_version(): that, or the default, 6 (version 2 runs in its place where the
// device has no sm_90a code: flash_attention.cu).
int named_flash_version();
int flash_version();

}  // namespace ifw::backend::cuda
