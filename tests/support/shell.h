// Shell(): runs a command line through /bin/sh, as a user would type it, and returns its exit
// code and stdout (append " 2>&1" to the command for stderr too). For tests of the `kadr`
// binary's exit codes and printed output; long-running children use ChildProcess instead.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace kadr::testing {

struct ShellResult {
  int exit_code = -1;  // -1: could not start, or killed by a signal
  std::string out;
};

inline ShellResult Shell(const std::string& command) {
  ShellResult r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace kadr::testing
