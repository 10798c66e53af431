#include "hv/kernel/probe.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "hv/kernel/partition.h"
#include "tests/hv/partition_fixture.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

using lab::testing::PartitionPlayground;

// Brings "lo" up in the calling process's network namespace (no `ip`).
std::string LoopbackUp() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "socket failed";
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  std::string result = "up";
  if (::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) result = "SIOCGIFFLAGS failed";
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (result == "up" && ::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) result = "SIOCSIFFLAGS failed";
  ::close(fd);
  return result;
}

// The whoami server in a child of ours that entered the partition's network and mount
// namespaces; killed (by its pid) when this goes out of scope.
class WhoamiServer {
 public:
  WhoamiServer(const std::string& run_dir, int port) {
    int net = ::open(NsPath(run_dir, "net").c_str(), O_RDONLY | O_CLOEXEC);
    int mnt = ::open(NsPath(run_dir, "mnt").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(net >= 0);
    REQUIRE(mnt >= 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      if (::setns(net, CLONE_NEWNET) != 0 || ::setns(mnt, CLONE_NEWNS) != 0) ::_exit(3);
      ::_exit(RunWhoamiServer(*Ipv4::Parse("127.0.0.1"), port));
    }
    ::close(net);
    ::close(mnt);
    REQUIRE(pid_ > 0);
  }
  ~WhoamiServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
};

std::string Show(const ProbeResult& r) { return (r.ok ? "ok " : "fail ") + r.value + "|" + r.detail; }

TEST_CASE("Probes inside a partition reach its loopback, its whoami server and its /etc/hosts", "[root][hv]") {
  LAB_REQUIRE_ROOT("probing inside a partition");
  PartitionPlayground pg;
  PartitionConfig c = pg.Config("probe");
  c.files.push_back({"/etc/hosts", "127.0.0.1 localhost\n10.9.8.7 web.lab.test\n"});
  // Only the partition's own loopback answers DNS (with a refusal): nothing leaves the machine.
  c.files.push_back({"/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"});
  pg.Start(c);
  auto up = RunInPartition(c.run_dir, LoopbackUp, 5000);
  REQUIRE(up.ok());
  REQUIRE(*up == "up");
  WhoamiServer server(c.run_dir, 8080);

  auto run = [&](std::function<ProbeResult()> probe) {
    auto r = RunInPartition(c.run_dir, [&] { return Show(probe()); }, 10000);
    REQUIRE(r.ok());
    return *r;
  };
  // Wait for the server to listen.
  std::string tcp;
  for (int i = 0; i < 100; ++i) {
    tcp = run([] { return ProbeTcp("127.0.0.1:8080", 500); });
    if (tcp.rfind("ok", 0) == 0) break;
    ::usleep(20000);
  }
  CHECK(tcp == "ok 127.0.0.1:8080|");
  CHECK(run([] { return ProbeHttp("http://127.0.0.1:8080/", 2000); }) == "ok 127.0.0.1|");
  CHECK(run([] { return ProbeHttp("http://localhost:8080/whoami", 2000); }) == "ok 127.0.0.1|");
  CHECK(run([] { return ProbePing("127.0.0.1", 2000); }) == "ok 127.0.0.1|");
  CHECK(run([] { return ProbeTcp("127.0.0.1:9", 1000); }) == "fail |connection refused");
  CHECK(run([] { return ProbeResolve("web.lab.test", 2000); }) == "ok 10.9.8.7|");
  CHECK(run([] { return ProbeResolve("nothing.lab.test", 2000); }) == "fail |name not found");
  // Only lo exists: every other destination has no route.
  CHECK(run([] { return ProbePing("10.9.8.7", 1000); }) == "fail |no route");
  CHECK(run([] { return ProbeTcp("10.9.8.7:80", 1000); }) == "fail |no route");
}

}  // namespace
}  // namespace lab::hv::kernel
