// Running processes and functions inside a running partition.
//
// Entering: a child joins the cgroup (while it still sees the machine's /sys/fs/cgroup), then
// setns()s into uts, ipc, net, pid and finally mnt (which also moves its root and cwd). A
// PID namespace only applies to children, hence the second fork. The middle child stays in our
// PID namespace, so the pid it sees for its child is the one we can signal. Right after entering,
// a child applies the partition's nesting filter (seccomp.h) when its extensions are not exposed;
// a process run or spawned inside takes the partition's whole Confinement (capabilities and the
// seccomp deny list too). Functions run inside (RunInPartition) are lab's own code acting on the
// partition, as Hyper-V's integration services do, and keep the machine's capabilities.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "base/scm_rights.h"
#include "base/text.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"
#include "hv/kernel/seccomp.h"

namespace lab::hv::kernel {
namespace {

using Clock = std::chrono::steady_clock;
// /opt/lab: lab itself, the hypervisor inside a VM (see PartitionConfig::tools_dir).
constexpr const char* kPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/lab";

std::string Describe(const std::string& run_dir) {
  std::string name = run_dir;
  while (!name.empty() && name.back() == '/') name.pop_back();
  return "partition '" + name.substr(name.rfind('/') + 1) + "'";
}

struct NsFd {
  int type;
  UniqueFd fd;
};

// Opens the partition's namespace handles, in the order they are to be entered.
Result<std::vector<NsFd>> OpenNamespaces(const std::string& run_dir, const std::vector<const char*>& kinds) {
  std::vector<NsFd> out;
  for (const char* kind : kinds) {
    int type = !std::strcmp(kind, "net")   ? CLONE_NEWNET
               : !std::strcmp(kind, "uts") ? CLONE_NEWUTS
               : !std::strcmp(kind, "ipc") ? CLONE_NEWIPC
               : !std::strcmp(kind, "pid") ? CLONE_NEWPID
                                           : CLONE_NEWNS;
    UniqueFd fd(::open(NsPath(run_dir, kind).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open namespace handle " + NsPath(run_dir, kind) + " (is it running?)");
    out.push_back({type, std::move(fd)});
  }
  return out;
}

bool ChildEnter(const std::vector<NsFd>& ns) {
  for (const NsFd& n : ns)
    if (::setns(n.fd.get(), n.type) != 0) return false;
  return true;
}

void AddFds(const std::vector<NsFd>& ns, std::vector<int>* keep) {
  for (const NsFd& n : ns) keep->push_back(n.fd.get());
}

// Reads one ChildReport from a pipe/socket without blocking; false when there is none.
bool TryReadReport(int fd, ChildReport* r) {
  ssize_t n = ::recv(fd, r, sizeof *r, MSG_DONTWAIT);
  if (n < 0 && errno == ENOTSOCK) n = ::read(fd, r, sizeof *r);
  if (n != static_cast<ssize_t>(sizeof *r)) return false;
  r->step[sizeof r->step - 1] = '\0';
  return true;
}

int WaitChild(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

Result<std::string> RunIn(const std::string& run_dir, const std::function<Result<std::string>()>& fn, int timeout_ms) {
  const std::string what = Describe(run_dir);
  auto ns = OpenNamespaces(run_dir, {"net", "uts", "mnt"});
  if (!ns.ok()) return ns.status().Prefixed(what);
  auto filter = EntryFilter(run_dir);
  if (!filter.ok()) return filter.status().Prefixed(what);
  const NoNestingFilter* rules = *filter;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(what + ": pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  std::vector<int> keep = {wr.get()};
  AddFds(*ns, &keep);

  pid_t child = ::fork();
  if (child < 0) return ErrnoStatus(what + ": fork");
  if (child == 0) {
    ChildCloseFdsExcept(keep.data(), static_cast<int>(keep.size()));
    std::string out;
    if (!ChildEnter(*ns)) {
      out = "E" + ErrnoStatus("enter namespaces").message();
    } else if (rules && !rules->ChildApply()) {
      out = "E" + ErrnoStatus("apply the nesting filter").message();
    } else {
      try {
        Result<std::string> r = fn();
        out = r.ok() ? "O" + *r : "E" + r.message();
      } catch (const std::exception& e) {
        out = std::string("E") + e.what();
      } catch (...) {
        out = "Efailed with an exception";
      }
    }
    size_t off = 0;
    while (off < out.size()) {
      ssize_t w = ::write(wr.get(), out.data() + off, out.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) break;
      off += static_cast<size_t>(w);
    }
    ::_exit(0);
  }
  wr.Reset();

  std::string data;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  for (;;) {
    pollfd pfd{rd.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      timed_out = true;
      break;
    }
    char buf[65536];
    ssize_t got = ::read(rd.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    data.append(buf, static_cast<size_t>(got));
  }
  if (timed_out) ::kill(child, SIGKILL);
  int status = WaitChild(child);
  if (timed_out) return Status::Error(what + ": timed out after " + std::to_string(timeout_ms) + " ms");
  if (data.empty())
    return Status::Error(what + ": the function's process ended without an answer (status " +
                         std::to_string(status) + ")");
  if (data[0] == 'E') return Status::Error(what + ": " + data.substr(1));
  return data.substr(1);
}

// ---- entering and running a command: what ExecInPartition and RunCommandInPartition share ----

// Who a command runs as (lab exec -u), from the machine's own /etc/passwd and /etc/group.
struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary: the groups of /etc/group that list the name
  std::string name;           // "" for a uid the file does not have
  std::string home = "/";
};

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Looks `user` (a name or a uid) up in the machine's /etc/passwd (read inside its mount
// namespace, so the machine's own file, not ours). A uid the file does not have runs with gid 0
// and HOME=/, as docker exec -u does.
Result<Identity> LookUpUser(const std::string& run_dir, const std::string& user) {
  auto found = RunIn(
      run_dir,
      [&]() -> Result<std::string> {
        auto passwd = ReadFile("/etc/passwd");
        std::string line_found;
        for (const std::string& line : Split(passwd.value_or(""), '\n')) {
          auto f = Split(line, ':');
          if (f.size() < 7) continue;
          if (f[0] == user || (AllDigits(user) && f[2] == user)) {
            line_found = line;
            break;
          }
        }
        if (line_found.empty()) return std::string();
        std::string groups;
        const std::string name = Split(line_found, ':')[0];
        for (const std::string& line : Split(ReadFile("/etc/group").value_or(""), '\n')) {
          auto f = Split(line, ':');
          if (f.size() < 4) continue;
          for (const std::string& member : Split(f[3], ','))
            if (member == name && AllDigits(f[2])) groups += f[2] + ",";
        }
        return line_found + "\n" + groups;
      },
      10000);
  if (!found.ok()) return found.status().Prefixed("look up user '" + user + "' in /etc/passwd");
  Identity id;
  if (found->empty()) {
    if (!AllDigits(user))
      return Status::Error("exec: no user '" + user + "' in the machine's /etc/passwd; give one of its users or a uid");
    id.uid = static_cast<uid_t>(std::stoul(user));
    return id;
  }
  const auto lines = Split(*found, '\n');
  const auto f = Split(lines[0], ':');
  if (!AllDigits(f[2]) || !AllDigits(f[3]))
    return Status::Error("exec: user '" + user + "' has no numeric uid and gid in the machine's /etc/passwd");
  id.name = f[0];
  id.uid = static_cast<uid_t>(std::stoul(f[2]));
  id.gid = static_cast<gid_t>(std::stoul(f[3]));
  id.home = f[5].empty() ? "/" : f[5];
  if (lines.size() > 1)
    for (const std::string& g : Split(lines[1], ','))
      if (AllDigits(g)) id.groups.push_back(static_cast<gid_t>(std::stoul(g)));
  return id;
}

// How the command is started and waited for: prepared before the fork, only read in the child.
struct Launch {
  const char* verb = "exec";   // in messages
  int out_fd = -1;             // stdout and stderr; -1: the caller's
  bool null_stdin = false;     // stdin from /dev/null; else the caller's
  bool own_sessions = false;   // the middle process and the command each in a session of their own
  long long limit_ns = 0;      // the command's process group is killed after this long; 0: no limit
  bool pty = false;            // a pty of the machine's /dev/pts as the command's terminal
  bool has_size = false;       // `size` is the caller's window size, given to the pty
  winsize size{};
  std::optional<Identity> identity;  // none: root, as entered
  std::string workdir;         // "": / (where entering the mount namespace left it)
};

// Sends the pty's master over the report socket (SCM_RIGHTS) with a report of error 0.
// Async-signal-safe.
bool ChildSendFd(int sock, int fd) {
  ChildReport r;
  r.err = 0;
  r.step[0] = 'p';
  return SendWithFd(sock, &r, sizeof r, fd) == static_cast<ssize_t>(sizeof r);
}

// The first message of the child: a report, with a descriptor when it carries one (the pty's
// master); false at the end of the stream (the child ended without a word).
bool ReceiveWithFd(int sock, ChildReport* r, UniqueFd* fd) {
  iovec iov{r, sizeof *r};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof *r)) return false;
  r->step[sizeof r->step - 1] = '\0';
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int got = -1;
      std::memcpy(&got, CMSG_DATA(c), sizeof got);
      fd->Reset(got);
    }
  return true;
}

// Opens a pty of the mount namespace we are in (the partition's own devpts: /dev/ptmx there is
// pts/ptmx) and returns its slave through `slave`. Async-signal-safe.
int ChildOpenPty(const Launch& l, int* slave) {
  int master = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return -1;
  int unlock = 0;
  if (::ioctl(master, TIOCSPTLCK, &unlock) != 0) return -1;
  *slave = ::ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (*slave < 0) {
    // Before Linux 4.13: by its path, /dev/pts/N.
    unsigned int n = 0;
    if (::ioctl(master, TIOCGPTN, &n) != 0) return -1;
    char path[32] = "/dev/pts/";
    char digits[12];
    int k = 0;
    do digits[k++] = static_cast<char>('0' + n % 10);
    while ((n /= 10) && k < 11);
    int at = 9;
    while (k) path[at++] = digits[--k];
    path[at] = '\0';
    *slave = ::open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) return -1;
  }
  if (l.has_size) ::ioctl(master, TIOCSWINSZ, &l.size);
  return master;
}

// Enters the partition (cgroup, namespaces, its confinement) in a middle process, which forks
// the command and waits for it as `l` says; the caller waits for the middle (and relays the pty).
Result<CommandOutcome> EnterAndRun(const std::string& run_dir, const std::string& cgroup,
                                   const std::vector<std::string>& argv, const std::vector<std::string>& env_vars,
                                   const Launch& l) {
  const std::string what = Describe(run_dir);
  const std::string verb = l.verb;
  if (argv.empty()) return Status::Error(what + ": " + verb + ": no command");
  auto ns = OpenNamespaces(run_dir, {"uts", "ipc", "net", "pid", "mnt"});
  if (!ns.ok()) return ns.status().Prefixed(what);
  std::vector<std::string> procs = cgroup.empty() ? std::vector<std::string>{} : CgroupProcsFiles(cgroup);
  auto confinement = EntryConfinement(run_dir);
  if (!confinement.ok()) return confinement.status().Prefixed(what);
  const Confinement* rules = *confinement;
  ChildEnv env(env_vars);
  ChildArgv args(argv);
  const std::string not_found = "lab: " + argv[0] + ": command not found\n";
  const std::string denied = "lab: " + argv[0] + ": permission denied\n";
  const std::string no_workdir = "lab: cannot change to the working directory " + l.workdir + "\n";
  const Identity* id = l.identity ? &*l.identity : nullptr;
  // A socket, not a pipe: ChildFail send()s its report, which a pipe refuses (ENOTSOCK).
  int p[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) != 0) return ErrnoStatus(what + ": socketpair");
  UniqueFd rd(p[0]), wr(p[1]);
  std::vector<int> keep = {wr.get()};
  if (l.out_fd >= 0) keep.push_back(l.out_fd);
  AddFds(*ns, &keep);

