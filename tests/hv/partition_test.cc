#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"
#include "tests/hv/partition_fixture.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

using lab::testing::MountsUnder;
using lab::testing::PartitionPlayground;

bool PathExists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// Directories of a cgroup in every hierarchy this machine has.
std::vector<std::string> CgroupDirsOf(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  if (s.v2) return {s.v2_root + "/" + relative};
  std::vector<std::string> out;
  for (const auto& [controller, mount_point] : s.v1) out.push_back(mount_point + "/" + relative);
  return out;
}

std::string ListDir(const std::string& path) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return Join(names, " ");
}

// Pids visible in the /proc of the calling process's mount namespace.
std::string ProcPids() {
  std::vector<std::string> pids;
  for (const std::string& n : Split(ListDir("/proc"), ' '))
    if (!n.empty() && std::all_of(n.begin(), n.end(), ::isdigit)) pids.push_back(n);
  return Join(pids, " ");
}

std::string StatusField(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return Trim(line.substr(field.size() + 1));
  return "";
}

void RequireNothingLeft(const PartitionPlayground& pg, const PartitionConfig& c, const ProcessId& init) {
  for (const char* kind : {"net", "mnt", "uts", "ipc", "pid"}) CHECK_FALSE(PathExists(NsPath(c.run_dir, kind)));
  CHECK_FALSE(PathExists(c.run_dir));
  CHECK_FALSE(PathExists(c.disk_dir));
  for (const std::string& d : CgroupDirsOf(c.cgroup)) CHECK_FALSE(PathExists(d));
  CHECK(MountsUnder(pg.run_root()).empty());
  CHECK_FALSE(IsAlive(init));
}

