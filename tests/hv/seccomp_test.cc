// Kernel enforcement of ExposeVirtualizationExtensions: a partition that does not expose its
// extensions cannot make namespaces (seccomp), whatever runs inside it, and no VM can be created
// below it. Root only; every partition lives in a private playground.
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/seccomp.h"
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

/// "Seccomp:" of /proc/PID/status: 0 none, 2 filter.
int SeccompMode(int pid) {
  auto status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  if (!status) return -1;
  for (const auto& line : Split(*status, '\n'))
    if (line.rfind("Seccomp:", 0) == 0) return std::atoi(line.c_str() + 8);
  return -1;
}

std::vector<std::string> CgroupDirsOf(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  if (s.v2) return {s.v2_root + "/" + relative};
  std::vector<std::string> out;
  for (const auto& [controller, mount_point] : s.v1) out.push_back(mount_point + "/" + relative);
  return out;
}

/// Number of processes in the cgroup `relative` and below (pids or v2 hierarchy).
int ProcessesIn(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  std::string root;
  if (s.v2) root = s.v2_root;
  for (const auto& [controller, mount_point] : s.v1)
    if (controller == "pids" || root.empty()) root = mount_point;
  int n = 0;
  std::error_code ec;
  std::string top = root + "/" + relative;
  auto count = [&n](const std::string& dir) {
    std::istringstream in(ReadFile(dir + "/cgroup.procs").value_or(""));
    int pid;
    while (in >> pid) ++n;
  };
  count(top);
  for (auto it = std::filesystem::recursive_directory_iterator(top, ec); !ec && it != std::filesystem::end(it);
       it.increment(ec))
    if (it->is_directory()) count(it->path().string());
  return n;
}

int Exec(const PartitionConfig& c, const std::vector<std::string>& argv) {
  auto r = ExecInPartition(c.run_dir, c.cgroup, argv);
  INFO((r.ok() ? std::string() : r.message()));
  REQUIRE(r.ok());
  return *r;
}

}  // namespace

TEST_CASE("A VM without exposed virtualization extensions cannot create namespaces", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig closed = pg.Config("closed");
  closed.allow_nesting = false;
  ProcessId closed_init = pg.Start(closed);
  PartitionConfig open = pg.Config("open");
  ProcessId open_init = pg.Start(open);

  // Both inits run under a filter (every partition has the deny list of docs/hardening.md, and
  // everything they fork inherits it); only the closed one's also refuses new namespaces.
  CHECK(SeccompMode(closed_init.pid) == 2);
  CHECK(SeccompMode(open_init.pid) == 2);

  for (const char* flag : {"-n", "-m", "-u", "-i", "-U", "-C", "-T"}) {
    INFO(flag);
    CHECK(Exec(closed, {"unshare", flag, "true"}) != 0);
  }
  CHECK(Exec(closed, {"unshare", "-p", "-f", "true"}) != 0);
  CHECK(Exec(closed, {"nsenter", "-t", "1", "-n", "true"}) != 0);  // setns
  CHECK(Exec(open, {"unshare", "-n", "true"}) == 0);
  CHECK(Exec(open, {"unshare", "-m", "-p", "-f", "true"}) == 0);

  // Functions run inside (probes) are under the same rules.
  auto errno_of_unshare = [] { return std::to_string(::unshare(CLONE_NEWNET) == 0 ? 0 : errno); };
  auto in_closed = RunInPartition(closed.run_dir, errno_of_unshare, 5000);
  REQUIRE(in_closed.ok());
  CHECK(*in_closed == std::to_string(EPERM));
  auto in_open = RunInPartition(open.run_dir, errno_of_unshare, 5000);
  REQUIRE(in_open.ok());
  CHECK(*in_open == "0");
  CHECK(ReadFile(closed.run_dir + "/" + kNestingFile).value_or("") == "0\n");
  CHECK(ReadFile(open.run_dir + "/" + kNestingFile).value_or("") == "1\n");
}

