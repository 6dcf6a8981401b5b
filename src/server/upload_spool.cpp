#include "server/upload_spool.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ifw/error.hpp>

namespace ifw::server {
namespace {

std::vector<char> c_string(const std::string& s) {
  std::vector<char> v(s.begin(), s.end());
  v.push_back('\0');
  return v;
}

}  // namespace

UploadSpool::UploadSpool(const std::filesystem::path& parent) {
  auto name = c_string((parent / "ifw-uploads-XXXXXX").string());
  if (::mkdtemp(name.data()) == nullptr) {  // mode 0700
    throw Error(ErrorKind::kIo, fmt::format("{}: cannot create a folder for uploads: {}",
                                            parent.string(), std::strerror(errno)));
  }
  folder_ = name.data();
}

UploadSpool::~UploadSpool() {
  std::error_code ec;
  std::filesystem::remove_all(folder_, ec);
  if (ec) spdlog::warn("could not remove the upload folder {}: {}", folder_.string(), ec.message());
}

std::string UploadSpool::extension_of(std::string_view upload_name) {
  const auto slash = upload_name.find_last_of("/\\");
  if (slash != std::string_view::npos) upload_name.remove_prefix(slash + 1);
  const auto dot = upload_name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return "";
  std::string ext(upload_name.substr(dot + 1));
  if (ext.empty() || ext.size() > 8) return "";
  for (char& c : ext) {
    if (!std::isalnum(static_cast<unsigned char>(c))) return "";
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return "." + ext;
}

UploadSpool::File UploadSpool::store(std::string_view bytes, std::string_view upload_name) {
  const std::string ext = extension_of(upload_name);
  auto name = c_string((folder_ / ("upload-XXXXXX" + ext)).string());
  const int fd = ::mkstemps(name.data(), static_cast<int>(ext.size()));  // mode 0600
  if (fd < 0) {
    throw Error(ErrorKind::kIo, fmt::format("{}: cannot store an upload: {}", folder_.string(),
                                            std::strerror(errno)));
  }
  File file{std::filesystem::path(name.data())};
  int err = 0;
  for (std::size_t done = 0; done < bytes.size() && err == 0;) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno != EINTR) err = errno;
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    throw Error(ErrorKind::kIo, fmt::format("{}: cannot store an upload: {}", file.path().string(),
                                            std::strerror(err)));
  }
  return file;
}

UploadSpool::File::File(File&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

UploadSpool::File& UploadSpool::File::operator=(File&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

UploadSpool::File::~File() {
  remove();
}

void UploadSpool::File::remove() noexcept {
  if (path_.empty()) return;
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("could not remove the upload {}: {}", path_.string(), std::strerror(errno));
  }
  path_.clear();
}

}  // namespace ifw::server