TEST_CASE("A partition has its own hostname, network, PIDs, configuration and writable layer", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("alpha");
  c.memory_limit = 256ull << 20;
  c.cpu_count = 1;
  auto t0 = std::chrono::steady_clock::now();
  ProcessId init = pg.Start(c);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  WARN("StartPartition took " << ms << " ms; lab-init VmRSS " << StatusField(init.pid, "VmRSS") << ", RssAnon "
                               << StatusField(init.pid, "RssAnon"));

  REQUIRE(IsAlive(init));
  CHECK(StatusField(init.pid, "Name") == "lab-init");

  auto hostname = RunInPartition(c.run_dir, [] {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return std::string(buf);
  }, 5000);
  REQUIRE(hostname.ok());
  CHECK(*hostname == "alpha");

  auto links = RunInPartition(c.run_dir, [] { return ListDir("/sys/class/net"); }, 5000);
  REQUIRE(links.ok());
  CHECK(*links == "lo");
  auto lo_flags =
      RunInPartition(c.run_dir, [] { return Trim(ReadFile("/sys/class/net/lo/flags").value_or("")); }, 5000);
  REQUIRE(lo_flags.ok());
  CHECK((std::stoul(*lo_flags, nullptr, 16) & 0x1) == 0x1);  // IFF_UP
  // Its own /dev: the usual character devices, usable by anyone, and nothing of the machine's.
  auto dev = RunInPartition(c.run_dir, [] {
    std::string out;
    for (const char* n : {"null", "zero", "full", "random", "urandom", "tty"}) {
      struct stat st {};
      if (::stat((std::string("/dev/") + n).c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) return std::string("no ") + n;
      out += std::string(n) + "=" + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)) + ":" +
             std::to_string(st.st_mode & 07777) + " ";
    }
    int fd = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
    char buf[4] = {1, 1, 1, 1};
    bool zeros = fd >= 0 && ::read(fd, buf, sizeof buf) == 4 && !buf[0] && !buf[3];
    if (fd >= 0) ::close(fd);
    fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    bool sink = fd >= 0 && ::write(fd, "x", 1) == 1;
    if (fd >= 0) ::close(fd);
    return out + (zeros ? "zeros " : "") + (sink ? "sink " : "") + ListDir("/dev");
  }, 5000);
  REQUIRE(dev.ok());
  CHECK(*dev ==
        "null=1:3:438 zero=1:5:438 full=1:7:438 random=1:8:438 urandom=1:9:438 tty=5:0:438 zeros sink "
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero");
  // /dev/shm: shared memory for anyone (sticky), on /dev's tmpfs. The machine's /proc/acpi (where
  // there is one) is masked by an empty read-only tmpfs.
  auto shm = RunInPartition(c.run_dir, [] {
    struct stat st {};
    if (::stat("/dev/shm", &st) != 0) return std::string("no /dev/shm");
    std::string out = std::to_string(st.st_mode & 07777);
    int fd = ::open("/dev/shm/labtest", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    out += fd >= 0 ? " writable" : " " + ErrnoText(errno);
    if (fd >= 0) ::close(fd);
    if (PathExists("/proc/acpi")) {
      fd = ::open("/proc/acpi/labtest", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      out += " acpi:" + ListDir("/proc/acpi") + ":" + (fd >= 0 ? "writable" : ErrnoText(errno));
      if (fd >= 0) ::close(fd);
    }
    return out;
  }, 5000);
  REQUIRE(shm.ok());
  CHECK(*shm == std::string("1023 writable") + (PathExists("/proc/acpi") ? " acpi::" + ErrnoText(EROFS) : ""));
  // IPv4 only: interfaces made later get no IPv6 (so no DAD, MLD or router solicitations);
  // lo keeps ::1. Skipped on a machine without IPv6.
  if (PathExists("/proc/sys/net/ipv6")) {
    auto ipv6 = RunInPartition(c.run_dir, [] {
      return ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6").value_or("?") +
             ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6").value_or("?");
    }, 5000);
    REQUIRE(ipv6.ok());
    CHECK(*ipv6 == "1\n0\n");
  }

  // The partition's /proc shows its own PID namespace: only its init, as pid 1.
  auto pids = RunInPartition(c.run_dir, [] {
    return ProcPids() + "|" + ReadFile("/proc/1/comm").value_or("?");
  }, 5000);
  REQUIRE(pids.ok());
  CHECK(*pids == "1|lab-init\n");

  auto etc = RunInPartition(c.run_dir, [] { return ReadFile("/etc/hostname").value_or("missing"); }, 5000);
  REQUIRE(etc.ok());
  CHECK(*etc == "alpha\n");

  auto usr = RunInPartition(c.run_dir, [] {
    int fd = ::open("/usr/labtest-write", O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) ::close(fd);
    return fd >= 0 ? std::string("writable") : ErrnoText(errno);
  }, 5000);
  REQUIRE(usr.ok());
  CHECK(*usr == ErrnoText(EROFS));

  REQUIRE(WriteFileInPartition(c.run_dir, "/srv/data/persist.txt", "kept\n").ok());
  CHECK(ReadFile(c.disk_dir + "/upper/srv/data/persist.txt") == std::optional<std::string>("kept\n"));
  // What every start writes (hostname, hosts, resolv.conf) lives in the partition's /run, as
  // a container's does: nothing of it on the VM's disk.
  CHECK_FALSE(PathExists(c.disk_dir + "/upper/etc"));
  auto runtime = RunInPartition(c.run_dir, [] {
    char target[64] = {};
    ssize_t n = ::readlink("/etc/resolv.conf", target, sizeof target - 1);
    return std::string(n > 0 ? target : "?") + " " + ReadFile("/run/lab-etc/hostname").value_or("?");
  }, 5000);
  REQUIRE(runtime.ok());
  CHECK(*runtime == "../run/lab-etc/resolv.conf alpha\n");
  CHECK_FALSE(PathExists(c.base_dir + "/srv/data/persist.txt"));

  auto limit = ReadFile(CgroupMemoryLimitPath(c.cgroup));
  REQUIRE(limit);
  CHECK(Trim(*limit) == std::to_string(256ull << 20));
  // init runs in the partition's cgroup.
  auto cg = ReadFile("/proc/" + std::to_string(init.pid) + "/cgroup");
  REQUIRE(cg);
  CHECK(cg->find("/" + c.cgroup) != std::string::npos);

  REQUIRE(DestroyPartition(c, init).ok());
  RequireNothingLeft(pg, c, init);
  REQUIRE(DestroyPartition(c, init).ok());
}

TEST_CASE("On a base layer from before /etc's files moved to /run, a start writes them into the VM's disk",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("older");
  c.files = {{"/etc/hostname", "older\n"}};
  // The base as an older lab made it: /etc/hostname a file of its own.
  const std::string link = c.base_dir + "/etc/hostname";
  REQUIRE(::unlink(link.c_str()) == 0);
  REQUIRE(WriteFileAtomic(link, "machine\n"));
  ProcessId init = pg.Start(c);
  auto inside = RunInPartition(c.run_dir, [] { return ReadFile("/etc/hostname").value_or("?"); }, 5000);
  REQUIRE(inside.ok());
  CHECK(*inside == "older\n");
  CHECK(ReadFile(c.disk_dir + "/upper/etc/hostname") == std::optional<std::string>("older\n"));
  REQUIRE(DestroyPartition(c, init).ok());
}

TEST_CASE("A nested partition starts inside its parent's PID namespace and below its cgroup", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting nested partitions");
  PartitionPlayground pg;
  PartitionConfig middle = pg.Config("middle");
  middle.memory_limit = 512ull << 20;
  middle.cpu_count = 2;
  PartitionConfig nested = pg.Config("nested1", &middle);
  nested.memory_limit = 128ull << 20;
  nested.cpu_count = 4;  // more than the parent: v1 clamps to the parent's quota
  ProcessId middle_init = pg.Start(middle);
  ProcessId nested_init = pg.Start(nested);
  REQUIRE(IsAlive(nested_init));

  // Host pid, pid in middle, pid 1 in its own namespace.
  std::vector<std::string> nspid = Split(StatusField(nested_init.pid, "NSpid"), '\t');
  REQUIRE(nspid.size() == 3);
  CHECK(nspid[2] == "1");
  auto seen = RunInPartition(middle.run_dir, [] { return ProcPids(); }, 5000);
  REQUIRE(seen.ok());
  CHECK(*seen == "1 " + nspid[1]);

  // The parent sees the nested init through its own /proc: run a command inside the parent.
  CHECK(ExecInPartition(middle.run_dir, middle.cgroup,
                        {"sh", "-c", "grep -q lab-init /proc/" + nspid[1] + "/comm"}).value() == 0);

  auto hostname = RunInPartition(nested.run_dir, [] {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return std::string(buf);
  }, 5000);
  REQUIRE(hostname.ok());
  CHECK(*hostname == "nested1");

  for (const std::string& d : CgroupDirsOf(nested.cgroup)) CHECK(PathExists(d));
  CHECK(nested.cgroup.rfind(middle.cgroup + "/", 0) == 0);
  auto cg = ReadFile("/proc/" + std::to_string(nested_init.pid) + "/cgroup");
  REQUIRE(cg);
  CHECK(cg->find("/" + nested.cgroup) != std::string::npos);

  REQUIRE(DestroyPartition(nested, nested_init).ok());
  CHECK(IsAlive(middle_init));
  REQUIRE(DestroyPartition(middle, middle_init).ok());
  RequireNothingLeft(pg, nested, nested_init);
  RequireNothingLeft(pg, middle, middle_init);
}

TEST_CASE("Destroying a parent ends its nested partitions' processes too", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting nested partitions");
  PartitionPlayground pg;
  PartitionConfig middle = pg.Config("middle");
  PartitionConfig nested = pg.Config("nested1", &middle);
  ProcessId middle_init = pg.Start(middle);
  ProcessId nested_init = pg.Start(nested);
  // Out of order on purpose (an interrupted teardown): killing the parent's init ends the child's.
  REQUIRE(DestroyPartition(middle, middle_init).ok());
  CHECK_FALSE(IsAlive(nested_init));
  REQUIRE(DestroyPartition(nested, nested_init).ok());
  RequireNothingLeft(pg, nested, nested_init);
}

TEST_CASE("A partition's run directory is a tmpfs of its own, holding its namespace handles, gone in one unmount",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("handles");
  ProcessId init = pg.Start(c);
  // The tmpfs and the five handles on it, nothing else of the partition in our namespace (its
  // root is mounted only in its own).
  std::vector<std::string> mounts = MountsUnder(pg.run_root());
  CHECK(std::count(mounts.begin(), mounts.end(), c.run_dir) == 1);
  for (const char* kind : {"net", "mnt", "uts", "ipc", "pid"})
    CHECK(std::count(mounts.begin(), mounts.end(), NsPath(c.run_dir, kind)) == 1);
  CHECK(mounts.size() == 6);
  REQUIRE(::umount2(c.run_dir.c_str(), MNT_DETACH) == 0);
  CHECK(MountsUnder(pg.run_root()).empty());
  CHECK(IsAlive(init));  // the handles keep nothing alive: lab-init does
  // Destroy after its handles are gone: what is already gone is success.
  REQUIRE(DestroyPartition(c, init).ok());
  RequireNothingLeft(pg, c, init);
}

TEST_CASE("ExecInPartition passes the command's exit code through", "[root][hv]") {
  LAB_REQUIRE_ROOT("running commands in a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("exec");
  pg.Start(c);
  auto seven = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "exit 7"});
  REQUIRE(seven.ok());
  CHECK(*seven == 7);
  auto ok = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "test \"$(hostname)\" = exec && test $$ -gt 1"});
  REQUIRE(ok.ok());
  CHECK(*ok == 0);
  auto missing = ExecInPartition(c.run_dir, c.cgroup, {"no-such-command-labtest"});
  REQUIRE(missing.ok());
  CHECK(*missing == 127);
  auto killed = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "kill -9 $$"});
  REQUIRE(killed.ok());
  CHECK(*killed == 128 + SIGKILL);
  auto gone = ExecInPartition(c.run_dir + "-absent", c.cgroup, {"true"});
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.message().find("partition 'exec-absent'") != std::string::npos);
}

