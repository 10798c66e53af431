// End to end: a partition is no way out of the lab (docs/hardening.md). Each escape attempt runs
// inside a host, a VM and a VM with exposed virtualization extensions of a real lab, through
// `lab exec` and /opt/lab/lab-escape-probe (tests/e2e/escape_probe.cc), and must fail; a second
// lab runs alongside so "another lab" is real. Root only. The attempts are harmless if they
// succeed (see the probe); the only traffic is a connect() from inside the lab towards a listener
// of this test on the machine's own addresses, which must not arrive.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "hv/kernel/seccomp.h"
#include "tests/e2e/e2e_support.h"

using lab::testing::e2e::Leftovers;
using lab::testing::e2e::Run;
using lab::testing::e2e::Sandbox;

namespace {

constexpr const char* kLabA = R"(lab: esc-a
networks:
  lan: {subnet: 10.77.0.0/24, gateway: 10.77.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.77.0.11/24, gateway: 10.77.0.1}
    switches:
      External: {type: external, nics: [Ethernet], allow_management_os: true}
    vms:
      plain:
        memory: {startup: 256MiB}
        adapters:
          - {switch: External, ip: 10.77.0.20/24, gateway: 10.77.0.1}
      middle:
        processor: {count: 1, expose_virtualization_extensions: true}
        memory: {startup: 512MiB}
        adapters:
          - {switch: External, ip: 10.77.0.21/24, gateway: 10.77.0.1}
)";

constexpr const char* kLabB = R"(lab: esc-b
networks:
  lan: {subnet: 10.78.0.0/24, gateway: 10.78.0.1}
hosts:
  other:
    nics:
      Ethernet: {network: lan, ip: 10.78.0.11/24, gateway: 10.78.0.1}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      neighbour:
        memory: {startup: 256MiB}
        adapters:
          - {switch: External, ip: 10.78.0.20/24, gateway: 10.78.0.1}
)";

std::string StartTime(int pid) { return std::to_string(lab::hv::kernel::ProcessStartTime(pid)); }

std::string NetNsInode(int pid) {
  struct stat st;
  if (::stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &st) != 0) return "0";
  return std::to_string(st.st_ino);
}

/// The machine's own interfaces (not loopback) and IPv4 addresses.
void MachineNetwork(std::vector<std::string>* names, std::vector<std::string>* addresses) {
  struct if_nameindex* ifs = ::if_nameindex();
  for (struct if_nameindex* i = ifs; i && i->if_name; ++i)
    if (std::string(i->if_name) != "lo") names->push_back(i->if_name);
  if (ifs) ::if_freenameindex(ifs);
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return;
  for (ifaddrs* a = all; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    addresses->push_back(text);
  }
  ::freeifaddrs(all);
}

/// Capabilities as /proc/PID/status prints them for `line` ("CapEff", "CapBnd").
uint64_t CapsIn(const std::string& status, const std::string& line) {
  size_t at = status.find(line + ":");
  if (at == std::string::npos) return ~uint64_t{0};
  return std::strtoull(status.c_str() + at + line.size() + 1, nullptr, 16);
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += " " + s;
  return out;
}

}  // namespace