  pid_t middle = ::fork();
  if (middle < 0) return ErrnoStatus(what + ": fork");
  if (middle == 0) {
    // run: a session of its own, and one for the command: Ctrl-C on lab's terminal reaches
    // neither, and the command's whole process group can be ended at its timeout.
    if (l.own_sessions) ::setsid();
    ChildCloseFdsExcept(keep.data(), static_cast<int>(keep.size()));
    if (!ChildJoinCgroup(procs)) ChildFail(wr.get(), "join cgroup", 125);
    if (!ChildEnter(*ns)) ChildFail(wr.get(), "enter namespaces", 125);
    if (!rules->ChildApply()) ChildFail(wr.get(), "confine the process (capabilities, seccomp)", 125);
    int slave = -1;
    if (l.pty) {
      int master = ChildOpenPty(l, &slave);
      if (master < 0) ChildFail(wr.get(), "open a pty in the machine's /dev/pts", 125);
      if (!ChildSendFd(wr.get(), master)) ChildFail(wr.get(), "pass the pty on", 125);
      ::close(master);
    }
    pid_t g = ::fork();
    if (g < 0) ChildFail(wr.get(), "fork", 125);
    if (g == 0) {
      if (l.own_sessions || l.pty) ::setsid();
      if (l.pty) {
        // The slave becomes the controlling terminal of the command's new session.
        if (::ioctl(slave, TIOCSCTTY, 0) != 0) ChildFail(wr.get(), "take the pty as the terminal", 125);
        ::dup2(slave, 0);
        ::dup2(slave, 1);
        ::dup2(slave, 2);
        if (id && ::fchown(slave, id->uid, static_cast<gid_t>(-1)) != 0) ChildFail(wr.get(), "give the pty to the user", 125);
      } else {
        if (l.null_stdin) {
          int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          if (null >= 0) ::dup2(null, 0);
        }
        if (l.out_fd >= 0) {
          ::dup2(l.out_fd, 1);
          ::dup2(l.out_fd, 2);
        }
      }
      if (id) {
        if (::setgroups(id->groups.size(), id->groups.data()) != 0) ChildFail(wr.get(), "setgroups", 125);
        if (::setgid(id->gid) != 0) ChildFail(wr.get(), "setgid", 125);
        if (::setuid(id->uid) != 0) ChildFail(wr.get(), "setuid", 125);
      }
      if (!l.workdir.empty() && ::chdir(l.workdir.c_str()) != 0) {
        ssize_t ignored = ::write(2, no_workdir.data(), no_workdir.size());
        (void)ignored;
        ::_exit(126);
      }
      args.Exec(env.Pointers());
      const std::string& msg = errno == ENOENT ? not_found : denied;
      ssize_t ignored = ::write(2, msg.data(), msg.size());
      (void)ignored;
      ::_exit(errno == ENOENT ? 127 : 126);
    }
    if (slave >= 0) ::close(slave);
    if (l.limit_ns == 0) ::_exit(ExitCodeOf(WaitChild(g)));
    // The report channel stays open: a timeout is reported on it.
    // Async-signal-safe only (we are a fork of a threaded process): poll the child's end.
    timespec start{};
    ::clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(g, &status, WNOHANG);
      if (r == g) ::_exit(ExitCodeOf(status));
      if (r < 0 && errno != EINTR) ::_exit(125);
      timespec now{};
      ::clock_gettime(CLOCK_MONOTONIC, &now);
      long long spent = (now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec);
      if (spent >= l.limit_ns) break;
      timespec nap{0, 5 * 1000000};
      ::nanosleep(&nap, nullptr);
    }
    ::kill(-g, SIGKILL);  // the command and what it started in its group
    ::kill(g, SIGKILL);
    while (::waitpid(g, nullptr, 0) < 0 && errno == EINTR) {
    }
    errno = ETIMEDOUT;
    ChildFail(wr.get(), "timeout", 124);
  }
  wr.Reset();
  ChildReport r;
  if (l.pty) {
    // The middle's first word: the pty's master, or why it has none.
    UniqueFd master;
    if (ReceiveWithFd(rd.get(), &r, &master)) {
      if (r.err != 0) {
        WaitChild(middle);
        return Status::Error(what + ": " + verb + ": " + r.step + ": " + ErrnoText(r.err));
      }
      if (master.valid()) RelayTerminal(master.get(), middle);
    }
  }
  int status = WaitChild(middle);
  if (TryReadReport(rd.get(), &r)) {
    if (r.err == ETIMEDOUT && std::strcmp(r.step, "timeout") == 0) return CommandOutcome{124, true};
    return Status::Error(what + ": " + verb + ": " + r.step + ": " + ErrnoText(r.err));
  }
  if (status < 0) return ErrnoStatus(what + ": " + verb + ": wait");
  return CommandOutcome{ExitCodeOf(status), false};
}

}  // namespace

