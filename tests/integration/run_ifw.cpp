#include "integration/run_ifw.hpp"

#include <cstdlib>

#include <sys/wait.h>
#include <unistd.h>

#include "support/temp_dir.hpp"

namespace ifw::test {

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

CliRun run_ifw(const std::vector<std::string>& args, const std::string& stdin_file) {
  const TempDir tmp;
  std::string command = shell_quote(IFW_BINARY);
  for (const auto& a : args)
    command.append(" ").append(shell_quote(a));
  command.append(" <").append(stdin_file.empty() ? std::string("/dev/null")
                                                 : shell_quote(stdin_file));
  command.append(" >").append(shell_quote((tmp / "out").string()));
  command.append(" 2>").append(shell_quote((tmp / "err").string()));
  CliRun r;
  r.exit_code = run_shell(command);
  r.out = read_file(tmp / "out");
  r.err = read_file(tmp / "err");
  return r;
}

int spawn_ifw(const std::vector<std::string>& args, int stdout_fd) {
  std::vector<std::string> argv_s = {IFW_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

bool have_program(const std::string& name) {
  return run_shell("command -v " + shell_quote(name) + " >/dev/null 2>&1") == 0;
}

}  // namespace ifw::test