TEST_CASE("SpawnInPartition starts a detached process that StopProcess ends", "[root][hv]") {
  LAB_REQUIRE_ROOT("spawning in a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("spawn");
  ProcessId init = pg.Start(c);
  auto p = SpawnInPartition(c.run_dir, c.cgroup, {"sh", "-c", "echo started; exec sleep 1000"}, false,
                            "/var/log/lab/sleep.log");
  REQUIRE(p.ok());
  REQUIRE(IsAlive(*p));
  // Adopted by the partition's init, not by a process of the machine.
  CHECK(StatusField(p->pid, "PPid") == std::to_string(init.pid));
  auto log = RunInPartition(c.run_dir, [] {
    for (int i = 0; i < 200; ++i) {
      auto text = ReadFile("/var/log/lab/sleep.log");
      if (text && !text->empty()) return *text;
      ::usleep(10000);
    }
    return std::string("empty");
  }, 5000);
  REQUIRE(log.ok());
  CHECK(*log == "started\n");
  REQUIRE(StopProcess(*p).ok());
  INFO("after StopProcess, /proc/" << p->pid << "/stat: "
                                    << ReadFile("/proc/" + std::to_string(p->pid) + "/stat").value_or("(none)")
                                    << "; started at " << p->start_time);
  CHECK_FALSE(IsAlive(*p));
  REQUIRE(StopProcess(*p).ok());

  auto missing = SpawnInPartition(c.run_dir, c.cgroup, {"no-such-command-labtest"}, false, "/var/log/x.log");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("No such file") != std::string::npos);
}

