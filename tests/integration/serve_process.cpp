#include "integration/serve_process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace ifw::test {

ServeProcess::ServeProcess(const std::vector<std::string>& args,
                           const std::map<std::string, std::string>& env,
                           std::chrono::seconds start_timeout)
    : log_path_(dir_ / "serve.log") {
  // Uploads wait inside the test's own folder: nothing is left behind even when a test kills it.
  std::vector<std::string> argv_s = {IFW_BINARY, "serve",        "--port",
                                     "0",        "--upload-dir", dir_.path().string()};
  // Jobs too, unless the test keeps them elsewhere (to restart a server on them).
  if (std::find(args.begin(), args.end(), "--data-dir") == args.end()) {
    argv_s.push_back("--data-dir");
    argv_s.push_back((dir_ / "data").string());
  }
  // On the CPU unless the test names a device: what these tests time (a request still running
  // when the next one comes) is sized for the CPU, and a CUDA build on a GPU host would be faster.
  if (std::find(args.begin(), args.end(), "--device") == args.end()) {
    argv_s.push_back("--device");
    argv_s.push_back("cpu");
  }
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    for (const auto& [name, value] : env)
      ::setenv(name.c_str(), value.c_str(), 1);
    ::dup2(log_fd, STDERR_FILENO);
    const int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  const auto deadline = std::chrono::steady_clock::now() + start_timeout;
  const std::string listening = "listening on http://127.0.0.1:";
  while (std::chrono::steady_clock::now() < deadline && pid_ > 0) {
    const std::string text = log();
    if (port_ < 0) {
      // Only a whole line: one caught while it is being written may end mid-number.
      if (const auto at = text.find(listening);
          at != std::string::npos && text.find('\n', at) != std::string::npos)
        port_ = std::atoi(text.c_str() + at + listening.size());
    }
    if (text.find("ifw: info: ready:") != std::string::npos) {
      ready_ = true;
      return;
    }
    if (wait_exit(std::chrono::milliseconds(0)) >= 0) return;  // it gave up
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0 && exit_code_ < 0) {
    ::kill(pid_, SIGTERM);  // as an operator stops it; killed if that does not do
    if (wait_exit(std::chrono::seconds(20)) < 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(std::chrono::seconds(10));
    }
  }
}

std::string ServeProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

long ServeProcess::rss_kib() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::atol(line.c_str() + 6);
  }
  return -1;
}

void ServeProcess::signal(int sig) const {
  if (pid_ > 0 && exit_code_ < 0) ::kill(pid_, sig);
}

int ServeProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_ >= 0 || pid_ <= 0) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (r < 0 && errno != EINTR) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace ifw::test