// ---- environment and argv for children ----

ChildEnv::ChildEnv(const std::vector<std::string>& vars) {
  vars_.push_back(std::string("PATH=") + kPath);
  vars_.push_back("HOME=/root");
  if (const char* term = std::getenv("TERM")) vars_.push_back(std::string("TERM=") + term);
  for (const std::string& v : vars) {
    const size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    const std::string name = v.substr(0, eq + 1);
    auto same = std::find_if(vars_.begin(), vars_.end(), [&](const std::string& o) { return o.rfind(name, 0) == 0; });
    if (same != vars_.end()) {
      *same = v;
    } else {
      vars_.push_back(v);
    }
  }
  for (std::string& v : vars_) ptrs_.push_back(v.data());
  ptrs_.push_back(nullptr);
}

ChildArgv::ChildArgv(const std::vector<std::string>& argv) : args_(argv) {
  for (std::string& a : args_) ptrs_.push_back(a.data());
  ptrs_.push_back(nullptr);
  if (args_.empty()) return;
  if (args_[0].find('/') != std::string::npos) {
    candidates_.push_back(args_[0]);
  } else {
    for (const std::string& dir : Split(kPath, ':')) candidates_.push_back(dir + "/" + args_[0]);
  }
}

void ChildArgv::Exec(char* const* envp) {
  int best = ENOENT;
  for (const std::string& c : candidates_) {
    ::execve(c.c_str(), ptrs_.data(), envp);
    if (errno != ENOENT && errno != ENOTDIR) best = errno;  // e.g. EACCES: remember, keep looking
  }
  errno = best;
}

