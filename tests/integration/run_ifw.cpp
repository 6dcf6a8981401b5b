#include "integration/run_ifw.hpp"

#include <cstdlib>

#include <sys/wait.h>

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

bool have_program(const std::string& name) {
  return run_shell("command -v " + shell_quote(name) + " >/dev/null 2>&1") == 0;
}

}  // namespace ifw::test
