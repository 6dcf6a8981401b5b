// Writing a file so that readers see either the old content or the whole new one, never a part:
// a temporary file in the same folder, flushed to disk, then renamed over the target.
#pragma once

#include <filesystem>
#include <string_view>

namespace ifw::util {

// Throws ifw::Error (kIo) naming the path; the temporary file is removed on failure.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace ifw::util
