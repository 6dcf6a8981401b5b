// Whether the client of a request is still there. cpp-httplib 0.11 (Debian 12's) gives a handler
// no access to its connection, so the socket is found by its addresses among the process's open
// descriptors; the handler runs on that connection's thread, which keeps the descriptor open (and
// its number unreused) until the handler returns.
#pragma once

#include <optional>
#include <string>

namespace ifw::server {

class ConnectionWatch {
 public:
  // The connection from remote_addr:remote_port to our local_port; nullopt when none is found
  // (the request is then treated as wanted until it ends).
  static std::optional<ConnectionWatch> find(const std::string& remote_addr, int remote_port,
                                             int local_port);

  // True once the client has closed or reset the connection. Bytes it sent and nobody read yet
  // (a pipelined request) are left where they are, and while they wait a close behind them is
  // not seen. A client that only shuts down its sending side after the request looks gone (no
  // HTTP client of ours does that). Only while the handler runs: the descriptor is not ours.
  bool client_gone() const;
  int descriptor() const { return fd_; }

 private:
  explicit ConnectionWatch(int fd) : fd_(fd) {}
  int fd_;  // not owned: cpp-httplib closes it
};

}  // namespace ifw::server
