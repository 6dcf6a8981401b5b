#include "util/atomic_file.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ifw/error.hpp>

namespace ifw::util {
namespace {

// Removes the temporary file unless told the rename took it over.
class TemporaryFile {
 public:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  ~TemporaryFile() {
    if (!path_.empty() && ::unlink(path_.c_str()) != 0 && errno != ENOENT) {
      spdlog::warn("could not remove temporary file {}: {}", path_, std::strerror(errno));
    }
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  void release() { path_.clear(); }

 private:
  std::string path_;
};

[[noreturn]] void fail(const std::filesystem::path& path, const char* what, int err) {
  throw Error(ErrorKind::kIo, fmt::format("{}: {}: {}", path.string(), what, std::strerror(err)));
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, std::string_view content) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  const std::string pattern =
      (dir / fmt::format(".{}.tmp-XXXXXX", path.filename().string())).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) fail(path, "cannot create a file here", errno);
  TemporaryFile temporary(name.data());
  bool ok = true;
  int err = 0;
  for (std::size_t done = 0; ok && done < content.size();) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      ok = false;
      err = errno;
    } else {
      done += static_cast<std::size_t>(n);
    }
  }
  if (ok && ::fchmod(fd, 0644) != 0) {
    ok = false;
    err = errno;
  }
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = errno;
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) fail(path, "write failed", err);
  if (::rename(name.data(), path.c_str()) != 0) fail(path, "cannot replace", errno);
  temporary.release();
}

}  // namespace ifw::util
