// The lifecycle of one VM, through the real binary: save/resume, stop/start, checkpoint/restore.
#include <catch2/catch.hpp>
#include <filesystem>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

TEST_CASE("A VM is saved and resumed, stopped and started with its disk, and restored to a checkpoint",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo before > /root/kept'").code == 0);
  Run cp = sb.Lab("checkpoint nested-nat middle c1");
  INFO(cp.out);
  REQUIRE(cp.code == 0);
  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo after > /root/later'").code == 0);

  // Save: frozen; the VMs inside with it; exec is refused instead of hanging.
  REQUIRE(sb.Lab("save nested-nat middle").code == 0);
  Run st = sb.Lab("status nested-nat");
  CHECK(st.out.find("saved") != std::string::npos);
  Run frozen = sb.Lab("exec nested-nat middle -- true");
  CHECK(frozen.code == 1);
  CHECK(frozen.out.find("is saved; resume it first") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 1);
  REQUIRE(sb.Lab("resume nested-nat middle").code == 0);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Stop takes the nested VMs down with it; start brings all of them back, disk kept.
  Run stop = sb.Lab("stop nested-nat middle");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  CHECK(stop.out.find("stop VM 'nested1'") < stop.out.find("stop VM 'middle'"));
  CHECK(sb.Lab("status nested-nat").out.find("off") != std::string::npos);
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/later").out.find("after") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Restore: what was written after the checkpoint is gone, what was before is there.
  Run restore = sb.Lab("restore nested-nat middle c1");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/kept").out.find("before") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat middle -- test -e /root/later").code == 1);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Hosts are physical machines; unknown machines are named.
  CHECK(sb.Lab("stop nested-nat hv1").out.find("is a host") != std::string::npos);
  CHECK(sb.Lab("stop nested-nat nosuch").code == 1);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}

