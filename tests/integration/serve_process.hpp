// A real `ifw serve` for tests: started on a free loopback port, its log in a file, stopped (and
// reaped) when dropped.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

namespace ifw::test {

class ServeProcess {
 public:
  // Starts `ifw serve --port 0 ARGS` with these environment variables added, and waits until it
  // says it is ready (or exits). ready() tells which.
  explicit ServeProcess(const std::vector<std::string>& args,
                        const std::map<std::string, std::string>& env = {},
                        std::chrono::seconds start_timeout = std::chrono::seconds(60));
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  bool ready() const { return port_ > 0 && ready_; }
  int port() const { return port_; }
  int pid() const { return pid_; }
  std::string log() const;  // what it wrote to standard error so far
  // Resident memory in KiB (VmRSS), -1 once it has exited.
  long rss_kib() const;

  void signal(int sig) const;
  // Its exit status (as `wait_status` decodes it) once it has exited within `timeout`, else -1.
  int wait_exit(std::chrono::milliseconds timeout);
  // Exit code, or 128 + signal number; -1 while running.
  int exit_code() const { return exit_code_; }

 private:
  TempDir dir_;
  std::filesystem::path log_path_;
  int pid_ = -1;
  int port_ = -1;
  bool ready_ = false;
  int exit_code_ = -1;
};

}  // namespace ifw::test
