// Starting and destroying partitions.
//
// Process tree of a start:
//
//   us ── W (joins the cgroup; enters the parent partition's net/uts/ipc/pid namespaces)
//          └─ (A, nested partitions only: a process in the parent's PID namespace)
//               └─ B = pid 1 of new mnt/net/uts/ipc/pid namespaces: builds the root, pivots,
//                  leaves our session (setsid), execs lab-init
//
// W, A and B share our memory (clone with CLONE_VM | CLONE_VFORK, each on a stack of its own),
// the way posix_spawn does: the calling thread sleeps until W is done, W (or A) until B has
// exec'd or failed. A fork of this multi-threaded process would copy its page tables for each
// start and make every write of ours afterwards a copy-on-write fault with a TLB shootdown on
// every CPU: a third of the CPU time of bringing up 500 VMs. So W, A and B run only syscalls on
// data prepared before the clone, never allocate or lock, and write nothing of ours but errno
// (the sleeping thread's). Signals stay blocked from before the clone through B's exec (which
// puts caught signals back to their defaults), so no handler of ours ever runs in W, A or B.
//
// B reports over a SOCK_SEQPACKET socketpair: one message whose SCM_CREDENTIALS the kernel
// translates into our PID namespace (that is how we learn its host pid, however deep the
// nesting), then the socket closes on exec (CLOEXEC), which confirms the exec. Any child that
// fails sends the step and errno instead, so errors read "partition 'X': mount overlay root: ...".
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

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
  bool runtime = false;           // into the partition's /run, once mounted (kRuntimeConfigFiles)
};

struct BindRo {
  std::string source, target;
};

struct RootPlan {
  std::string root;               // where B mounts the new root: the base layer's directory (see MakeRootPlan)
  std::string overlay_opts;
  std::vector<FileToWrite> files;
  std::vector<std::string> mount_dirs;  // mount points to create in the root, outermost first
  std::vector<BindRo> binds_ro;   // /usr, /bin... on a split-/usr machine, /opt/lab
  std::vector<BindRo> binds_rw;   // /var/lib/lab (lab's state inside a VM that may nest)
  std::string cgroup_tmpfs;       // v1: a tmpfs at /sys/fs/cgroup holding the hierarchies
  std::vector<std::string> cgroup_dirs;
  std::vector<BindRo> cgroup_binds;  // the partition's own cgroup, per hierarchy
  const Confinement* confinement = nullptr;        // B applies it before lab-init
  const NoNestingFilter* parent_filter = nullptr;  // W applies it once inside the parent
  std::string proc, sys, dev, pts, shm, run;
  std::vector<std::string> proc_masked_files;     // /dev/null bound over them
  std::vector<std::string> proc_masked_dirs;      // an empty read-only tmpfs over them
  std::string proc_sys, proc_sys_net;             // /proc/sys read-only, but its own network's sysctls
  std::string ipv6_default_off;                   // written "1" (see RunB)
  struct DevNode {
    std::string path;
    dev_t dev;
    std::string source;  // ours, bound over `path` where we may not mknod (lab inside a VM)
  };
  std::vector<DevNode> dev_nodes;  // made with mknod, as runc does outside a user namespace
  std::vector<std::pair<std::string, std::string>> dev_links;  // target, link path
  std::string hostname;
  int sock = -1;
  int init_fd = -1;
  int builder_mnt_fd = -1;  // W enters it before B is made (BuilderMountNs); -1 = ours
  uint64_t binder_mnt_id = 0;  // our mount namespace's id: the new one must be newer to be bound
  uint64_t newer_than = 0;     // set by W: the id B's mount namespace must be above
  char* a_stack_top = nullptr;
  char* b_stack_top = nullptr;
};

bool TouchFile(const char* path) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

bool MakeMountNsNewerThan(uint64_t ours);

/// Creates `path` (it must not exist) holding `content`; on failure the step, with errno set.
const char* ChildWriteNewFile(const char* path, const std::string& content) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return "write configuration files: create";
  size_t off = 0;
  while (off < content.size()) {
    ssize_t w = ::write(fd, content.data() + off, content.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return "write configuration files: write";  // exiting closes fd
    off += static_cast<size_t>(w);
  }
  ::close(fd);
  return nullptr;
}

