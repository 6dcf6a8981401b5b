#include "server/connection_watch.hpp"

#include <cerrno>
#include <charconv>
#include <filesystem>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

namespace ifw::server {
namespace {

// The address and port of a socket address, as cpp-httplib writes them ("127.0.0.1", "::1").
std::optional<std::pair<std::string, int>> address_of(const sockaddr_storage& a) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) == nullptr) return std::nullopt;
    return std::pair<std::string, int>{text, ntohs(in->sin_port)};
  }
  if (a.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
    if (::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text) == nullptr) return std::nullopt;
    return std::pair<std::string, int>{text, ntohs(in6->sin6_port)};
  }
  return std::nullopt;
}

}  // namespace

std::optional<ConnectionWatch> ConnectionWatch::find(const std::string& remote_addr,
                                                     int remote_port, int local_port) {
  std::error_code ec;
  // Stepped by hand: the range-for's increment would throw on an error.
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    int fd = -1;
    const std::string name = it->path().filename().string();
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc()) continue;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) continue;
    const auto l = address_of(local);
    const auto p = address_of(peer);
    if (l && p && l->second == local_port && p->second == remote_port && p->first == remote_addr)
      return ConnectionWatch(fd);
  }
  return std::nullopt;
}

bool ConnectionWatch::client_gone() const {
  char byte = 0;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;                                           // data waiting: it is there
  if (n == 0) return true;                                           // orderly close
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset, or no socket
}

}  // namespace ifw::server
