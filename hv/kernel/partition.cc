// Starting and destroying partitions.
//
// Process tree of a start (our process may be multi-threaded, so every child below runs only
// syscalls on data prepared before the first fork):
//
//   us ── W (joins the cgroup; enters the parent partition's net/uts/ipc/pid namespaces)
//          └─ A (unshares mnt/net/uts/ipc/pid; forks and exits)
//               └─ B = pid 1 of the new PID namespace: builds the root, pivots, execs lab-init
//
// B reports over a SOCK_SEQPACKET socketpair: one message whose SCM_CREDENTIALS the kernel
// translates into our PID namespace (that is how we learn its host pid, however deep the
// nesting), then the socket closes on exec (CLOEXEC), which confirms the exec. Any child that
// fails sends the step and errno instead, so errors read "partition 'X': mount overlay root: ...".
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/text.h"
#include "hv/kernel/lifecycle.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"
#include "hv/kernel/seccomp.h"

namespace lab::hv::kernel {
namespace {

const char* const kNsKinds[] = {"net", "mnt", "uts", "ipc", "pid"};
constexpr const char* kCreateNamespaces = "create namespaces";
constexpr const char* kToolsInside = "/opt/lab";
constexpr const char* kStateInside = "/var/lib/lab";
constexpr int kStartTimeoutMs = 10000;

using Clock = std::chrono::steady_clock;

// ---- what B does, prepared before the fork ----

struct FileToWrite {
  std::vector<std::string> dirs;  // parents to create, outermost first
  std::string path;               // full path under the new root
  std::string content;
};

struct BindRo {
  std::string source, target;
};

struct RootPlan {
  std::string root;               // run_dir/root
  std::string overlay_opts;
  std::vector<FileToWrite> files;
  std::vector<std::string> mount_dirs;  // mount points to create in the root, outermost first
  std::vector<BindRo> binds_ro;   // /usr, /bin... on a split-/usr machine, /opt/lab
  std::vector<BindRo> binds_rw;   // /var/lib/lab (lab's state inside a VM that may nest)
  std::string cgroup_tmpfs;       // v1: a tmpfs at /sys/fs/cgroup holding the hierarchies
  std::vector<std::string> cgroup_dirs;
  std::vector<BindRo> cgroup_binds;  // the partition's own cgroup, per hierarchy
  const NoNestingFilter* own_filter = nullptr;     // B applies it before lab-init
  const NoNestingFilter* parent_filter = nullptr;  // W applies it once inside the parent
  std::string proc, sys, dev, pts, shm, run;
  std::vector<BindRo> dev_nodes;
  std::vector<std::pair<std::string, std::string>> dev_links;  // target, link path
  std::string hostname;
  int sock = -1;
  int init_fd = -1;
};

bool TouchFile(const char* path) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

[[noreturn]] void RunB(RootPlan& p) {
  const int s = p.sock;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ChildFail(s, "make / private", 126);
  if (::mount("overlay", p.root.c_str(), "overlay", 0, p.overlay_opts.c_str()) != 0)
    ChildFail(s, "mount overlay root", 126);
  for (FileToWrite& f : p.files) {
    for (std::string& d : f.dirs)
      if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) ChildFail(s, "write configuration files: mkdir", 126);
    // Replace rather than write through: the base may hold a symlink here (resolv.conf).
    if (::unlink(f.path.c_str()) != 0 && errno != ENOENT) ChildFail(s, "write configuration files: unlink", 126);
    int fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) ChildFail(s, "write configuration files: create", 126);
    size_t off = 0;
    while (off < f.content.size()) {
      ssize_t w = ::write(fd, f.content.data() + off, f.content.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) ChildFail(s, "write configuration files: write", 126);
      off += static_cast<size_t>(w);
    }
    ::close(fd);
  }
  for (std::string& d : p.mount_dirs)
    if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) ChildFail(s, "create mount points", 126);
  for (BindRo& b : p.binds_ro) {
    if (::mount(b.source.c_str(), b.target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      ChildFail(s, "bind /usr, /opt/lab read-only", 126);
    if (::mount(nullptr, b.target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
      ChildFail(s, "remount /usr, /opt/lab read-only", 126);
  }
  for (BindRo& b : p.binds_rw)
    if (::mount(b.source.c_str(), b.target.c_str(), nullptr, MS_BIND, nullptr) != 0)
      ChildFail(s, "bind /var/lib/lab", 126);
  if (::mount("proc", p.proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    ChildFail(s, "mount /proc", 126);
  if (::mount("sysfs", p.sys.c_str(), "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    ChildFail(s, "mount /sys", 126);
  if (!p.cgroup_tmpfs.empty() &&
      ::mount("tmpfs", p.cgroup_tmpfs.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") != 0)
    ChildFail(s, "mount /sys/fs/cgroup", 126);
  for (std::string& d : p.cgroup_dirs)
    if (::mkdir(d.c_str(), 0555) != 0 && errno != EEXIST) ChildFail(s, "mkdir /sys/fs/cgroup hierarchy", 126);
  for (BindRo& b : p.cgroup_binds)
    if (::mount(b.source.c_str(), b.target.c_str(), nullptr, MS_BIND, nullptr) != 0)
      ChildFail(s, "bind the partition's cgroup at /sys/fs/cgroup", 126);
  if (::mount("tmpfs", p.dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k") != 0)
    ChildFail(s, "mount /dev", 126);
  for (BindRo& n : p.dev_nodes) {
    if (!TouchFile(n.target.c_str())) ChildFail(s, "create /dev node", 126);
    if (::mount(n.source.c_str(), n.target.c_str(), nullptr, MS_BIND, nullptr) != 0) ChildFail(s, "bind /dev node", 126);
  }
  if (::mkdir(p.pts.c_str(), 0755) != 0) ChildFail(s, "mkdir /dev/pts", 126);
  if (::mount("devpts", p.pts.c_str(), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") != 0)
    ChildFail(s, "mount /dev/pts", 126);
  if (::mkdir(p.shm.c_str(), 01777) != 0) ChildFail(s, "mkdir /dev/shm", 126);
  if (::mount("tmpfs", p.shm.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) ChildFail(s, "mount /dev/shm", 126);
  for (auto& [target, link] : p.dev_links)
    if (::symlink(target.c_str(), link.c_str()) != 0) ChildFail(s, "create /dev links", 126);
  if (::mount("tmpfs", p.run.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755") != 0) ChildFail(s, "mount /run", 126);
  if (::sethostname(p.hostname.data(), p.hostname.size()) != 0) ChildFail(s, "set hostname", 126);
  // pivot_root(".", "."): the old root ends up stacked on the new one, then is detached.
  if (::chdir(p.root.c_str()) != 0) ChildFail(s, "pivot_root: chdir", 126);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) ChildFail(s, "pivot_root", 126);
  if (::umount2(".", MNT_DETACH) != 0) ChildFail(s, "pivot_root: detach old root", 126);
  if (::chdir("/") != 0) ChildFail(s, "pivot_root: chdir /", 126);
  // init must not hold our terminal or pipes open.
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) ChildFail(s, "open /dev/null", 126);
  ::dup2(null, 0);
  ::dup2(null, 1);
  ::dup2(null, 2);
  // Last: the filter also refuses the namespace work above.
  if (p.own_filter && !p.own_filter->ChildApply()) ChildFail(s, "apply the nesting filter", 126);
  ChildSendReport(s, "", 0);
  char arg0[] = "lab-init";
  char* argv[] = {arg0, nullptr};
  char* envp[] = {nullptr};
  ::syscall(SYS_execveat, p.init_fd, "", argv, envp, AT_EMPTY_PATH);
  ChildFail(s, "exec lab-init", 126);
}

// The id the kernel gives this process's mount namespace (NS_GET_MNTNS_ID, Linux 6.8+); 0 where
// the kernel has no such ioctl. Syscalls only: it runs between fork and exec.
uint64_t OwnMountNsId() {
  int fd = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t id = 0;
  if (::ioctl(fd, _IOR(0xb7, 0x5, uint64_t), &id) != 0) id = 0;
  ::close(fd);
  return id;
}

// The kernel lets us bind a mount namespace's handle only if that namespace is newer than ours
// (mnt_ns_loop: our id must be below its id). Kernels that hand out namespace ids from per-CPU
// batches (seen on 6.18: ids near 9,900 on CPU 0 and 13,500 on CPU 1 at the same moment) can give
// a namespace made now a lower id than ours when ours was made on the other CPU, and the bind then
// fails with EINVAL. A hypervisor inside a VM meets this half the time. So: once unshared, make
// the mount namespace again on each allowed CPU in turn until its id is above ours. Ids within one
// CPU's batch grow, so the CPU that made our namespace always gives a higher one.
bool MakeMountNsNewerThan(uint64_t ours) {
  if (ours == 0 || OwnMountNsId() > ours) return true;
  cpu_set_t allowed;
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return false;
  bool newer = false;
  for (int round = 0; round < 2 && !newer; ++round)
    for (int cpu = 0; cpu < CPU_SETSIZE && !newer; ++cpu) {
      // Every CPU, not just our mask: the caller may be pinned to the wrong one. The kernel
      // refuses CPUs that are offline or outside our cpuset.
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (::sched_setaffinity(0, sizeof one, &one) != 0) continue;
      if (::unshare(CLONE_NEWNS) != 0) break;
      newer = OwnMountNsId() > ours;
    }
  ::sched_setaffinity(0, sizeof allowed, &allowed);
  return newer;
}

// W: joins the cgroup (and the parent partition's namespaces), then A unshares and forks B.
[[noreturn]] void RunW(RootPlan& plan, const std::vector<std::string>& procs_files, const std::vector<int>& parent_ns,
                       const int* keep, int nkeep) {
  const int s = plan.sock;
  ChildCloseFdsExcept(keep, nkeep);
  if (!ChildJoinCgroup(procs_files)) ChildFail(s, "join cgroup", 126);
  static const int kParentNsTypes[] = {CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID};
  for (size_t i = 0; i < parent_ns.size(); ++i)
    if (::setns(parent_ns[i], kParentNsTypes[i]) != 0) ChildFail(s, "enter the parent partition's namespaces", 126);
  // From here on W is the parent's hypervisor, under the parent's rules.
  if (plan.parent_filter && !plan.parent_filter->ChildApply()) ChildFail(s, "apply the parent's nesting filter", 126);
  pid_t a = ::fork();
  if (a < 0) ChildFail(s, "fork", 126);
  if (a == 0) {
    // A: now inside the parent's PID namespace, so a new one can be made below it.
    uint64_t ours = OwnMountNsId();
    if (::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID) != 0)
      ChildFail(s, kCreateNamespaces, 126);
    if (!MakeMountNsNewerThan(ours)) ChildFail(s, "make a mount namespace the kernel lets us keep a handle of", 126);
    pid_t b = ::fork();
    if (b < 0) ChildFail(s, "fork init", 126);
    if (b == 0) RunB(plan);
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(a, &status, 0) < 0 && errno == EINTR) {
  }
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 125);
}

// Everything a failed start made, undone in reverse.
struct StartUndo {
  const PartitionConfig& config;
  bool run_dir_created = false;
  bool disk_dir_created = false;
  bool upper_created = false;
  bool work_created = false;
  bool cgroup_created = false;
  bool refused = false;  // the parent may not nest: the error already names the VM and the fix
  std::vector<std::string> ns_mounts;
  ProcessId init;

  void Run() {
    if (init.pid > 0 && IsAlive(init)) {
      ::kill(init.pid, SIGKILL);
      WaitGone(init, 2000);
    }
    for (const std::string& m : ns_mounts) ::umount2(m.c_str(), MNT_DETACH);
    if (cgroup_created) {
      CgroupKillAll(config.cgroup);
      (void)RemoveCgroup(config.cgroup);
    }
    if (run_dir_created) {
      (void)RemoveTree(config.run_dir);
    }
    if (disk_dir_created) {
      (void)RemoveTree(config.disk_dir);
    } else {
      if (upper_created) (void)RemoveTree(config.disk_dir + "/upper");
      if (work_created) (void)RemoveTree(config.disk_dir + "/work");
    }
  }
};

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Status MakeDirTracked(const std::string& path, bool* created) {
  *created = !Exists(path);
  return MakeDirs(path);
}

RootPlan MakeRootPlan(const PartitionConfig& c) {
  RootPlan p;
  p.root = c.run_dir + "/root";
  p.overlay_opts = "lowerdir=" + c.base_dir + ",upperdir=" + c.disk_dir + "/upper,workdir=" + c.disk_dir + "/work";
  for (const auto& [inside, content] : c.files) {
    FileToWrite f;
    std::string rel = inside;
    while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
    std::vector<std::string> parts = Split(rel, '/');
    std::string dir = p.root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (parts[i].empty()) continue;
      dir += "/" + parts[i];
      f.dirs.push_back(dir);
    }
    f.path = p.root + "/" + rel;
    f.content = content;
    p.files.push_back(std::move(f));
  }
  p.binds_ro.push_back({"/usr", p.root + "/usr"});
  for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    struct stat st;
    std::string machine = std::string("/") + top;
    // A split-/usr machine: the base has an empty directory, filled by a read-only bind.
    if (::lstat(machine.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && Exists(c.base_dir + "/" + top))
      p.binds_ro.push_back({machine, p.root + "/" + top});
  }
  if (!c.tools_dir.empty()) {
    p.mount_dirs.push_back(p.root + "/opt");
    p.mount_dirs.push_back(p.root + kToolsInside);
    p.binds_ro.push_back({c.tools_dir, p.root + kToolsInside});
  }
  if (c.allow_nesting) {
    p.mount_dirs.push_back(p.root + "/var/lib");
    p.mount_dirs.push_back(p.root + kStateInside);
    p.binds_rw.push_back({c.disk_dir + "/lab", p.root + kStateInside});
  }
  // The partition's own cgroup subtree at the usual place: a lab inside makes its cgroups below
  // it, so their limits nest under the partition's for real.
  const CgroupSetup& cg = Cgroups();
  if (cg.v2) {
    p.cgroup_binds.push_back({cg.v2_root + "/" + c.cgroup, p.root + cg.v2_root});
  } else {
    p.cgroup_tmpfs = p.root + "/sys/fs/cgroup";
    std::vector<std::string> seen;
    for (const auto& [controller, mount_point] : cg.v1) {
      if (mount_point.rfind("/sys/fs/cgroup/", 0) != 0) continue;
      if (std::find(seen.begin(), seen.end(), mount_point) != seen.end()) continue;  // co-mounted
      seen.push_back(mount_point);
      p.cgroup_dirs.push_back(p.root + mount_point);
      p.cgroup_binds.push_back({mount_point + "/" + c.cgroup, p.root + mount_point});
    }
  }
  p.proc = p.root + "/proc";
  p.sys = p.root + "/sys";
  p.dev = p.root + "/dev";
  p.pts = p.dev + "/pts";
  p.shm = p.dev + "/shm";
  p.run = p.root + "/run";
  for (const char* n : {"null", "zero", "full", "random", "urandom", "tty"})
    p.dev_nodes.push_back({std::string("/dev/") + n, p.dev + "/" + n});
  p.dev_links = {{"pts/ptmx", p.dev + "/ptmx"},
                 {"/proc/self/fd", p.dev + "/fd"},
                 {"/proc/self/fd/0", p.dev + "/stdin"},
                 {"/proc/self/fd/1", p.dev + "/stdout"},
                 {"/proc/self/fd/2", p.dev + "/stderr"}};
  p.hostname = c.machine;
  return p;
}

Result<ProcessId> StartProcesses(const PartitionConfig& c, StartUndo& undo) {
  RootPlan plan = MakeRootPlan(c);
  std::vector<std::string> procs_files = CgroupProcsFiles(c.cgroup);
  if (!c.allow_nesting || !c.parent_allows_nesting) {
    auto filter = NoNestingFilter::Get();
    if (!filter.ok()) return filter.status();
    if (!c.allow_nesting) plan.own_filter = *filter;
    if (!c.parent_allows_nesting && !c.parent_run_dir.empty()) plan.parent_filter = *filter;
  }

  UniqueFd init_fd(::open(c.init_path.c_str(), O_PATH | O_CLOEXEC));
  if (!init_fd.valid()) return ErrnoStatus("open init " + c.init_path);
  std::vector<UniqueFd> parent_ns;
  std::vector<int> parent_ns_fds;
  if (!c.parent_run_dir.empty()) {
    for (const char* kind : {"net", "uts", "ipc", "pid"}) {
      UniqueFd fd(::open(NsPath(c.parent_run_dir, kind).c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd.valid()) return ErrnoStatus("open the parent partition's " + std::string(kind) + " namespace");
      parent_ns_fds.push_back(fd.get());
      parent_ns.push_back(std::move(fd));
    }
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return ErrnoStatus("socketpair");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  int one = 1;
  if (::setsockopt(ours.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) return ErrnoStatus("SO_PASSCRED");
  plan.sock = theirs.get();
  plan.init_fd = init_fd.get();
  std::vector<int> keep = {theirs.get(), init_fd.get()};
  keep.insert(keep.end(), parent_ns_fds.begin(), parent_ns_fds.end());

  pid_t w = ::fork();
  if (w < 0) return ErrnoStatus("fork");
  if (w == 0) RunW(plan, procs_files, parent_ns_fds, keep.data(), static_cast<int>(keep.size()));
  theirs.Reset();
  init_fd.Reset();

  auto reap_w = [&](bool kill_first) {
    if (kill_first) ::kill(w, SIGKILL);
    int status = 0;
    while (::waitpid(w, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  };
  auto deadline = Clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  Received ready = ReceiveReport(ours.get(), deadline);
  if (ready.kind != Received::kReport) {
    int status = reap_w(ready.kind == Received::kTimeout);
    if (ready.kind == Received::kTimeout) return Status::Error("start: no answer from the new partition within 10 s");
    return Status::Error("start: the worker exited (status " + std::to_string(status) + ") without reporting");
  }
  if (ready.report.err != 0) {
    reap_w(false);
    if (plan.parent_filter && ready.report.err == EPERM && !std::strcmp(ready.report.step, kCreateNamespaces)) {
      undo.refused = true;
      std::string parent = c.parent_run_dir;
      while (!parent.empty() && parent.back() == '/') parent.pop_back();
      return Status::Error(NotExposedMessage(parent.substr(parent.rfind('/') + 1)));
    }
    return Status::Error(std::string(ready.report.step) + ": " + ErrnoText(ready.report.err));
  }
  undo.init.pid = ready.pid;
  undo.init.start_time = ProcessStartTime(ready.pid);
  if (ready.pid <= 0) {
    reap_w(false);
    return Status::Error("start: the new partition's init reported no pid");
  }
  // The socket closes when the exec succeeds; a report means it failed.
  Received exec = ReceiveReport(ours.get(), deadline);
  reap_w(false);
  if (exec.kind == Received::kReport)
    return Status::Error(std::string(exec.report.step) + ": " + ErrnoText(exec.report.err));
  if (exec.kind == Received::kTimeout) return Status::Error("start: lab-init did not start within 10 s");
  // Record the start time after the exec (exec keeps it, but the pid must be the live init).
  undo.init.start_time = ProcessStartTime(ready.pid);
  if (undo.init.start_time == 0 || ProcessState(ready.pid) == 'Z')
    return Status::Error("start: lab-init exited right after starting");
  return undo.init;
}

}  // namespace

// ---- child-side helpers ----

void ChildSendReport(int fd, const char* step, int err) {
  ChildReport r;
  r.err = err;
  size_t i = 0;
  for (; step[i] && i + 1 < sizeof r.step; ++i) r.step[i] = step[i];
  r.step[i] = '\0';
  ssize_t ignored = ::send(fd, &r, sizeof r, MSG_NOSIGNAL);
  (void)ignored;
}

void ChildFail(int fd, const char* step, int code) {
  ChildSendReport(fd, step, errno ? errno : EIO);
  ::_exit(code);
}

int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

Received ReceiveReport(int sock, Clock::time_point deadline) {
  Received r;
  for (;;) {
    pollfd pfd{sock, POLLIN, 0};
    int n = ::poll(&pfd, 1, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.kind = Received::kTimeout;
      return r;
    }
    iovec iov{&r.report, sizeof r.report};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) {
      r.kind = Received::kEof;
      return r;
    }
    r.kind = Received::kReport;
    r.report.step[sizeof r.report.step - 1] = '\0';
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        r.pid = cred.pid;
      }
    }
    return r;
  }
}

void ChildCloseFdsExcept(const int* keep, int n) {
  // close_range over the gaps between the kept descriptors (sorted here, n is tiny).
  int sorted[16];
  int m = 0;
  for (int i = 0; i < n && m < 16; ++i)
    if (keep[i] >= 3) sorted[m++] = keep[i];
  for (int i = 1; i < m; ++i)
    for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; --j) std::swap(sorted[j - 1], sorted[j]);
  unsigned int from = 3;
  for (int i = 0; i < m; ++i) {
    unsigned int k = static_cast<unsigned int>(sorted[i]);
    if (k > from) ::syscall(SYS_close_range, from, k - 1, 0);
    if (k + 1 > from) from = k + 1;
  }
  ::syscall(SYS_close_range, from, ~0U, 0);
}

bool ChildJoinCgroup(const std::vector<std::string>& procs_files) {
  for (const std::string& f : procs_files) {
    int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, "0", 1) == 1;
    int err = errno;
    ::close(fd);
    if (!ok) {
      errno = err;
      return false;
    }
  }
  return true;
}

// ---- processes ----

char ProcessState(int pid) {
  if (pid <= 0) return 0;
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return 0;
  size_t close = stat->rfind(')');
  if (close == std::string::npos || close + 2 >= stat->size()) return 0;
  return (*stat)[close + 2];
}

uint64_t ProcessStartTime(int pid) {
  if (pid <= 0) return 0;
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return 0;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return 0;
  // After "(comm)": field 3 (state) ... field 22 (starttime) is the 20th.
  std::vector<std::string> fields = Split(std::string_view(*stat).substr(close + 2), ' ');
  if (fields.size() < 20) return 0;
  return std::strtoull(fields[19].c_str(), nullptr, 10);
}

bool IsAlive(const ProcessId& p) {
  // A zombie has already released its namespaces: it counts as gone.
  return p.pid > 0 && ProcessStartTime(p.pid) == p.start_time && p.start_time != 0 && ProcessState(p.pid) != 'Z';
}

bool WaitGone(const ProcessId& p, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status;
    ::waitpid(p.pid, &status, WNOHANG);  // reaps it when it is ours; ECHILD otherwise
    if (!IsAlive(p)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string NsPath(const std::string& run_dir, const std::string& kind) { return run_dir + "/ns/" + kind; }

// ---- start / destroy ----

Result<ProcessId> StartPartition(const PartitionConfig& config) {
  const std::string what = "partition '" + config.machine + "'";
  StartUndo undo{config};
  auto fail = [&](const Status& s) -> Result<ProcessId> {
    undo.Run();
    return undo.refused ? s : s.Prefixed(what);
  };
  if (config.run_dir.empty() || config.disk_dir.empty() || config.base_dir.empty() || config.cgroup.empty() ||
      config.machine.empty() || config.init_path.empty())
    return Status::Error(what + ": start: run_dir, disk_dir, base_dir, cgroup, machine and init_path are required");
  if (!Exists(config.base_dir)) return Status::Error(what + ": base layer " + config.base_dir + " does not exist");
  // Handles still mounted: a previous start was not destroyed; stacking new ones would leak it.
  if (IsMountPoint(NsPath(config.run_dir, "net")) || IsMountPoint(NsPath(config.run_dir, "mnt")))
    return Status::Error(what + ": already has namespace handles under " + config.run_dir +
                         "; destroy it first");

  Status s = MakeDirTracked(config.run_dir, &undo.run_dir_created);
  if (s.ok()) s = MakeDirs(config.run_dir + "/ns");
  if (s.ok()) s = MakeDirs(config.run_dir + "/root");
  if (s.ok()) s = MakeDirTracked(config.disk_dir, &undo.disk_dir_created);
  if (s.ok()) s = MakeDirTracked(config.disk_dir + "/upper", &undo.upper_created);
  if (s.ok()) s = MakeDirTracked(config.disk_dir + "/work", &undo.work_created);
  // lab's state inside (/var/lib/lab): part of the VM's disk, removed with it.
  if (s.ok() && config.allow_nesting) s = MakeDirs(config.disk_dir + "/lab", 0700);
  if (!s.ok()) return fail(s.Prefixed("create directories"));
  s = WriteWholeFile(config.run_dir + "/" + kNestingFile, config.allow_nesting ? "1\n" : "0\n");
  if (!s.ok()) return fail(s.Prefixed("record nesting"));
  s = CgroupCreate(config.cgroup, config.memory_limit, config.cpu_count, &undo.cgroup_created);
  if (!s.ok()) return fail(s);

  Result<ProcessId> init = StartProcesses(config, undo);
  if (!init.ok()) return fail(init.status());

  std::string proc_ns = "/proc/" + std::to_string(init->pid) + "/ns/";
  for (const char* kind : kNsKinds) {
    std::string handle = NsPath(config.run_dir, kind);
    if (!Exists(handle) && !TouchFile(handle.c_str())) return fail(ErrnoStatus("create namespace handle " + handle));
    if (::mount((proc_ns + kind).c_str(), handle.c_str(), nullptr, MS_BIND, nullptr) != 0)
      return fail(ErrnoStatus("bind namespace handle " + handle));
    undo.ns_mounts.push_back(handle);
  }
  // The handles were taken from this very process: it must still be the init we started.
  if (!IsAlive(*init)) return fail(Status::Error("lab-init exited while its namespaces were being bound"));
  return init;
}

Status DestroyPartition(const PartitionConfig& config, const std::optional<ProcessId>& init) {
  const std::string what = "partition '" + config.machine + "': destroy";
  Status first;
  auto note = [&](const Status& s) {
    if (!s.ok() && first.ok()) first = s.Prefixed(what);
  };
  // A saved (frozen) partition's processes do not die of SIGKILL until thawed (cgroup v1).
  if (!config.cgroup.empty()) note(ThawCgroupTree(config.cgroup));
  if (init && IsAlive(*init)) {
    // Killing pid 1 of a PID namespace ends every process in it, nested partitions included.
    if (::kill(init->pid, SIGKILL) != 0 && errno != ESRCH) note(ErrnoStatus("kill init"));
    if (!WaitGone(*init, 2000)) note(Status::Error("init (pid " + std::to_string(init->pid) + ") did not exit"));
  }
  if (!config.run_dir.empty()) {
    for (const char* kind : kNsKinds) {
      std::string handle = NsPath(config.run_dir, kind);
      // Loop: an interrupted run may have stacked handles.
      int rc = 0;
      for (int i = 0; i < 8 && rc == 0; ++i) rc = ::umount2(handle.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      if (rc != 0 && errno != EINVAL && errno != ENOENT) note(ErrnoStatus("unmount " + handle));
      if (::unlink(handle.c_str()) != 0 && errno != ENOENT) note(ErrnoStatus("remove " + handle));
    }
    std::string root = config.run_dir + "/root";
    if (Exists(root) && IsMountPoint(root) && ::umount2(root.c_str(), MNT_DETACH) != 0)
      note(ErrnoStatus("unmount " + root));
    note(RemoveTree(config.run_dir));
  }
  if (!config.cgroup.empty()) note(RemoveCgroup(config.cgroup));
  if (!config.disk_dir.empty()) note(RemoveTree(config.disk_dir));
  return first;
}

}  // namespace lab::hv::kernel