/// Children of `parent` that are zombies, seen from the machine.
int ZombieChildren(int parent) {
  int zombies = 0;
  for (const std::string& n : Split(ProcPids(), ' '))
    if (!n.empty() && StatusField(std::stoi(n), "PPid") == std::to_string(parent) &&
        StatusField(std::stoi(n), "State").rfind("Z", 0) == 0)
      ++zombies;
  return zombies;
}

TEST_CASE("A partition's init reaps orphans, ignores other signals from inside and ends on SIGTERM", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("init");
  ProcessId init = pg.Start(c);

  // Orphans (the shell exits before its background children) are adopted and reaped by init.
  auto orphans = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "(sleep 0.1 &); (sleep 0.1 &); (true &); exit 0"});
  REQUIRE(orphans.ok());
  REQUIRE(*orphans == 0);
  bool adopted_then_reaped = false;
  for (int i = 0; i < 300 && !adopted_then_reaped; ++i) {
    ::usleep(10000);
    adopted_then_reaped = i > 20 && ZombieChildren(init.pid) == 0;
  }
  CHECK(adopted_then_reaped);
  CHECK(IsAlive(init));

  // Signals it does not act on change nothing; SIGTERM from inside ends it, and the partition.
  auto others = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "kill -HUP 1 && kill -USR1 1 && kill -QUIT 1"});
  REQUIRE(others.ok());
  CHECK(*others == 0);
  ::usleep(200000);
  CHECK(IsAlive(init));
  auto term = ExecInPartition(c.run_dir, c.cgroup, {"sh", "-c", "kill -TERM 1"});
  REQUIRE(term.ok());
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    ::waitpid(init.pid, nullptr, WNOHANG);
    gone = !IsAlive(init);
    if (!gone) ::usleep(10000);
  }
  CHECK(gone);
}