TEST_CASE("clone3 falls back so ordinary processes still fork", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("closed");
  c.allow_nesting = false;
  pg.Start(c);

  // Shells, pipes, subshells and background jobs: fork, clone and (through glibc) clone3.
  CHECK(Exec(c, {"sh", "-c", "echo hi | cat >/dev/null && (true) && sleep 0 & wait"}) == 0);

  auto out = RunInPartition(
      c.run_dir,
      []() -> std::string {
        std::string r;
        // clone3 says "not implemented", so callers use clone.
        long rc = ::syscall(SYS_clone3, nullptr, 0);
        r += "clone3=" + std::to_string(rc == -1 ? errno : 0) + ";";
        // Threads (pthread_create tries clone3 first in glibc 2.34+).
        bool ran = false;
        std::thread t([&ran] { ran = true; });
        t.join();
        r += std::string("thread=") + (ran ? "ok" : "no") + ";";
        pid_t child = ::fork();
        if (child == 0) ::_exit(3);
        int status = 0;
        ::waitpid(child, &status, 0);
        r += "fork=" + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ";";
        // clone with a namespace flag is refused; without one it is a fork.
        long cl = ::syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0);
        if (cl == 0) ::_exit(0);
        if (cl > 0) ::waitpid(static_cast<pid_t>(cl), nullptr, 0);
        r += "clone_newnet=" + std::to_string(cl < 0 ? errno : 0) + ";";
        // Raw sockets (ping) are not namespaces.
        int raw = ::socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        r += std::string("raw=") + (raw >= 0 ? "ok" : "no");
        if (raw >= 0) ::close(raw);
        return r;
      },
      5000);
  REQUIRE(out.ok());
  CHECK(*out == "clone3=" + std::to_string(ENOSYS) + ";thread=ok;fork=3;clone_newnet=" + std::to_string(EPERM) +
                    ";raw=ok");
}

TEST_CASE("A nested VM cannot be created under a VM without exposed extensions", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig parent = pg.Config("middle");
  parent.allow_nesting = false;
  pg.Start(parent);
  int before = ProcessesIn(parent.cgroup);

  PartitionConfig child = pg.Config("nested1", &parent);
  child.parent_allows_nesting = false;
  auto started = StartPartition(child);
  REQUIRE_FALSE(started.ok());
  CHECK(started.message() ==
        "VM 'middle' cannot run nested VMs: its virtualization extensions are not exposed (Set-VMProcessor -VMName "
        "middle -ExposeVirtualizationExtensions $true; lab file: processor.expose_virtualization_extensions: true)");

  // Nothing of the child is left: directories, cgroups, mounts, processes in the parent.
  CHECK_FALSE(PathExists(child.run_dir));
  CHECK_FALSE(PathExists(child.disk_dir));
  for (const auto& d : CgroupDirsOf(child.cgroup)) CHECK_FALSE(PathExists(d));
  CHECK(MountsUnder(child.run_dir).empty());
  CHECK(ProcessesIn(parent.cgroup) == before);

  // The same child under an exposed parent starts.
  PartitionConfig exposed = pg.Config("middle2");
  pg.Start(exposed);
  PartitionConfig child2 = pg.Config("nested2", &exposed);
  pg.Start(child2);
  CHECK(Exec(child2, {"true"}) == 0);
}

TEST_CASE("A partition sees lab at /opt/lab read-only and its own cgroup at /sys/fs/cgroup", "[root][hv]") {
  LAB_REQUIRE_ROOT("starting partitions");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("middle");
  c.tools_dir = LAB_BINARY_DIR;
  c.memory_limit = 256ull << 20;
  pg.Start(c);
  CHECK(Exec(c, {"test", "-x", "/opt/lab/lab-init"}) == 0);
  CHECK(Exec(c, {"sh", "-c", "touch /opt/lab/x 2>/dev/null"}) != 0);
  // lab's state inside lives on the VM's disk, not on the overlay.
  CHECK(Exec(c, {"sh", "-c", "echo x > /var/lib/lab/probe"}) == 0);
  CHECK(ReadFile(c.disk_dir + "/lab/probe").value_or("") == "x\n");
  const CgroupSetup& cg = Cgroups();
  std::string limit = cg.v2 ? cg.v2_root + "/memory.max" : "";
  for (const auto& [controller, mount_point] : cg.v1)
    if (controller == "memory") limit = mount_point + "/memory.limit_in_bytes";
  REQUIRE_FALSE(limit.empty());
  CHECK(Exec(c, {"sh", "-c", "test \"$(cat " + limit + ")\" = 268435456"}) == 0);
  // A VM that cannot nest gets no lab state dir.
  PartitionConfig closed = pg.Config("closed");
  closed.allow_nesting = false;
  pg.Start(closed);
  CHECK_FALSE(PathExists(closed.disk_dir + "/lab"));
}

}  // namespace lab::hv::kernel
