// Running the real `ifw` binary (and other programs) from tests.
#pragma once

#include <string>
#include <vector>

namespace ifw::test {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string shell_quote(const std::string& s);
// Runs `ifw` with these arguments; `stdin_file` (optional) is fed to its standard input.
CliRun run_ifw(const std::vector<std::string>& args, const std::string& stdin_file = "");
// Starts `ifw` with these arguments without waiting for it; its standard output goes to
// `stdout_fd` when given (open it with O_CLOEXEC: the child keeps only its copy). -1 on failure.
int spawn_ifw(const std::vector<std::string>& args, int stdout_fd = -1);
// Runs a shell command line; returns its exit code (output discarded unless captured).
int run_shell(const std::string& command);
bool have_program(const std::string& name);

}  // namespace ifw::test