// ---- public ----

Result<int> ExecInPartition(const std::string& run_dir, const std::string& cgroup,
                            const std::vector<std::string>& argv, const ExecOptions& options) {
  const std::string what = Describe(run_dir);
  Launch l;
  l.verb = "exec";
  l.pty = options.tty;
  if (l.pty) l.has_size = TerminalSize(&l.size);
  if (!options.user.empty()) {
    auto id = LookUpUser(run_dir, options.user);
    if (!id.ok()) return id.status().Prefixed(what);
    l.identity = std::move(*id);
  }
  l.workdir = options.workdir;
  std::vector<std::string> env;
  if (l.identity) {
    env.push_back("HOME=" + l.identity->home);
    if (!l.identity->name.empty()) {
      env.push_back("USER=" + l.identity->name);
      env.push_back("LOGNAME=" + l.identity->name);
    }
  }
  env.insert(env.end(), options.env.begin(), options.env.end());
  auto outcome = EnterAndRun(run_dir, cgroup, argv, env, l);
  if (!outcome.ok()) return outcome.status();
  return outcome->exit_code;
}

Result<CommandOutcome> RunCommandInPartition(const std::string& run_dir, const std::string& cgroup,
                                             const std::vector<std::string>& argv, int out_fd, int timeout_ms) {
  Launch l;
  l.verb = "run";
  l.out_fd = out_fd;
  l.null_stdin = true;
  l.own_sessions = true;
  l.limit_ns = static_cast<long long>(timeout_ms) * 1000000;
  return EnterAndRun(run_dir, cgroup, argv, {}, l);
}

