// Running a command for the agent protocol's "exec": both agents (the static lab-guest-init in the
// initramfs and `lab __guest-agent` on the guest's root) answer it the same way. Header-only: the
// static init links nothing of lab but the protocol.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "hv/agent/protocol.h"

namespace lab::hv::agent {

/// Runs `argv` (found in PATH) with stdin from /dev/null and stdout and stderr captured together,
/// until its output closes and it exits. `child_setup` runs first in the child. Exit code 127: not
/// found, 126: could not run, 128+N: killed by signal N.
template <typename Setup>
ExecReply RunCaptured(const std::vector<std::string>& argv, Setup child_setup) {
  ExecReply r;
  int fds[2];
  if (argv.empty() || ::pipe2(fds, O_CLOEXEC) != 0) return ExecReply{126, std::string("pipe: ") + std::strerror(errno) + "\n"};
  std::vector<char*> ptrs;
  for (const auto& a : argv) ptrs.push_back(const_cast<char*>(a.c_str()));
  ptrs.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    child_setup();
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::execvp(ptrs[0], ptrs.data());
    std::string msg = argv[0] + ": " + std::strerror(errno) + "\n";
    if (::write(2, msg.data(), msg.size()) < 0) {
    }
    ::_exit(errno == ENOENT ? 127 : 126);
  }
  ::close(fds[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (pid < 0) return ExecReply{126, std::string("fork: ") + std::strerror(errno) + "\n"};
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace lab::hv::agent