TEST_CASE("Destroy keeps an emptied cgroup for the caller when asked, and removes the rest", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("kept");
  c.keep_cgroup_on_destroy = true;
  ProcessId init = pg.Start(c);
  REQUIRE(DestroyPartition(c, init).ok());
  CHECK_FALSE(IsAlive(init));
  CHECK_FALSE(PathExists(c.run_dir));
  CHECK_FALSE(PathExists(c.disk_dir));
  for (const std::string& d : CgroupDirsOf(c.cgroup)) {
    CHECK(PathExists(d));
    CHECK(Trim(ReadFile(d + "/cgroup.procs").value_or("x")).empty());
  }
  REQUIRE(RemoveCgroup(c.cgroup).ok());
  c.keep_cgroup_on_destroy = false;
  RequireNothingLeft(pg, c, init);
}

TEST_CASE("Destroy hands the partition's network namespace to hold_network, and only that", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("held");
  ProcessId init = pg.Start(c);
  struct stat want {};
  REQUIRE(::stat(NsPath(c.run_dir, "net").c_str(), &want) == 0);
  std::vector<int> held;
  c.hold_network = [&](int fd) { held.push_back(fd); };
  REQUIRE(DestroyPartition(c, init).ok());
  c.hold_network = nullptr;
  RequireNothingLeft(pg, c, init);
  // Nothing else of the partition is left; the descriptor is its network namespace.
  REQUIRE(held.size() == 1);
  struct stat got {};
  REQUIRE(::fstat(held[0], &got) == 0);
  CHECK(got.st_ino == want.st_ino);
  CHECK(got.st_dev == want.st_dev);
  ::close(held[0]);
}

TEST_CASE("RemoveIdleCgroup removes an empty cgroup tree and stops at one that holds a process", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig parent = pg.Config("idle-parent");
  PartitionConfig child = pg.Config("idle-child", &parent);
  ProcessId p = pg.Start(parent);
  ProcessId c = pg.Start(child);
  // The child's init lives in its own cgroup below the parent's: neither may go, and neither
  // process is touched.
  CHECK_FALSE(RemoveIdleCgroup(parent.cgroup));
  CHECK(IsAlive(p));
  CHECK(IsAlive(c));
  for (const std::string& d : CgroupDirsOf(child.cgroup)) CHECK(PathExists(d));
  child.keep_cgroup_on_destroy = parent.keep_cgroup_on_destroy = true;
  REQUIRE(DestroyPartition(child, c).ok());
  REQUIRE(DestroyPartition(parent, p).ok());
  for (const std::string& d : CgroupDirsOf(child.cgroup)) REQUIRE(PathExists(d));
  // Emptied: the whole tree goes, deepest first, in every hierarchy.
  CHECK(RemoveIdleCgroup(parent.cgroup));
  for (const std::string& d : CgroupDirsOf(parent.cgroup)) CHECK_FALSE(PathExists(d));
  CHECK(RemoveIdleCgroup(parent.cgroup));  // already gone
}

TEST_CASE("The run root is a private tmpfs, released once empty", "[root][hv]") {
  LAB_REQUIRE_ROOT("mounting the run root");
  std::string dir = lab::testing::TempDir("labtest-runroot");
  std::string root = dir + "/run";
  REQUIRE(EnsureRunRoot(root).ok());
  REQUIRE(EnsureRunRoot(root).ok());  // idempotent: not stacked
  struct statfs fs {};
  REQUIRE(::statfs(root.c_str(), &fs) == 0);
  CHECK(fs.f_type == TMPFS_MAGIC);
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int mounted = 0;
  while (std::getline(in, line)) {
    auto fields = Split(line, ' ');
    if (fields.size() > 6 && fields[4] == root) {
      ++mounted;
      CHECK(line.find("shared:") == std::string::npos);  // private: handles do not propagate
    }
  }
  CHECK(mounted == 1);
  // Something in it: kept.
  REQUIRE(MakeDirs(root + "/some-lab").ok());
  REQUIRE(ReleaseRunRoot(root).ok());
  CHECK(IsMountPoint(root));
  REQUIRE(::rmdir((root + "/some-lab").c_str()) == 0);
  REQUIRE(ReleaseRunRoot(root).ok());
  CHECK_FALSE(PathExists(root));
  std::filesystem::remove_all(dir);
}

