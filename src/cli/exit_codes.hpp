// The exit status of every `ifw` command (README: 0 done, 1 failed, 2 usage, 130 cancelled).
#pragma once

namespace ifw::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
inline constexpr int kExitInterrupted = 130;

}  // namespace ifw::cli
