// Finding a request's connection by its addresses, and telling when its client has gone.
#include "server/connection_watch.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ifw::server {
namespace {

// A socket that closes itself.
struct Socket {
  int fd = -1;
  explicit Socket(int f) : fd(f) {}
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  void close() {
    ::close(fd);
    fd = -1;
  }
};

int port_of(int fd, bool peer) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return rc == 0 ? ntohs(a.sin_port) : -1;
}

TEST(ConnectionWatch, FindsTheConnectionAndSeesTheClientLeave) {
  const Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(listener.fd, 4), 0);
  const int server_port = port_of(listener.fd, false);

  // Two clients: the watch must pick the right one.
  Socket first(::socket(AF_INET, SOCK_STREAM, 0));
  Socket second(::socket(AF_INET, SOCK_STREAM, 0));
  a.sin_port = htons(static_cast<std::uint16_t>(server_port));
  ASSERT_EQ(::connect(first.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::connect(second.fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const Socket served_first(::accept(listener.fd, nullptr, nullptr));
  const Socket served_second(::accept(listener.fd, nullptr, nullptr));

  const auto watch = ConnectionWatch::find("127.0.0.1", port_of(second.fd, false), server_port);
  ASSERT_TRUE(watch);
  EXPECT_EQ(watch->descriptor(), served_second.fd);
  EXPECT_FALSE(watch->client_gone());

  // A pipelined request waiting to be read is not a departure, and stays unread.
  ASSERT_EQ(::send(second.fd, "GET", 3, 0), 3);
  EXPECT_FALSE(watch->client_gone());
  char buffer[8] = {};
  EXPECT_EQ(::recv(served_second.fd, buffer, sizeof buffer, MSG_DONTWAIT), 3);

  first.close();  // the other client leaving changes nothing for this one
  EXPECT_FALSE(watch->client_gone());
  second.close();
  for (int i = 0; i < 100 && !watch->client_gone(); ++i)
    ::usleep(10'000);
  EXPECT_TRUE(watch->client_gone());

  EXPECT_FALSE(ConnectionWatch::find("127.0.0.1", 1, server_port)) << "no such connection";
}

}  // namespace
}  // namespace ifw::server