TEST_CASE("A failed start names the machine and the step and leaves nothing behind", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  SECTION("inside the new partition") {
    PartitionConfig c = pg.Config("broken");
    c.files.push_back({"/etc/passwd/inner", "x"});  // a file where a directory is needed
    auto init = StartPartition(c);
    REQUIRE_FALSE(init.ok());
    CHECK(init.message() == "partition 'broken': write configuration files: unlink: Not a directory");
    RequireNothingLeft(pg, c, ProcessId{});
  }
  SECTION("before any process") {
    PartitionConfig c = pg.Config("noinit");
    c.init_path = pg.dir() + "/no-such-init";
    auto init = StartPartition(c);
    REQUIRE_FALSE(init.ok());
    CHECK(init.message().rfind("partition 'noinit': open init", 0) == 0);
    RequireNothingLeft(pg, c, ProcessId{});
  }
}

// A hypervisor inside a VM starts partitions from a mount namespace made earlier, maybe on another
// CPU. Some kernels number mount namespaces from per-CPU batches, and refuse to bind a handle of a
// namespace numbered below the caller's: the start must still work from every CPU to every CPU.
TEST_CASE("A partition starts from a mount namespace made on any CPU, on any CPU", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  cpu_set_t allowed;
  REQUIRE(::sched_getaffinity(0, sizeof allowed, &allowed) == 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  if (cpus.size() < 2) WARN("one CPU only: the cross-CPU case cannot happen here");
  PartitionPlayground pg;
  auto pin = [](int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return ::sched_setaffinity(0, sizeof one, &one) == 0;
  };
  int n = 0;
  for (int made_on : cpus)
    for (int start_on : cpus) {
      INFO("mount namespace made on CPU " << made_on << ", partition started on CPU " << start_on);
      PartitionConfig c = pg.Config("cpu" + std::to_string(n++));
      int p[2];
      REQUIRE(::pipe(p) == 0);
      pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        ::close(p[0]);
        std::string out;
        if (!pin(made_on) || ::unshare(CLONE_NEWNS) != 0 ||
            ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 || !pin(start_on)) {
          out = "setup: " + std::string(std::strerror(errno));
        } else {
          auto init = StartPartition(c);
          out = init.ok() ? "" : init.message();
          Status d = DestroyPartition(c, init.ok() ? std::optional<ProcessId>(*init) : std::nullopt);
          if (out.empty() && !d.ok()) out = d.message();
        }
        if (!out.empty() && ::write(p[1], out.data(), out.size()) < 0) ::_exit(2);
        ::_exit(out.empty() ? 0 : 1);
      }
      ::close(p[1]);
      std::string out;
      char buf[512];
      for (ssize_t r; (r = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, r);
      ::close(p[0]);
      int status = 0;
      ::waitpid(child, &status, 0);
      CHECK(out == "");
      CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
      (void)DestroyPartition(c, std::nullopt);  // what the child could not remove, if it failed
    }
}

TEST_CASE("RunInPartition gives up after its timeout", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("slow");
  pg.Start(c);
  auto r = RunInPartition(c.run_dir, [] {
    ::sleep(10);
    return std::string("late");
  }, 200);
  REQUIRE_FALSE(r.ok());
  CHECK(r.message() == "partition 'slow': timed out after 200 ms");
}

TEST_CASE("Partitions start and stop concurrently from several threads", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  std::vector<PartitionConfig> configs;
  for (int i = 0; i < 4; ++i) configs.push_back(pg.Config("par" + std::to_string(i)));
  std::vector<Result<ProcessId>> results(configs.size(), Status::Error("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < configs.size(); ++i)
    threads.emplace_back([&, i] { results[i] = StartPartition(configs[i]); });
  for (std::thread& t : threads) t.join();
  threads.clear();
  for (auto& r : results) {
    REQUIRE(r.ok());
    CHECK(IsAlive(*r));
  }
  // Starting again over live handles is refused.
  auto again = StartPartition(configs[0]);
  REQUIRE_FALSE(again.ok());
  CHECK(again.message().find("destroy it first") != std::string::npos);
  CHECK(IsAlive(*results[0]));

  std::vector<Status> destroyed(configs.size());
  for (size_t i = 0; i < configs.size(); ++i)
    threads.emplace_back([&, i] { destroyed[i] = DestroyPartition(configs[i], *results[i]); });
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < configs.size(); ++i) {
    CHECK(destroyed[i].message() == "");
    RequireNothingLeft(pg, configs[i], *results[i]);
  }
}

TEST_CASE("The base layer mirrors the machine's merged /usr and /etc", "[root][hv]") {
  LAB_REQUIRE_ROOT("building a base layer");
  PartitionPlayground pg;
  std::string base = pg.dir() + "/base";
  char target[256] = {};
  if (::readlink("/bin", target, sizeof target - 1) > 0) {
    char ours[256] = {};
    REQUIRE(::readlink((base + "/bin").c_str(), ours, sizeof ours - 1) > 0);
    CHECK(std::string(ours) == target);
  }
  CHECK(PathExists(base + "/etc/passwd"));
  CHECK(PathExists(base + "/etc/lab"));
  struct stat st;
  REQUIRE(::stat((base + "/tmp").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 01777);
  REQUIRE(EnsureBaseLayer(base).ok());  // idempotent
}

}  // namespace
}  // namespace lab::hv::kernel

namespace lab::hv::kernel {
namespace {

/// Process group and session of `pid` (fields 5 and 6 of /proc/PID/stat).
std::pair<long, long> GroupAndSession(int pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  REQUIRE(stat);
  std::istringstream rest(stat->substr(stat->rfind(')') + 2));
  std::string state;
  long ppid = 0, pgrp = 0, session = 0;
  rest >> state >> ppid >> pgrp >> session;
  return {pgrp, session};
}

}  // namespace

TEST_CASE("A partition's init, nested or not, is in a session of its own: the terminal's Ctrl-C never reaches it",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig middle = pg.Config("middle");
  PartitionConfig nested = pg.Config("nested1", &middle);
  ProcessId middle_init = pg.Start(middle);
  ProcessId nested_init = pg.Start(nested);
  for (const ProcessId& init : {middle_init, nested_init}) {
    auto [pgrp, session] = GroupAndSession(init.pid);
    CHECK(session != ::getsid(0));
    CHECK(pgrp != ::getpgrp());  // a signal to our group (what Ctrl-C sends) does not reach it
  }
  CHECK(GroupAndSession(middle_init.pid).second != GroupAndSession(nested_init.pid).second);
}

TEST_CASE("A command run in a partition writes to the given file, returns its exit code, and is killed at its timeout",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig vm = pg.Config("vm1");
  pg.Start(vm);
  const std::string log = pg.dir() + "/out.log";
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  auto ok = RunCommandInPartition(vm.run_dir, vm.cgroup, {"/bin/sh", "-c", "hostname; echo err >&2; exit 7"}, fd, 5000);
  REQUIRE(ok.ok());
  CHECK(ok->exit_code == 7);
  CHECK_FALSE(ok->timed_out);
  auto t0 = std::chrono::steady_clock::now();
  auto slow = RunCommandInPartition(vm.run_dir, vm.cgroup, {"/bin/sh", "-c", "echo before; sleep 30; echo after"}, fd,
                                    300);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(slow.ok());
  CHECK(slow->timed_out);
  CHECK(took < 10);  // not the 30 s the command asked for
  ::close(fd);
  CHECK(ReadFile(log).value_or("") == "vm1\nerr\nbefore\n");
  // Its whole group went: no sleep is left in the VM.
  auto left = ExecInPartition(vm.run_dir, vm.cgroup, {"sh", "-c", "! grep -qx sleep /proc/[0-9]*/comm"});
  REQUIRE(left.ok());
  CHECK(*left == 0);
}

}  // namespace lab::hv::kernel