TEST_CASE("A VM started while its last run's switch port lingers takes the port back only when it carries the adapter's mark",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  namespace k = lab::hv::kernel;
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  auto uid = [&] {
    auto status = nlohmann::json::parse(sb.Lab("status nested-nat --json").out, nullptr, false);
    REQUIRE_FALSE(status.is_discarded());
    return status.value("uid", std::string());
  };
  // middle's adapter is the one port of hv1's switch that is not the host's own NIC.
  Run brif = sb.Lab("exec nested-nat hv1 -- ls /sys/class/net/External/brif");
  REQUIRE(brif.code == 0);
  std::string port;
  for (const auto& p : lab::Split(lab::Trim(brif.out), '\n'))
    if (p != "Ethernet") port = p;
  REQUIRE(!port.empty());

  auto host_ns = k::NetNs::Open(k::NsPath(MachineRun(sb, "nested-nat", "hv1"), "net"));
  REQUIRE(host_ns.ok());
  auto nl = k::Netlink::In(*host_ns);
  REQUIRE(nl.ok());
  // The kernel frees a stopped VM's namespace in the background, so its port may outlive it a
  // moment; here it stays, made by hand, as long as the test wants.
  auto stop_and_plant = [&](const std::optional<std::string>& mark) {
    REQUIRE(sb.Lab("stop nested-nat middle").code == 0);
    for (int i = 0; i < 200 && (*nl->FindLink(port)).has_value(); ++i) ::usleep(10000);
    REQUIRE_FALSE((*nl->FindLink(port)).has_value());
    REQUIRE(nl->CreateVeth(port, nullptr, "lingering", nullptr).ok());
    if (mark) REQUIRE(nl->AddAltName(port, *mark).ok());
  };

  // Not marked: not ours, so left alone, and the start says why it cannot go on.
  stop_and_plant(std::nullopt);
  Run refused = sb.Lab("start nested-nat middle");
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("Object exists") != std::string::npos);
  CHECK((*nl->FindLink(port)).has_value());
  REQUIRE(nl->DeleteLink(port).ok());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  REQUIRE(sb.Lab("up " + file).code == 0);
  host_ns = k::NetNs::Open(k::NsPath(MachineRun(sb, "nested-nat", "hv1"), "net"));
  REQUIRE(host_ns.ok());
  nl = k::Netlink::In(*host_ns);
  REQUIRE(nl.ok());
  auto later = InitPids(sb, "nested-nat");
  pids.insert(pids.end(), later.begin(), later.end());

  // Marked as this very adapter's port: the leftover of its last run, taken back.
  stop_and_plant("lab." + uid() + ".port.middle.Ethernet");
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK((*nl->FindLink("lingering")) == std::nullopt);
  CHECK(sb.Lab("check nested-nat").code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

namespace {

/// Ports of `host`'s switch 'External': the host's NIC and one per VM adapter on it.
size_t PortsOf(const Sandbox& sb, const std::string& host) {
  Run r = sb.Lab("exec two-hosts " + host + " -- ls /sys/class/net/External/brif");
  INFO(r.out);
  REQUIRE(r.code == 0);
  return lab::Split(lab::Trim(r.out), '\n').size();
}

std::string ParentOf(const Sandbox& sb, const std::string& machine, std::string* state) {
  auto j = nlohmann::json::parse(sb.Lab("status two-hosts --json").out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  for (const auto& m : j["machines"])
    if (m.value("name", "") == machine) {
      *state = m.value("state", "");
      return m.value("parent", "");
    }
  FAIL("no machine " << machine);
  return "";
}

}  // namespace

TEST_CASE("A VM moves to another host with its disk, its adapter re-plumbed; not while a hypervisor runs in it",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // two-hosts with a plain VM 'web' on hv1's external switch, reachable by name from n11.
  auto text = lab::ReadFile(lab::testing::Src("labs/two-hosts.yaml"));
  REQUIRE(text);
  text->replace(text->find("  hv2:\n"), 0,
                "      web:\n        memory: {startup: 256MiB}\n        adapters:\n"
                "          - {switch: External, ip: 10.20.0.30/24, gateway: 10.20.0.1, dns: [10.20.0.1]}\n");
  text->replace(text->find("checks:\n") + 8, 0,
                "  - {from: web, http: \"http://www.example.test/\", expect_source: 10.20.0.30}\n"
                "  - {from: n11, ping: web}\n");
  std::string file = sb.dir + "/two-hosts.yaml";
  REQUIRE(lab::WriteFileAtomic(file, *text));
  REQUIRE(sb.Lab("up " + file).code == 0);
  REQUIRE(sb.Lab("exec two-hosts web -- sh -c 'echo kept > /root/f'").code == 0);
  CHECK(PortsOf(sb, "hv1") == 3);  // Ethernet, mid1, web
  CHECK(PortsOf(sb, "hv2") == 2);  // Ethernet, mid2
  std::string state;

  // mid1 runs n11 and n12: no live migration while a hypervisor runs in it.
  Run refused = sb.Lab("move two-hosts mid1 --to hv2");
  CHECK(refused.code == 1);
  CHECK(refused.out.find("cannot be live-migrated while a hypervisor runs inside it") != std::string::npos);
  CHECK(ParentOf(sb, "mid1", &state) == "hv1");
  CHECK(state == "running");
  CHECK(sb.Lab("move two-hosts n11 --to hv2").out.find("moves with it; move 'mid1' instead") != std::string::npos);
  CHECK(sb.Lab("move two-hosts web --to nosuch").code == 1);

  // web runs no hypervisor: it moves, with its disk; its adapter is now a port of hv2's switch.
  Run moved = sb.Lab("move two-hosts web --to hv2");
  INFO(moved.out);
  REQUIRE(moved.code == 0);
  CHECK(ParentOf(sb, "web", &state) == "hv2");
  CHECK(state == "running");
  CHECK(sb.Lab("exec two-hosts web -- cat /root/f").out.find("kept") != std::string::npos);
  CHECK(PortsOf(sb, "hv1") == 2);
  CHECK(PortsOf(sb, "hv2") == 3);
  Run check = sb.Lab("check two-hosts");
  INFO(check.out);
  CHECK(check.code == 0);
  // The move holds: up keeps web where it was moved.
  CHECK(sb.Lab("up " + file).out.find("No changes.") != std::string::npos);

  // Stopped, mid1 moves with its nested VMs and stays off until started on hv2.
  REQUIRE(sb.Lab("stop two-hosts mid1").code == 0);
  REQUIRE(sb.Lab("move two-hosts mid1 --to hv2").code == 0);
  CHECK(ParentOf(sb, "mid1", &state) == "hv2");
  CHECK(state == "off");
  REQUIRE(sb.Lab("start two-hosts mid1").code == 0);
  CHECK(ParentOf(sb, "n11", &state) == "mid1");
  CHECK(state == "running");
  CHECK(PortsOf(sb, "hv1") == 1);
  CHECK(PortsOf(sb, "hv2") == 4);
  check = sb.Lab("check two-hosts");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "two-hosts");
  REQUIRE(sb.Lab("down two-hosts").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}

TEST_CASE("lab down takes down a lab with saved VMs, a nested one saved inside a running one", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + lab::testing::Src("labs/nested-nat.yaml")).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  // nested1's cgroup is frozen by itself, below middle's, which is not: thawing middle alone
  // would leave it frozen, and a frozen process does not die of SIGKILL.
  REQUIRE(sb.Lab("save nested-nat nested1").code == 0);
  REQUIRE(sb.Lab("status nested-nat").out.find("saved") != std::string::npos);
  lab::testing::e2e::TakeDownLeavingNothing(sb, "nested-nat", pids);
}