TEST_CASE("No escape attempt gets out of a host or a VM whether it may nest or not", "[root][e2e][hardening]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file_a = sb.dir + "/esc-a.yaml", file_b = sb.dir + "/esc-b.yaml";
  REQUIRE(lab::WriteFileAtomic(file_a, kLabA));
  REQUIRE(lab::WriteFileAtomic(file_b, kLabB));
  Run up_a = sb.Lab("up " + file_a);
  INFO(up_a.out);
  REQUIRE(up_a.code == 0);
  Run up_b = sb.Lab("up " + file_b);
  INFO(up_b.out);
  REQUIRE(up_b.code == 0);
  auto pids_a = lab::testing::e2e::InitPids(sb, "esc-a");
  auto pids_b = lab::testing::e2e::InitPids(sb, "esc-b");
  REQUIRE(pids_b.size() == 3);  // other, neighbour, and the network's stand-in

  // What lies outside: this test's process and the other lab's machines; the machine's
  // interfaces and network namespace and the other lab's; paths of the machine.
  std::vector<std::string> outside_pids = {std::to_string(::getpid()) + ":" + StartTime(::getpid())};
  for (int pid : pids_b) outside_pids.push_back(std::to_string(pid) + ":" + StartTime(pid));
  std::vector<std::string> interfaces, addresses;
  MachineNetwork(&interfaces, &addresses);
  interfaces.push_back("ns:" + NetNsInode(::getpid()));
  for (int pid : pids_b) interfaces.push_back("ns:" + NetNsInode(pid));
  std::vector<std::string> paths = {LAB_SOURCE_DIR, sb.dir, sb.state, sb.run};

  // A listener on every address of the machine: a connect from inside must not reach it.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in any = {};
  any.sin_family = AF_INET;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0);
  REQUIRE(::listen(listener, 16) == 0);
  socklen_t len = sizeof any;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&any), &len);
  std::vector<std::string> targets;
  for (const auto& a : addresses) targets.push_back(a + ":" + std::to_string(ntohs(any.sin_port)));
  REQUIRE_FALSE(targets.empty());

  const std::map<std::string, std::string> attempts = {
      {"module-load", ""},
      {"clock-change", ""},
      {"reboot", ""},
      {"raw-io", ""},
      {"machine-sysctls", ""},
      {"host-pids", Join(outside_pids)},
      {"host-mounts", Join(paths)},
      {"host-interfaces", Join(interfaces)},
      {"route", Join(targets)},
  };
  const uint64_t admin = lab::hv::kernel::VmAdminCapabilities();
  const uint64_t sys_admin = uint64_t{1} << 21;  // CAP_SYS_ADMIN
  for (const auto& [machine, caps] : std::map<std::string, uint64_t>{
           {"hv1", admin | sys_admin}, {"plain", admin}, {"middle", admin | sys_admin}}) {
    for (const auto& [attempt, args] : attempts) {
      Run r = sb.Lab("exec esc-a " + machine + " -- /opt/lab/lab-escape-probe " + attempt + args);
      INFO(machine << ": " << attempt << "\n" << r.out);
      CHECK(r.code == 0);
      CHECK(r.out.find("blocked: ") != std::string::npos);
      CHECK(r.out.find("ESCAPED") == std::string::npos);
    }
    // Exactly the administrator's capabilities (plus CAP_SYS_ADMIN where it may nest), and
    // nothing it runs can get more.
    Run c = sb.Lab("exec esc-a " + machine + " -- /opt/lab/lab-escape-probe capabilities");
    INFO(machine << "\n" << c.out);
    REQUIRE(c.code == 0);
    CHECK(CapsIn(c.out, "CapEff") == caps);
    CHECK(CapsIn(c.out, "CapBnd") == caps);
    CHECK(CapsIn(c.out, "CapAmb") == 0);
    // What the administrator needs still works: its own network's settings.
    Run fwd = sb.Lab("exec esc-a " + machine + " -- sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'");
    INFO(fwd.out);
    CHECK(fwd.code == 0);
  }
  ::close(listener);

  Run down_a = sb.Lab("down esc-a");
  Run down_b = sb.Lab("down esc-b");
  INFO(down_a.out << down_b.out);
  CHECK(down_a.code == 0);
  CHECK(down_b.code == 0);
  pids_a.insert(pids_a.end(), pids_b.begin(), pids_b.end());
  // Other labs may be running on this machine meanwhile: their cgroups are not ours to count.
  std::vector<std::string> left;
  for (const auto& l : Leftovers(sb, pids_a))
    if (l.rfind("cgroup ", 0) != 0 || l.find("/esc-a-") != std::string::npos || l.find("/esc-b-") != std::string::npos)
      left.push_back(l);
  CHECK(left == std::vector<std::string>{});
}
