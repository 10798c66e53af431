// Stop/start keeping the disk, save/resume (frozen, silent) and checkpoints of real partitions.
#include "hv/kernel/lifecycle.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>

#include "base/net.h"
#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/probe.h"
#include "tests/hv/partition_fixture.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

using lab::testing::MountsUnder;
using lab::testing::PartitionPlayground;
using Clock = std::chrono::steady_clock;

long MsSince(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

bool PathExists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

std::vector<std::string> CgroupDirsOf(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  if (s.v2) return {s.v2_root + "/" + relative};
  std::vector<std::string> out;
  for (const auto& [controller, mount_point] : s.v1) out.push_back(mount_point + "/" + relative);
  return out;
}

// What a file reads inside the partition ("absent" when it does not exist).
std::string Inside(const PartitionConfig& c, const std::string& path) {
  auto r = RunInPartition(c.run_dir, [path] { return ReadFile(path).value_or("absent"); }, 5000);
  return r ? *r : "error: " + r.message();
}

// A stopped partition: no process, handle, mount or cgroup left; its disk kept.
void RequireStopped(const PartitionConfig& c, const ProcessId& init) {
  CHECK_FALSE(IsAlive(init));
  CHECK_FALSE(PathExists(c.run_dir));
  for (const std::string& d : CgroupDirsOf(c.cgroup)) CHECK_FALSE(PathExists(d));
  CHECK(MountsUnder(c.run_dir).empty());
  CHECK(PathExists(c.disk_dir + "/upper"));
}

void RequireNothingLeft(const PartitionConfig& c) {
  CHECK_FALSE(PathExists(c.run_dir));
  CHECK_FALSE(PathExists(c.disk_dir));
  for (const std::string& d : CgroupDirsOf(c.cgroup)) CHECK_FALSE(PathExists(d));
  CHECK(MountsUnder(c.run_dir).empty());
}

TEST_CASE("A stopped VM keeps its disk and starts again with its files", "[root][hv]") {
  LAB_REQUIRE_ROOT("stopping and starting a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("alpha");
  ProcessId first = pg.Start(c);
  REQUIRE(WriteFileInPartition(c.run_dir, "/root/f", "kept\n").ok());

  auto t0 = Clock::now();
  REQUIRE(StopPartition(c, first).ok());
  long stop_ms = MsSince(t0);
  RequireStopped(c, first);
  CHECK(ReadFile(c.disk_dir + "/upper/root/f") == std::optional<std::string>("kept\n"));
  // Stopping a stopped VM is success.
  REQUIRE(StopPartition(c, first).ok());

  t0 = Clock::now();
  ProcessId second = pg.Start(c);
  long start_ms = MsSince(t0);
  WARN("StopPartition " << stop_ms << " ms, StartPartition over the kept disk " << start_ms << " ms");
  CHECK(second.pid != first.pid);
  CHECK(IsAlive(second));
  CHECK(Inside(c, "/root/f") == "kept\n");

  REQUIRE(DestroyPartition(c, second).ok());
  RequireNothingLeft(c);
}

TEST_CASE("Stopping a parent first ends its nested partitions' processes", "[root][hv]") {
  LAB_REQUIRE_ROOT("stopping nested partitions");
  PartitionPlayground pg;
  PartitionConfig middle = pg.Config("middle");
  PartitionConfig nested = pg.Config("nested1", &middle);
  ProcessId middle_init = pg.Start(middle);
  ProcessId nested_init = pg.Start(nested);
  // Out of order (the engine stops children first): the nested init dies with the parent's PID
  // namespace; the nested partition's handles stay until it is stopped itself.
  REQUIRE(StopPartition(middle, middle_init).ok());
  CHECK_FALSE(IsAlive(nested_init));
  REQUIRE(StopPartition(nested, nested_init).ok());
  RequireStopped(nested, nested_init);
  RequireStopped(middle, middle_init);
}

TEST_CASE("A saved VM is frozen, answers nothing, and runs and answers again after resume", "[root][hv]") {
  LAB_REQUIRE_ROOT("saving a partition");
  PartitionPlayground pg;
  PartitionConfig a = pg.Config("pinger");
  PartitionConfig b = pg.Config("saved");
  ProcessId a_init = pg.Start(a);
  ProcessId b_init = pg.Start(b);

  // A wire between them: 10.77.0.1 (a) -- 10.77.0.2 (b).
  {
    auto ns_a = NetNs::Open(NsPath(a.run_dir, "net"));
    auto ns_b = NetNs::Open(NsPath(b.run_dir, "net"));
    REQUIRE(ns_a.ok());
    REQUIRE(ns_b.ok());
    auto nl_a = Netlink::In(*ns_a);
    auto nl_b = Netlink::In(*ns_b);
    REQUIRE(nl_a.ok());
    REQUIRE(nl_b.ok());
    REQUIRE(nl_a->CreateVeth("eth0", nullptr, "eth0", &*ns_b).ok());
    REQUIRE(nl_a->AddAddress("eth0", *Cidr::Parse("10.77.0.1/24")).ok());
    REQUIRE(nl_b->AddAddress("eth0", *Cidr::Parse("10.77.0.2/24")).ok());
    for (Netlink* nl : {&*nl_a, &*nl_b}) {
      REQUIRE(nl->SetUp("lo").ok());
      REQUIRE(nl->SetUp("eth0").ok());
    }
  }
  auto ping = [&a](int timeout_ms) {
    auto r = RunInPartition(a.run_dir, [timeout_ms] { return ProbePing("10.77.0.2", timeout_ms).ok ? "ok" : "no"; },
                            timeout_ms + 3000);
    return r ? *r : r.message();
  };
  CHECK(ping(2000) == "ok");

  // A clock inside b that writes the time every 50 ms.
  auto ticker = SpawnInPartition(b.run_dir, b.cgroup,
                                 {"sh", "-c", "while :; do date +%s%N > /tmp/t.new; mv /tmp/t.new /tmp/t; sleep 0.05; done"},
                                 false, "/tmp/ticker.log");
  REQUIRE(ticker.ok());
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (Inside(b, "/tmp/t") == "absent" && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(Inside(b, "/tmp/t") != "absent");

  auto t0 = Clock::now();
  REQUIRE(SavePartition(b).ok());
  long save_ms = MsSince(t0);
  CHECK(CgroupFrozen(b.cgroup));
  if (!Cgroups().v2) {
    for (const auto& [controller, mount_point] : Cgroups().v1)
      if (controller == "freezer") CHECK(Trim(ReadFile(mount_point + "/" + b.cgroup + "/freezer.state").value_or("")) == "FROZEN");
  }
  CHECK(IsAlive(b_init));
  CHECK(IsAlive(*ticker));
  // Saving a saved VM is success.
  REQUIRE(SavePartition(b).ok());

  // Frozen: the clock stands still (RunInPartition does not join the cgroup, so it can look).
  std::string frozen_at = Inside(b, "/tmp/t");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(Inside(b, "/tmp/t") == frozen_at);
  // Silent: a ping to it times out.
  CHECK(ping(600) == "no");

  t0 = Clock::now();
  REQUIRE(ResumePartition(b).ok());
  long resume_ms = MsSince(t0);
  WARN("SavePartition " << save_ms << " ms, ResumePartition " << resume_ms << " ms");
  CHECK_FALSE(CgroupFrozen(b.cgroup));
  {
    auto ns_b = NetNs::Open(NsPath(b.run_dir, "net"));
    REQUIRE(ns_b.ok());
    auto tables = NftListTables(*ns_b);
    REQUIRE(tables.ok());
    CHECK(tables->empty());  // the saved VM's drop tables are gone
  }
  CHECK(ping(2000) == "ok");
  deadline = Clock::now() + std::chrono::seconds(3);
  while (Inside(b, "/tmp/t") == frozen_at && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(Inside(b, "/tmp/t") != frozen_at);
  // Resuming a running VM is success.
  REQUIRE(ResumePartition(b).ok());

  // A saved VM can be destroyed (its frozen processes are thawed to die).
  REQUIRE(SavePartition(b).ok());
  REQUIRE(DestroyPartition(b, b_init).ok());
  CHECK_FALSE(IsAlive(*ticker));
  RequireNothingLeft(b);
  REQUIRE(DestroyPartition(a, a_init).ok());
  CHECK(MountsUnder(pg.run_root()).empty());
}

TEST_CASE("Saving a stopped VM is refused", "[root][hv]") {
  LAB_REQUIRE_ROOT("saving a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("off");
  Status s = SavePartition(c);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("not running") != std::string::npos);
}

TEST_CASE("A file written after a checkpoint is gone after restore", "[root][hv]") {
  LAB_REQUIRE_ROOT("checkpoints of a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("vm1");
  ProcessId init = pg.Start(c);
  // Before the checkpoint: a file, a deleted base file (a whiteout), a base directory deleted and
  // made again (an opaque directory), a symlink, a hard link and a set-gid mode.
  REQUIRE(ExecInPartition(c.run_dir, c.cgroup,
                          {"sh", "-c",
                           "echo before > /root/before && rm /etc/debian_version && "
                           "rm -rf /etc/default && mkdir /etc/default && echo only > /etc/default/only && "
                           "ln -s /root/before /root/link && ln /root/before /root/hard && "
                           "mkdir -m 2750 /root/dir && chown 12:34 /root/dir"})
              .value() == 0);
  auto t0 = Clock::now();
  REQUIRE(CreateCheckpoint(c, "c1").ok());
  long checkpoint_ms = MsSince(t0);
  CHECK_FALSE(CgroupFrozen(c.cgroup));  // running before, running after

  // The copy is exact.
  std::string cp = c.disk_dir + "/checkpoints/c1";
  struct stat st;
  REQUIRE(::lstat((cp + "/etc/debian_version").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == makedev(0, 0));
  char opaque[8] = {};
  CHECK(::lgetxattr((cp + "/etc/default").c_str(), "trusted.overlay.opaque", opaque, sizeof opaque) == 1);
  CHECK(std::string(opaque) == "y");
  REQUIRE(::lstat((cp + "/root/dir").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 02750);
  CHECK(st.st_uid == 12);
  CHECK(st.st_gid == 34);
  struct stat a, b;
  REQUIRE(::lstat((cp + "/root/before").c_str(), &a) == 0);
  REQUIRE(::lstat((cp + "/root/hard").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);

  // After it: a new file, another base file deleted, the kept one changed.
  REQUIRE(ExecInPartition(c.run_dir, c.cgroup,
                          {"sh", "-c", "echo after > /root/after && rm /etc/issue && echo changed > /root/before"})
              .value() == 0);
  REQUIRE(CreateCheckpoint(c, "c2").ok());
  REQUIRE(CreateCheckpoint(c, ".dotted_-9").ok());
  CHECK(ListCheckpoints(c).value() == std::vector<std::string>{"c1", "c2", ".dotted_-9"});

  // Restore needs the VM off.
  Status running = RestoreCheckpoint(c, "c1");
  REQUIRE_FALSE(running.ok());
  CHECK(running.message().find("stop it first") != std::string::npos);

  REQUIRE(StopPartition(c, init).ok());
  t0 = Clock::now();
  REQUIRE(RestoreCheckpoint(c, "c1").ok());
  long restore_ms = MsSince(t0);
  WARN("CreateCheckpoint of a small running upper " << checkpoint_ms << " ms, RestoreCheckpoint " << restore_ms
                                                     << " ms");
  pg.Start(c);
  CHECK(Inside(c, "/root/after") == "absent");
  CHECK(Inside(c, "/root/before") == "before\n");
  CHECK(Inside(c, "/root/hard") == "before\n");
  CHECK(Inside(c, "/etc/debian_version") == "absent");             // deleted before c1: stays deleted
  CHECK(Inside(c, "/etc/issue") != "absent");                      // deleted after c1: back
  CHECK(Inside(c, "/etc/default/only") == "only\n");
  auto listing = RunInPartition(c.run_dir, [] {
    std::string out;
    if (DIR* d = ::opendir("/etc/default")) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') out += std::string(e->d_name) + " ";
      ::closedir(d);
    }
    char target[64] = {};
    ssize_t n = ::readlink("/root/link", target, sizeof target - 1);
    return out + "| " + (n > 0 ? std::string(target) : "no link");
  }, 5000);
  REQUIRE(listing.ok());
  CHECK(*listing == "only | /root/before");  // the opaque directory hides the base's files

  // The later checkpoint still holds the later state.
  CHECK(ReadFile(c.disk_dir + "/checkpoints/c2/root/after") == std::optional<std::string>("after\n"));
}

TEST_CASE("Checkpoint names are checked, unknown ones listed, and destroy removes checkpoints", "[root][hv]") {
  LAB_REQUIRE_ROOT("checkpoints of a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("vm2");
  ProcessId init = pg.Start(c);
  for (const std::string& bad : {std::string(""), std::string(".."), std::string("."), std::string(" lead"),
                                 std::string("trail "), std::string("new\nline"), std::string(81, 'x')}) {
    Status s = CreateCheckpoint(c, bad);
    REQUIRE_FALSE(s.ok());
    CHECK(s.message().find("is not valid") != std::string::npos);
  }
  CHECK(CreateCheckpoint(c, std::string(80, 'x')).ok());
  REQUIRE(CreateCheckpoint(c, "one").ok());
  Status dup = CreateCheckpoint(c, "one");
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.message().find("exists already") != std::string::npos);
  REQUIRE(StopPartition(c, init).ok());
  Status unknown = RestoreCheckpoint(c, "nope");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.message().find("'nope'") != std::string::npos);
  CHECK(unknown.message().find(std::string(80, 'x') + ", one") != std::string::npos);
  CHECK_FALSE(PathExists(c.disk_dir + "/checkpoint.partial"));
  CHECK_FALSE(PathExists(c.disk_dir + "/upper.restoring"));

  REQUIRE(DestroyPartition(c, init).ok());
  RequireNothingLeft(c);
  CHECK(ListCheckpoints(c).value().empty());
}

TEST_CASE("Hyper-V's default checkpoint names, with spaces, '/' and ':', are kept, listed with size and removed",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("checkpoints of a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("vm3");
  ProcessId init = pg.Start(c);
  const std::string hyperv = "vm3 - (12/07/2026 - 07:05:31)";
  REQUIRE(CreateCheckpoint(c, hyperv).ok());
  // 64 KiB more in the upper: the second checkpoint is that much bigger than the first.
  REQUIRE(WriteFileAtomic(c.disk_dir + "/upper/big", std::string(64 * 1024, 'b')));
  REQUIRE(CreateCheckpoint(c, "before 50%").ok());
  CHECK(ListCheckpoints(c).value() == std::vector<std::string>{hyperv, "before 50%"});
  // One directory each, in the checkpoints dir (no '/' made a subdirectory).
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(c.disk_dir + "/checkpoints")) entries += !e.path().empty();
  CHECK(entries == 2);
  auto details = CheckpointDetails(c);
  REQUIRE(details.ok());
  REQUIRE(details->size() == 2);
  CHECK((*details)[0].name == hyperv);
  CHECK((*details)[1].bytes >= (*details)[0].bytes + 64 * 1024);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  CHECK((*details)[0].taken <= now);
  CHECK((*details)[0].taken > now - 600);

  REQUIRE(StopPartition(c, init).ok());
  REQUIRE(RestoreCheckpoint(c, hyperv).ok());
  CHECK_FALSE(PathExists(c.disk_dir + "/upper/big"));

  Status unknown = RemoveCheckpoint(c, "nope");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.message().find("its checkpoints are: " + hyperv + ", before 50%") != std::string::npos);
  REQUIRE(RemoveCheckpoint(c, hyperv).ok());
  CHECK(ListCheckpoints(c).value() == std::vector<std::string>{"before 50%"});
  CHECK_FALSE(PathExists(c.disk_dir + "/checkpoint.removing"));
  REQUIRE(DestroyPartition(c, init).ok());
  RequireNothingLeft(c);
}

}  // namespace
}  // namespace lab::hv::kernel
