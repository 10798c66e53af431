// Helpers for the fault tests (kills, drift, locking, lost state): a `lab` started in the
// background with its pid known, and the places of a sandboxed lab's objects.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "tests/e2e/e2e_support.h"

extern char** environ;

namespace lab::testing::e2e {

/// A `lab` process started in the background (no shell between: `pid` is lab's own).
struct Background {
  pid_t pid = -1;
  int out = -1;  // its stdout and stderr
  std::string text;

  /// Reads what it printed until `needle` shows up or it closes its output; true when seen.
  bool WaitFor(const std::string& needle, int timeout_ms = 20000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (text.find(needle) == std::string::npos) {
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
      if (left <= 0) return false;
      pollfd p{out, POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(out, buf, sizeof buf);
      if (n <= 0) return text.find(needle) != std::string::npos;
      text.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  /// Waits for it to end; returns its exit code (128+signal when killed).
  int Wait() {
    WaitFor("\x01never\x01", 120000);  // drain until it closes its output
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (out >= 0) ::close(out);
    out = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
};

/// Starts `lab ARGS...` in the sandbox with extra environment `env` ("K=V"). With `own_group`,
/// in a process group of its own (pgid = its pid), as a shell starts a foreground job: a
/// signal to the group is what Ctrl-C on its terminal sends.
inline Background Start(const Sandbox& sb, const std::vector<std::string>& args,
                        const std::vector<std::string>& env = {}, bool own_group = false) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<std::string> argv_s = {std::string(LAB_BINARY_DIR) + "/lab", "--no-color"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (kv.rfind("LAB_STATE_DIR=", 0) && kv.rfind("LAB_RUN_DIR=", 0) && kv.rfind("LAB_KILL_AT=", 0) &&
        kv.rfind("LAB_PAUSE_AT=", 0))
      env_s.push_back(kv);
  }
  env_s.push_back("LAB_STATE_DIR=" + sb.state);
  env_s.push_back("LAB_RUN_DIR=" + sb.run);
  env_s.insert(env_s.end(), env.begin(), env.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (own_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  Background b;
  int rc = ::posix_spawn(&b.pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  REQUIRE(rc == 0);
  b.out = fds[0];
  return b;
}

/// The run directory of a machine of a sandboxed lab (RUN/<lab>-<uid>/m/<machine>); "" if none.
inline std::string MachineRun(const Sandbox& sb, const std::string& lab, const std::string& machine,
                              const char* kind = "m") {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(sb.run, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(lab + "-", 0) == 0 && name.size() == lab.size() + 13)
      return e.path().string() + "/" + kind + "/" + machine;
  }
  return "";
}

/// Waits until process `pid` is stopped (SIGSTOP: state T in /proc); false after `timeout_ms`.
inline bool WaitStopped(int pid, int timeout_ms = 20000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    auto stat = lab::ReadFile("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return false;
    auto close = stat->rfind(')');
    if (close != std::string::npos && stat->size() > close + 2 && (*stat)[close + 2] == 'T') return true;
    ::usleep(2000);
  }
  return false;
}

/// Whether every pid is a live process (not gone, not a zombie).
inline bool AllAlive(const std::vector<int>& pids) {
  for (int p : pids)
    if (p <= 0 || ProcessGone(p)) return false;
  return !pids.empty();
}

/// The marks ("<lab>-<uid>") of the labs this test process brought up in its sandboxes.
inline std::set<std::string>& OwnMarks() {
  static std::set<std::string> marks;
  return marks;
}
/// Notes the marks of the labs now up in the sandbox (call while they are up).
inline void NoteMarks(const Sandbox& sb) {
  std::error_code ec;
  for (const std::string& dir : {sb.run, sb.state + "/disks"})
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) OwnMarks().insert(e.path().filename().string());
}

/// Leftovers() of this sandbox's labs: other labs' cgroups on the machine (other test runs going
/// on at the same time) are not ours to judge.
inline std::vector<std::string> OwnLeftovers(const Sandbox& sb, const std::vector<int>& pids) {
  std::vector<std::string> own;
  for (const auto& l : Leftovers(sb, pids)) {
    if (l.rfind("cgroup ", 0) == 0 && !OwnMarks().count(std::filesystem::path(l.substr(7)).filename().string()))
      continue;
    own.push_back(l);
  }
  return own;
}

}  // namespace lab::testing::e2e