Result<ProcessId> SpawnInPartition(const std::string& run_dir, const std::string& cgroup,
                                   const std::vector<std::string>& argv, bool self_exe,
                                   const std::string& log_path) {
  const std::string what = Describe(run_dir);
  if (argv.empty()) return Status::Error(what + ": spawn: no command");
  if (log_path.empty() || log_path.front() != '/') return Status::Error(what + ": spawn: log path must be absolute");
  auto ns = OpenNamespaces(run_dir, {"uts", "ipc", "net", "pid", "mnt"});
  if (!ns.ok()) return ns.status().Prefixed(what);
  std::vector<std::string> procs = cgroup.empty() ? std::vector<std::string>{} : CgroupProcsFiles(cgroup);
  auto confinement = EntryConfinement(run_dir);
  if (!confinement.ok()) return confinement.status().Prefixed(what);
  const Confinement* rules = *confinement;
  // Our own binary is opened here, in the machine's mount namespace: inside it the path may not exist.
  UniqueFd exe;
  if (self_exe) {
    exe.Reset(::open("/proc/self/exe", O_PATH | O_CLOEXEC));
    if (!exe.valid()) return ErrnoStatus(what + ": spawn: open /proc/self/exe");
  }
  ChildEnv env;
  ChildArgv args(argv);
  std::vector<std::string> log_dirs;
  for (size_t pos = log_path.find('/', 1); pos != std::string::npos; pos = log_path.find('/', pos + 1))
    log_dirs.push_back(log_path.substr(0, pos));

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return ErrnoStatus(what + ": socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  int one = 1;
  if (::setsockopt(ours.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) return ErrnoStatus("SO_PASSCRED");
  std::vector<int> keep = {theirs.get()};
  if (exe.valid()) keep.push_back(exe.get());
  AddFds(*ns, &keep);

  pid_t middle = ::fork();
  if (middle < 0) return ErrnoStatus(what + ": fork");
  if (middle == 0) {
    const int s = theirs.get();
    ChildCloseFdsExcept(keep.data(), static_cast<int>(keep.size()));
    if (!ChildJoinCgroup(procs)) ChildFail(s, "join cgroup", 125);
    if (!ChildEnter(*ns)) ChildFail(s, "enter namespaces", 125);
    if (!rules->ChildApply()) ChildFail(s, "confine the process (capabilities, seccomp)", 125);
    pid_t g = ::fork();
    if (g < 0) ChildFail(s, "fork", 125);
    if (g == 0) {
      // G is inside the partition's PID namespace: when it exits, H is adopted by the
      // partition's init (which reaps it), not by a process of the machine.
      ::setsid();
      pid_t h = ::fork();
      if (h < 0) ChildFail(s, "fork", 125);
      if (h > 0) ::_exit(0);
      int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null < 0) ChildFail(s, "open /dev/null", 125);
      ::dup2(null, 0);
      for (std::string& d : log_dirs) ::mkdir(d.c_str(), 0755);
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (log < 0) ChildFail(s, "open log file", 125);
      ::dup2(log, 1);
      ::dup2(log, 2);
      ChildSendReport(s, "", 0);
      if (exe.valid()) {
        ::syscall(SYS_execveat, exe.get(), "", args.Pointers(), env.Pointers(), AT_EMPTY_PATH);
      } else {
        args.Exec(env.Pointers());
      }
      ChildFail(s, "exec", 127);
    }
    ::_exit(ExitCodeOf(WaitChild(g)));
  }
  theirs.Reset();
  exe.Reset();

  auto deadline = Clock::now() + std::chrono::seconds(10);
  Received first = ReceiveReport(ours.get(), deadline);
  if (first.kind == Received::kTimeout) ::kill(middle, SIGKILL);
  WaitChild(middle);
  if (first.kind != Received::kReport)
    return Status::Error(what + ": spawn: " +
                         (first.kind == Received::kEof ? "the process ended before starting" : "no answer within 10 s"));
  if (first.report.err != 0)
    return Status::Error(what + ": spawn " + argv[0] + ": " + first.report.step + ": " + ErrnoText(first.report.err));
  const int pid = first.pid;
  ProcessId started{pid, ProcessStartTime(pid)};
  // Closed on exec (CLOEXEC); a second report means the exec failed.
  Received exec = ReceiveReport(ours.get(), deadline);
  if (exec.kind == Received::kReport)
    return Status::Error(what + ": spawn " + argv[0] + ": " + exec.report.step + ": " + ErrnoText(exec.report.err));
  if (exec.kind == Received::kTimeout) {
    (void)StopProcess(started);
    return Status::Error(what + ": spawn " + argv[0] + ": did not start within 10 s");
  }
  started.start_time = ProcessStartTime(pid);
  if (started.start_time == 0) return Status::Error(what + ": spawn " + argv[0] + ": exited right after starting");
  return started;
}

Status StopProcess(const ProcessId& p) {
  // The signals go through a pidfd whose process still had the start time after it was opened:
  // it names this process even if the process ends and its pid is given to another before a
  // signal is sent. Kernels without pidfds (before 5.3) get kill(2).
  UniqueFd pidfd(p.pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)) : -1);
  if (!IsAlive(p)) return Status::Ok();
  auto send = [&](int sig) {
    long r = pidfd.valid() ? ::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) : ::kill(p.pid, sig);
    return r == 0 || errno == ESRCH;
  };
  if (!send(SIGTERM)) return ErrnoStatus("stop process " + std::to_string(p.pid));
  if (WaitGone(p, 1000, pidfd.get())) return Status::Ok();
  if (!send(SIGKILL)) return ErrnoStatus("kill process " + std::to_string(p.pid));
  if (WaitGone(p, 2000, pidfd.get())) return Status::Ok();
  return Status::Error("process " + std::to_string(p.pid) + " did not exit after SIGKILL");
}

Result<std::string> RunInPartition(const std::string& run_dir, const std::function<std::string()>& fn,
                                   int timeout_ms) {
  return RunIn(run_dir, [&]() -> Result<std::string> { return fn(); }, timeout_ms);
}

Status WriteFileInPartition(const std::string& run_dir, const std::string& path, const std::string& content) {
  auto r = RunIn(
      run_dir,
      [&]() -> Result<std::string> {
        std::string parent = path.substr(0, path.rfind('/'));
        if (!parent.empty()) LAB_RETURN_IF_ERROR(MakeDirs(parent));
        LAB_RETURN_IF_ERROR(WriteWholeFile(path, content, 0644));
        return std::string();
      },
      10000);
  return r.status().Prefixed("write " + path);
}

}  // namespace lab::hv::kernel
