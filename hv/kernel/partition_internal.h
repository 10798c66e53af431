// Pieces shared by the partition runtime's files (cgroup.cc, mounts.cc, partition*.cc); not an
// API for other layers.
//
// Code that runs between fork() and exec()/_exit() in a child of a possibly multi-threaded process
// uses only the `Child*` helpers below: plain syscalls on data prepared before the fork.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/proc.h"
#include "base/status.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/terminal.h"

namespace lab::hv::kernel {

/// A file descriptor, closed when it goes out of scope.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// ---- cgroups (cgroup.cc) ----

/// Creates `relative` (and its ancestors) in every hierarchy and sets the limits (0 = none).
/// Returns whether the leaf was created by this call through `created`.
Status CgroupCreate(const std::string& relative, uint64_t memory_limit, int cpu_count, bool* created);
/// The cgroup.procs files a process writes "0" into to join `relative` (one per hierarchy).
std::vector<std::string> CgroupProcsFiles(const std::string& relative);
/// The directories of `relative`, one per hierarchy.
std::vector<std::string> CgroupDirs(const std::string& relative);
/// SIGKILLs every process in `relative` and below (a cgroup marked as the lab's holds only the
/// lab's processes).
void CgroupKillAll(const std::string& relative);

// ---- processes (partition.cc) ----

/// Waits until `p` is gone (or a zombie), reaping it when it is our child; false on timeout.
/// `pidfd`, when the caller has one open for `p`, is waited on instead of opening another.
bool WaitGone(const ProcessId& p, int timeout_ms, int pidfd = -1);

// ---- mounts and files (mounts.cc) ----

/// The configuration lab writes at every start (as Docker manages a container's): in a base
/// layer made by this version, /etc/<name> is a symlink to ../run/lab-etc/<name>, and the start
/// writes the file into the partition's own /run (a tmpfs), not into its disk.
inline constexpr const char* kRuntimeConfigFiles[] = {"hostname", "hosts", "resolv.conf"};
/// Relative to the root. Not run/lab: that is the run root of a lab inside the VM.
inline constexpr const char* kRuntimeConfigDir = "run/lab-etc";

/// True when `path` is a mount point in the calling process's mount namespace.
bool IsMountPoint(const std::string& path);
/// Creates `path` and its missing parents with `mode`.
Status MakeDirs(const std::string& path, mode_t mode = 0755);
/// Writes `content` to `path` (created or truncated) with `mode`.
Status WriteWholeFile(const std::string& path, const std::string& content, mode_t mode = 0644);

// ---- child-side helpers (partition.cc): async-signal-safe ----

/// Why a child failed: the step it was on and errno. Sent as one message / pipe write.
struct ChildReport {
  int32_t err = 0;          // 0 = ready
  char step[120] = {};
};
/// Fills and writes a report on `fd` (ignoring errors: the reader treats silence as failure).
void ChildSendReport(int fd, const char* step, int err);
/// Sends a report for the current errno and _exit()s with `code`.
[[noreturn]] void ChildFail(int fd, const char* step, int code);

/// Milliseconds left until `deadline`, at least 0 (for poll).
int MsLeft(std::chrono::steady_clock::time_point deadline);

/// Parent side of a report channel (a SOCK_SEQPACKET socket with SO_PASSCRED): one report with
/// the sender's pid as the kernel translated it into our PID namespace, or EOF (every child's
/// end closed: exited or exec'd), or the deadline.
struct Received {
  enum Kind { kReport, kEof, kTimeout } kind = kTimeout;
  ChildReport report;
  int pid = 0;
};
Received ReceiveReport(int sock, std::chrono::steady_clock::time_point deadline);
/// Closes every descriptor >= 3 except those in keep[0..n).
void ChildCloseFdsExcept(const int* keep, int n);
/// Writes "0" into each file (joins the cgroup); returns false with errno set on failure.
bool ChildJoinCgroup(const std::vector<std::string>& procs_files);

/// The fixed environment of processes started inside a partition: PATH, HOME, TERM (passed
/// through). Strings built before a fork; `Pointers()` is the execve envp.
class ChildEnv {
 public:
  ChildEnv() : ChildEnv(std::vector<std::string>{}) {}
  /// The defaults, then each VAR=VALUE of `vars` in order, replacing a variable of that name.
  explicit ChildEnv(const std::vector<std::string>& vars);
  char* const* Pointers() { return ptrs_.data(); }

 private:
  std::vector<std::string> vars_;
  std::vector<char*> ptrs_;
};

/// argv prepared before a fork, with the execve candidates of a PATH search done in the child.
class ChildArgv {
 public:
  explicit ChildArgv(const std::vector<std::string>& argv);
  char* const* Pointers() { return ptrs_.data(); }
  /// execve()s each candidate in turn; returns only on failure, with errno of the best attempt.
  void Exec(char* const* envp);

 private:
  std::vector<std::string> args_;
  std::vector<char*> ptrs_;
  std::vector<std::string> candidates_;
};

// ---- the caller's terminal (terminal.cc) ----

/// Relays the caller's stdin to the pty `master` and the master's output to the caller's stdout
/// until `child` (ours, not reaped here) ends or the pty's every slave is closed, then drains what
/// is left. A terminal on stdin is in raw mode meanwhile and as it was after; SIGWINCH passes the
/// new window size on; SIGTERM, SIGHUP, SIGINT or SIGQUIT to us end the relay (the caller closes
/// the master: the command's terminal hangs up).
void RelayTerminal(int master, pid_t child);

}  // namespace lab::hv::kernel