/// Writes the files that go to the VM's disk (`runtime` false) or into its /run (true), with
/// their parent directories; fails the start (report on `s`) on any error.
void ChildWriteFiles(int s, std::vector<FileToWrite>& files, bool runtime) {
  for (FileToWrite& f : files) {
    if (f.runtime != runtime) continue;
    for (std::string& d : f.dirs)
      if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) ChildFail(s, "write configuration files: mkdir", 126);
    // Replace rather than write through: the base may hold a symlink here (resolv.conf).
    if (::unlink(f.path.c_str()) != 0 && errno != ENOENT) ChildFail(s, "write configuration files: unlink", 126);
    if (const char* step = ChildWriteNewFile(f.path.c_str(), f.content)) ChildFail(s, step, 126);
  }
}

[[noreturn]] void RunB(RootPlan& p) {
  const int s = p.sock;
  if (!MakeMountNsNewerThan(p.newer_than))
    ChildFail(s, "make a mount namespace the kernel lets us keep a handle of", 126);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ChildFail(s, "make / private", 126);
  // The loopback of the new network namespace up: two ioctls here, where from the parent it took
  // a netlink socket made inside the namespace and two requests.
  {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq lo{};
    std::memcpy(lo.ifr_name, "lo", 3);
    if (fd < 0 || ::ioctl(fd, SIOCGIFFLAGS, &lo) != 0) ChildFail(s, "bring lo up", 126);
    lo.ifr_flags = static_cast<short>(lo.ifr_flags | IFF_UP);
    if (::ioctl(fd, SIOCSIFFLAGS, &lo) != 0) ChildFail(s, "bring lo up", 126);
    ::close(fd);
  }
  if (::mount("overlay", p.root.c_str(), "overlay", 0, p.overlay_opts.c_str()) != 0)
    ChildFail(s, "mount overlay root", 126);
  ChildWriteFiles(s, p.files, false);
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
  // No IPv6 on the partition's interfaces, as Docker leaves a container without an IPv6 network:
  // lab files give IPv4 only, and every new interface's DAD, MLD reports and router
  // solicitations would be flooded to every port of its switch (quadratic in a switch's size).
  // lo, made with the namespace, keeps ::1. Through the partition's own new /proc: the machine's
  // /proc/sys/net has a dentry per network namespace under each name, so every lookup there
  // walks a chain as long as the number of partitions. No such file: a machine without IPv6.
  if (int fd = ::open(p.ipv6_default_off.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
    if (::write(fd, "1", 1) != 1) ChildFail(s, "turn IPv6 off for new interfaces", 126);
    ::close(fd);
  } else if (errno != ENOENT) {
    ChildFail(s, "turn IPv6 off for new interfaces", 126);
  }
  // The kernel's knobs that are the machine's, not the partition's (docs/hardening.md).
  for (std::string& f : p.proc_masked_files)
    if (::mount("/dev/null", f.c_str(), nullptr, MS_BIND, nullptr) != 0 && errno != ENOENT)
      ChildFail(s, "mask /proc files", 126);
  // One empty read-only tmpfs, bound over the others: every superblock a partition has costs
  // the kernel work for each memory cgroup that goes offline (its list_lrus are walked).
  const char* empty = nullptr;
  for (std::string& d : p.proc_masked_dirs) {
    int rc = empty ? ::mount(empty, d.c_str(), nullptr, MS_BIND, nullptr)
                   : ::mount("tmpfs", d.c_str(), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
    if (rc != 0 && errno != ENOENT) ChildFail(s, "mask /proc directories", 126);
    if (rc == 0 && !empty) empty = d.c_str();
  }
  // /proc/sys/net first (per network namespace: the partition's own), then /proc/sys over it,
  // recursively so /proc/sys/net stays, and read-only (core_pattern and the like are the machine's).
  if (::mount(p.proc_sys_net.c_str(), p.proc_sys_net.c_str(), nullptr, MS_BIND, nullptr) != 0)
    ChildFail(s, "bind /proc/sys/net", 126);
  if (::mount(p.proc_sys.c_str(), p.proc_sys.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    ChildFail(s, "bind /proc/sys", 126);
  if (::mount(nullptr, p.proc_sys.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0)
    ChildFail(s, "remount /proc/sys read-only", 126);
  // Read-only: what is writable in sysfs is the machine's (power state, module parameters).
  if (::mount("sysfs", p.sys.c_str(), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
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
  for (RootPlan::DevNode& n : p.dev_nodes) {
    if (::mknod(n.path.c_str(), S_IFCHR | 0666, n.dev) == 0) {
      if (::chmod(n.path.c_str(), 0666) != 0) ChildFail(s, "create /dev node", 126);  // past the umask
      continue;
    }
    // No CAP_MKNOD: we are the hypervisor inside a VM, whose own nodes serve.
    if (errno != EPERM || !TouchFile(n.path.c_str())) ChildFail(s, "create /dev node", 126);
    if (::mount(n.source.c_str(), n.path.c_str(), nullptr, MS_BIND, nullptr) != 0) ChildFail(s, "bind /dev node", 126);
  }
  if (::mkdir(p.pts.c_str(), 0755) != 0) ChildFail(s, "mkdir /dev/pts", 126);
  if (::mount("devpts", p.pts.c_str(), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") != 0)
    ChildFail(s, "mount /dev/pts", 126);
  // /dev/shm is a directory of /dev's tmpfs (so nosuid, nodev, noexec, as Docker mounts it), not
  // a superblock of its own.
  if (::mkdir(p.shm.c_str(), 01777) != 0 || ::chmod(p.shm.c_str(), 01777) != 0) ChildFail(s, "mkdir /dev/shm", 126);
  for (auto& [target, link] : p.dev_links)
    if (::symlink(target.c_str(), link.c_str()) != 0) ChildFail(s, "create /dev links", 126);
  if (::mount("tmpfs", p.run.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755") != 0) ChildFail(s, "mount /run", 126);
  ChildWriteFiles(s, p.files, true);
  if (::sethostname(p.hostname.data(), p.hostname.size()) != 0) ChildFail(s, "set hostname", 126);
  // pivot_root(".", "."): the old root ends up stacked on the new one, then is detached.
  if (::chdir(p.root.c_str()) != 0) ChildFail(s, "pivot_root: chdir", 126);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) ChildFail(s, "pivot_root", 126);
  if (::umount2(".", MNT_DETACH) != 0) ChildFail(s, "pivot_root: detach old root", 126);
  if (::chdir("/") != 0) ChildFail(s, "pivot_root: chdir /", 126);
  // A session of its own: Ctrl-C and a hangup reach the terminal's process group, which is
  // lab's; a VM outlives the command that made it.
  if (::setsid() < 0) ChildFail(s, "start a session of its own", 126);
  // init must not hold our terminal or pipes open.
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) ChildFail(s, "open /dev/null", 126);
  ::dup2(null, 0);
  ::dup2(null, 1);
  ::dup2(null, 2);
  // Last: the confinement also refuses the namespace and mount work above.
  if (p.confinement && !p.confinement->ChildApply()) ChildFail(s, "confine the partition (capabilities, seccomp)", 126);
  ChildSendReport(s, "", 0);
  // Every signal stays blocked through the exec, so none of our handlers (in memory B shares
  // until then) can run in B: the exec puts caught signals back to their defaults, and lab-init
  // keeps every signal blocked and takes the ones it acts on synchronously.
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

int RunBEntry(void* plan) { RunB(*static_cast<RootPlan*>(plan)); }

// Makes B, pid 1 of new namespaces; B has exec'd lab-init or failed (and said so) when the
// clone returns. B is not ours to wait for.
[[noreturn]] int RunAEntry(void* arg) {
  RootPlan& plan = *static_cast<RootPlan*>(arg);
  pid_t b = ::clone(RunBEntry, plan.b_stack_top,
                    CLONE_VM | CLONE_VFORK | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID |
                        SIGCHLD,
                    &plan);
  if (b < 0) ChildFail(plan.sock, kCreateNamespaces, 126);
  ::_exit(0);
}

/// What W is given: all of it prepared before the clone.
struct WArgs {
  RootPlan* plan;
  const std::vector<std::string>* procs_files;
  const std::vector<int>* parent_ns;
  const int* keep;
  int nkeep;
};

// W: joins the cgroup (and the parent partition's namespaces), then makes B in new namespaces.
int RunWEntry(void* arg) {
  const WArgs& w = *static_cast<WArgs*>(arg);
  RootPlan& plan = *w.plan;
  const int s = plan.sock;
  ChildCloseFdsExcept(w.keep, w.nkeep);
  if (!ChildJoinCgroup(*w.procs_files)) ChildFail(s, "join cgroup", 126);
  static const int kParentNsTypes[] = {CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID};
  for (size_t i = 0; i < w.parent_ns->size(); ++i)
    if (::setns((*w.parent_ns)[i], kParentNsTypes[i]) != 0)
      ChildFail(s, "enter the parent partition's namespaces", 126);
  if (plan.builder_mnt_fd >= 0 && ::setns(plan.builder_mnt_fd, CLONE_NEWNS) != 0)
    ChildFail(s, "enter the mount namespace partitions are made from", 126);
  // From here on W is the parent's hypervisor, under the parent's rules.
  if (plan.parent_filter && !plan.parent_filter->ChildApply()) ChildFail(s, "apply the parent's nesting filter", 126);
  // The kernel checks the handle's namespace against the binder's only (mnt_ns_loop): ours, not
  // the builder's, which may well be numbered above B's (another CPU's batch) without harm.
  plan.newer_than = plan.binder_mnt_id;
  // Having entered the parent's PID namespace, W's children go there, but the kernel makes a new
  // PID namespace only below the caller's own: A, a child in the parent's, makes B.
  if (!w.parent_ns->empty()) {
    pid_t a = ::clone(RunAEntry, plan.a_stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
    if (a < 0) ChildFail(s, "clone", 126);
    // Reaped here, or it lingers as a zombie in the parent partition until its init reaps it.
    while (::waitpid(a, nullptr, 0) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  RunAEntry(&plan);
}

/// Stacks for W, A and B: one mapping, each with a guard page below it.
class ChildStacks {
 public:
  static constexpr size_t kStack = 256 * 1024;
  static constexpr size_t kGuard = 4096;
  ChildStacks() {
    void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return;
    base_ = static_cast<char*>(p);
    for (int i = 0; i < 3 && base_; ++i)
      if (::mprotect(base_ + i * (kGuard + kStack), kGuard, PROT_NONE) != 0) {
        ::munmap(base_, kSize);
        base_ = nullptr;
      }
  }
  ~ChildStacks() {
    if (base_) ::munmap(base_, kSize);
  }
  ChildStacks(const ChildStacks&) = delete;
  ChildStacks& operator=(const ChildStacks&) = delete;
  bool ok() const { return base_ != nullptr; }
  // Stacks grow down: the top is the end of each.
  char* Top(int i) const { return base_ + (i + 1) * (kGuard + kStack); }

 private:
  static constexpr size_t kSize = 3 * (kGuard + kStack) + kGuard;
  char* base_ = nullptr;
};

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
  // Any directory of B's own mount namespace serves as the mount point of the new root: B pivots
  // into it and detaches the rest. The base layer's directory is there whatever the run root is
  // (B's namespace is copied from one without the run root, see BuilderMountNs) and holds nothing
  // B binds from (the disk's lab/ does), and the overlay took hold of it as its lower layer before
  // covering it, in B's namespace only.
  p.root = c.base_dir;
  // On an image, lab's small layer over the image's layers (topmost first): the machine's own
  // /etc and /usr are nowhere in the overlay.
  std::string lower = c.base_dir;
  for (const auto& layer : c.image_layers) lower += ":" + layer;
  p.overlay_opts = "lowerdir=" + lower + ",upperdir=" + c.disk_dir + "/upper,workdir=" + c.disk_dir + "/work";
  for (const auto& [inside, content] : c.files) {
    FileToWrite f;
    std::string rel = inside;
    while (!rel.empty() && rel.front() == '/') rel.erase(0, 1);
    // A base made by this version links /etc/<name> into /run (kRuntimeConfigFiles); an older
    // base holds the file itself, replaced in the VM's disk as before.
    for (const char* name : kRuntimeConfigFiles) {
      if (rel != std::string("etc/") + name) continue;
      char target[64];
      const std::string link = c.base_dir + "/" + rel, want = std::string("../") + kRuntimeConfigDir + "/" + name;
      ssize_t n = ::readlink(link.c_str(), target, sizeof target);
      if (n > 0 && static_cast<size_t>(n) == want.size() && want.compare(0, want.size(), target, n) == 0) {
        f.runtime = true;
        rel = std::string(kRuntimeConfigDir) + "/" + name;
      }
    }
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
  if (c.image_layers.empty()) p.binds_ro.push_back({"/usr", p.root + "/usr"});
  for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    if (!c.image_layers.empty()) break;
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
  // As container runtimes mask them (runc's masked and read-only paths).
  for (const char* f : {"sysrq-trigger", "kcore", "kmsg", "keys", "timer_list", "sched_debug", "latency_stats",
                        "timer_stats"})
    p.proc_masked_files.push_back(p.proc + "/" + f);
  for (const char* d : {"acpi", "scsi", "asound"}) p.proc_masked_dirs.push_back(p.proc + "/" + d);
  p.proc_sys = p.proc + "/sys";
  p.proc_sys_net = p.proc + "/sys/net";
  p.ipv6_default_off = p.proc_sys_net + "/ipv6/conf/default/disable_ipv6";
  p.sys = p.root + "/sys";
  p.dev = p.root + "/dev";
  p.pts = p.dev + "/pts";
  p.shm = p.dev + "/shm";
  p.run = p.root + "/run";
  // The machine's own numbers for them (devices.txt: 1:3, 1:5, 1:7, 1:8, 1:9, 5:0).
  for (const auto& [n, major, minor] : {std::tuple{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8},
                                        {"urandom", 1, 9}, {"tty", 5, 0}})
    p.dev_nodes.push_back({p.dev + "/" + n, makedev(major, minor), std::string("/dev/") + n});
  p.dev_links = {{"pts/ptmx", p.dev + "/ptmx"},
                 {"/proc/self/fd", p.dev + "/fd"},
                 {"/proc/self/fd/0", p.dev + "/stdin"},
                 {"/proc/self/fd/1", p.dev + "/stdout"},
                 {"/proc/self/fd/2", p.dev + "/stderr"}};
  p.hostname = c.hostname.empty() ? c.machine : c.hostname;
  return p;
}

// unshare(CLONE_NEWNS) copies the caller's whole mount table, and ours holds five namespace
// handles per partition under the run root: made from ours, each partition would copy (then make
// private, then detach) the handles of every partition before it. That made a start cost 5-80 ms
// more with 400 partitions up, and a lab's start quadratic in its size. So partitions are made
// from a copy of our mount namespace taken once per process, with the run root detached: none
// of the handles, and nothing B needs (it mounts the new root on the base layer's directory).
//
// Returns a descriptor of that namespace, or -1 when it cannot be made (then ours is used).
int BuilderMountNs(const std::string& run_root) {
  static std::mutex mu;
  static std::map<std::string, int> made;  // run root -> fd, kept for the process's lifetime
  std::lock_guard guard(mu);
  if (auto it = made.find(run_root); it != made.end()) return it->second;
  int fd = -1;
  int ready[2], done[2];
  if (run_root.empty() || run_root.front() != '/' || !IsMountPoint(run_root)) return made[run_root] = -1;
  if (::pipe2(ready, O_CLOEXEC) != 0) return -1;
  if (::pipe2(done, O_CLOEXEC) != 0) {
    ::close(ready[0]), ::close(ready[1]);
    return -1;
  }
  pid_t child = ::fork();
  if (child == 0) {
    // Syscalls only: we may be multi-threaded. Our copies of the parent's ends go first, or the
    // read below would never see the end of the pipe.
    ::close(ready[0]);
    ::close(done[1]);
    // Private first, so the detach stays in the copy.
    char ok = ::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
              ::umount2(run_root.c_str(), MNT_DETACH) == 0;
    ssize_t w = ::write(ready[1], &ok, 1);
    (void)w;
    char c;
    while (::read(done[0], &c, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(done[0]);
  char ok = 0;
  if (child > 0) {
    while (::read(ready[0], &ok, 1) < 0 && errno == EINTR) {
    }
    if (ok) fd = ::open(("/proc/" + std::to_string(child) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
  }
  ::close(ready[0]);
  ::close(done[1]);  // lets the child exit
  if (child > 0)
    while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
    }
  return made[run_root] = fd;
}

Result<ProcessId> StartProcesses(const PartitionConfig& c, StartUndo& undo) {
  RootPlan plan = MakeRootPlan(c);
  std::vector<std::string> procs_files = CgroupProcsFiles(c.cgroup);
  auto confinement = Confinement::Get(c.allow_nesting);
  if (!confinement.ok()) return confinement.status();
  plan.confinement = *confinement;
  if (!c.parent_allows_nesting && !c.parent_run_dir.empty()) {
    auto filter = NoNestingFilter::Get();
    if (!filter.ok()) return filter.status();
    plan.parent_filter = *filter;
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
  plan.builder_mnt_fd = BuilderMountNs(c.run_root);
  plan.binder_mnt_id = OwnMountNsId();
  std::vector<int> keep = {theirs.get(), init_fd.get()};
  if (plan.builder_mnt_fd >= 0) keep.push_back(plan.builder_mnt_fd);
  keep.insert(keep.end(), parent_ns_fds.begin(), parent_ns_fds.end());

  // One set per thread, kept: the clone returns only once W, A and B are done with them (W is
  // a vfork child, and so are A and B of theirs), and mapping them afresh for every start
  // cost a munmap, which in a multi-threaded process flushes the TLB on every CPU running it.
  thread_local ChildStacks stacks;
  if (!stacks.ok()) return ErrnoStatus("map the stacks of the partition's first processes");
  plan.a_stack_top = stacks.Top(1);
  plan.b_stack_top = stacks.Top(2);
  WArgs wargs{&plan, &procs_files, &parent_ns_fds, keep.data(), static_cast<int>(keep.size())};
  sigset_t all, ours_mask;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &ours_mask);
  // Returns once W has exited: by then B has exec'd lab-init or failed.
  pid_t w = ::clone(RunWEntry, stacks.Top(0), CLONE_VM | CLONE_VFORK | SIGCHLD, &wargs);
  const int clone_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &ours_mask, nullptr);
  if (w < 0) return Status::Error("clone: " + ErrnoText(clone_errno));
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
  // The exec keeps the start time: the pid must still be that process, and alive.
  ProcStat now = ReadProcStat(ready.pid);
  if (!now.found || now.start_time != undo.init.start_time || now.state == 'Z')
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

uint64_t ProcessStartTime(int pid) { return ReadProcStat(pid).start_time; }

bool IsAlive(const ProcessId& p) {
  // A zombie has already released its namespaces: it counts as gone, as does one being
  // released ('X', seen only for an instant).
  if (p.pid <= 0 || p.start_time == 0) return false;
  ProcStat now = ReadProcStat(p.pid);
  return now.found && now.start_time == p.start_time && now.state != 'Z' && now.state != 'X';
}

bool WaitGone(const ProcessId& p, int timeout_ms, int pidfd_in) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // A pidfd wakes us the moment the process exits (a PID namespace's init: once all its
  // namespace is gone), where sleeping in steps cost up to a step per partition on teardown.
  // The pid could have been reused before it was opened: the wait is capped and the start time
  // checked again after each wake, so a wrong process only costs the cap.
  UniqueFd opened(pidfd_in < 0 && p.pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)) : -1);
  const int pidfd = pidfd_in >= 0 ? pidfd_in : opened.get();
  for (;;) {
    int status;
    ::waitpid(p.pid, &status, WNOHANG);  // reaps it when it is ours; ECHILD otherwise
    if (!IsAlive(p)) return true;
    if (Clock::now() >= deadline) return false;
    if (pidfd >= 0) {
      pollfd pfd{pidfd, POLLIN, 0};
      ::poll(&pfd, 1, std::min(MsLeft(deadline), 100));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
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
  for (const auto& layer : config.image_layers)
    if (!Exists(layer))
      return Status::Error(what + ": its image's layer " + layer +
                           " is not in the image cache any more; lab up makes the image again and remakes the VM");
  // Handles still mounted: a previous start was not destroyed; stacking new ones would leak it.
  if (IsMountPoint(NsPath(config.run_dir, "net")) || IsMountPoint(NsPath(config.run_dir, "mnt")))
    return Status::Error(what + ": already has namespace handles under " + config.run_dir +
                         "; destroy it first");

  Status s = MakeDirTracked(config.run_dir, &undo.run_dir_created);
  // The run directory is a small tmpfs of its own: the handles, the nesting record and whatever
  // else the partition keeps at run time go in one umount at teardown (one RCU grace period). B
  // does not see it: it builds the root from a mount namespace made earlier without the run root.
  if (s.ok() && IsMountPoint(config.run_dir) && ::umount2(config.run_dir.c_str(), MNT_DETACH) != 0)
    s = ErrnoStatus("detach the leftover run directory " + config.run_dir);
  if (s.ok()) {
    if (::mount("tmpfs", config.run_dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=755,size=64k,nr_inodes=64") != 0)
      s = ErrnoStatus("mount the run directory " + config.run_dir);
    else
      undo.ns_mounts.push_back(config.run_dir);
  }
  if (s.ok()) s = MakeDirs(config.run_dir + "/ns");
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

  // The handles live on the run directory's tmpfs: the teardown detaches it with the five
  // handles in one umount, one RCU grace period instead of five (every umount waits for one).
  std::string proc_ns = "/proc/" + std::to_string(init->pid) + "/ns/";
  for (const char* kind : kNsKinds) {
    std::string handle = NsPath(config.run_dir, kind);
    if (!Exists(handle) && !TouchFile(handle.c_str())) return fail(ErrnoStatus("create namespace handle " + handle));
    if (::mount((proc_ns + kind).c_str(), handle.c_str(), nullptr, MS_BIND, nullptr) != 0)
      return fail(ErrnoStatus("bind namespace handle " + handle));
  }
  // The handles were taken from this very process: it must still be the init we started.
  if (!IsAlive(*init)) return fail(Status::Error("lab-init exited while its namespaces were being bound"));
  return init;
}

namespace {

template <typename Note>
void DetachOlderRunDir(const std::string& run_dir, Note& note) {
  std::string holder = run_dir + "/ns";
  if (IsMountPoint(holder) && ::umount2(holder.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
    note(ErrnoStatus("unmount " + holder));
  for (const char* kind : kNsKinds) {
    std::string handle = NsPath(run_dir, kind);
    // Loop: an interrupted run may have stacked handles.
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; ++i) rc = ::umount2(handle.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    if (rc != 0 && errno != EINVAL && errno != ENOENT) note(ErrnoStatus("unmount " + handle));
    if (::unlink(handle.c_str()) != 0 && errno != ENOENT) note(ErrnoStatus("remove " + handle));
  }
  std::string root = run_dir + "/root";
  if (Exists(root) && IsMountPoint(root) && ::umount2(root.c_str(), MNT_DETACH) != 0)
    note(ErrnoStatus("unmount " + root));
}

}  // namespace

Status DestroyPartition(const PartitionConfig& config, const std::optional<ProcessId>& init) {
  const std::string what = "partition '" + config.machine + "': destroy";
  Status first;
  auto note = [&](const Status& s) {
    if (!s.ok() && first.ok()) first = s.Prefixed(what);
  };
  // A saved (frozen) partition's processes do not die of SIGKILL until thawed (cgroup v1).
  if (!config.cgroup.empty() && !config.thawed_by_caller) note(ThawCgroupTree(config.cgroup));
  if (config.hold_network && !config.run_dir.empty()) {
    int net = ::open(NsPath(config.run_dir, "net").c_str(), O_RDONLY | O_CLOEXEC);
    if (net >= 0) config.hold_network(net);
  }
  if (init && IsAlive(*init)) {
    // Killing pid 1 of a PID namespace ends every process in it, nested partitions included.
    if (::kill(init->pid, SIGKILL) != 0 && errno != ESRCH) note(ErrnoStatus("kill init"));
    if (!WaitGone(*init, 2000)) note(Status::Error("init (pid " + std::to_string(init->pid) + ") did not exit"));
  }
  if (!config.run_dir.empty()) {
    // One detach for the run directory's tmpfs and the handles on it (looped: a start killed
    // at the wrong moment may have stacked one).
    bool tmpfs = false;
    for (int i = 0; i < 8 && IsMountPoint(config.run_dir); ++i) {
      tmpfs = true;
      if (::umount2(config.run_dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
        note(ErrnoStatus("unmount " + config.run_dir));
        break;
      }
    }
    // A partition started by an older lab: the handles' tmpfs at ns/, or the handles directly on
    // the run directory, and the root's mount point beside them.
    if (!tmpfs) DetachOlderRunDir(config.run_dir, note);
    note(RemoveTree(config.run_dir));
  }
  if (!config.cgroup.empty() && !config.keep_cgroup_on_destroy) note(RemoveCgroup(config.cgroup));
  if (!config.disk_dir.empty()) note(RemoveTree(config.disk_dir));
  return first;
}

}  // namespace lab::hv::kernel
