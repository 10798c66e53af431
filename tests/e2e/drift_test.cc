// Drift: objects changed behind lab's back are reported by `lab status` (exit 1, one line per
// object and what was found), planned by `lab plan` with the reason, and repaired by `lab up`,
// after which the plan is empty again and the lab's checks pass. The tampering goes through the
// kernel layer (netlink, libnftables, kill by recorded pid), as a user's own tools would.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>

#include "hv/kernel/netlink.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;
using lab::hv::kernel::Netlink;
using lab::hv::kernel::NetNs;

namespace {

const char* kLab = "nested-nat";
std::string File() { return lab::testing::Src("labs/nested-nat.yaml"); }

void InMachine(const Sandbox& sb, const std::string& machine, const std::function<void(const NetNs&, Netlink&)>& fn) {
  std::string run = MachineRun(sb, kLab, machine);
  REQUIRE(!run.empty());
  auto ns = NetNs::Open(run + "/ns/net");
  REQUIRE(ns.ok());
  auto nl = Netlink::In(*ns);
  REQUIRE(nl.ok());
  fn(*ns, *nl);
}

/// "machine name#ifindex" of every interface of the lab's machines: the same list after a
/// repair means no link was remade.
std::vector<std::string> Interfaces(const Sandbox& sb) {
  std::vector<std::string> out;
  for (const char* m : {"hv1", "middle", "nested1", "nested2"}) {
    std::string run = MachineRun(sb, kLab, m);
    auto ns = NetNs::Open(run + "/ns/net");
    if (!ns.ok()) continue;
    auto nl = Netlink::In(*ns);
    if (!nl.ok()) continue;
    auto links = nl->Links();
    if (!links.ok()) continue;
    for (const auto& l : *links) out.push_back(std::string(m) + " " + l.name + "#" + std::to_string(l.index));
  }
  return out;
}

/// The gateways of the default routes inside `machine`.
std::vector<std::string> DefaultRoutes(const Sandbox& sb, const std::string& lab, const std::string& machine) {
  auto ns = NetNs::Open(MachineRun(sb, lab, machine) + "/ns/net");
  REQUIRE(ns.ok());
  auto nl = Netlink::In(*ns);
  REQUIRE(nl.ok());
  auto routes = nl->DefaultRoutes();
  REQUIRE(routes.ok());
  std::vector<std::string> out;
  for (const auto& r : *routes) out.push_back(r.gateway.ToString());
  return out;
}

int PidOf(const Sandbox& sb, const std::string& machine) {
  auto j = nlohmann::json::parse(sb.Lab("status " + std::string(kLab) + " --json").out);
  for (const auto& m : j["machines"])
    if (m["name"] == machine) return m["pid"].get<int>();
  return 0;
}

/// Up, tamper, then: status reports `drift`, plan says `reason`, up repairs, checks pass, down
/// leaves nothing. `in_place`: the repair is one change and remakes nothing (every machine keeps
/// its init, every interface its ifindex). `seen`: more checks on the tampered lab.
void DetectAndRepair(const std::function<void(const Sandbox&)>& tamper, const std::string& drift,
                     const std::string& reason, bool in_place = false,
                     const std::function<void(const Sandbox&)>& seen = nullptr) {
  Sandbox sb;
  Run up = sb.Lab("up " + File());
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);
  NoteMarks(sb);
  REQUIRE(sb.Lab("status " + std::string(kLab)).code == 0);

  tamper(sb);

  Run status = sb.Lab("status " + std::string(kLab));
  INFO(status.out);
  CHECK(status.code == 1);
  CHECK(status.out.find(drift) != std::string::npos);
  Run plan = sb.Lab("plan " + File());
  INFO(plan.out);
  CHECK(plan.out.find(reason) != std::string::npos);
  if (seen) seen(sb);
  std::vector<std::string> ifaces_before = Interfaces(sb);

  Run repair = sb.Lab("up " + File());
  INFO(repair.out);
  REQUIRE(repair.code == 0);
  if (in_place) {
    CHECK(repair.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);
    CHECK(repair.out.find("  repaired ") != std::string::npos);
    CHECK(InitPids(sb, kLab) == pids);
    CHECK(Interfaces(sb) == ifaces_before);
  }
  CHECK(sb.Lab("plan " + File()).out.find("No changes.") != std::string::npos);
  Run after = sb.Lab("status " + std::string(kLab));
  INFO(after.out);
  CHECK(after.code == 0);
  CHECK(after.out.find("no drift") != std::string::npos);
  Run check = sb.Lab("check " + std::string(kLab));
  INFO(check.out);
  CHECK(check.code == 0);

  auto now = InitPids(sb, kLab);
  pids.insert(pids.end(), now.begin(), now.end());
  REQUIRE(sb.Lab("down " + std::string(kLab)).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

}  // namespace

TEST_CASE("A deleted veth is reported as drift and remade by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "nested1", [](const NetNs&, Netlink& nl) { REQUIRE(nl.DeleteLink("Ethernet").ok()); });
      },
      "adapter/nested1/Ethernet: veth 'Ethernet' of VM 'nested1' is missing",
      "drift: veth 'Ethernet' of VM 'nested1' is missing: remake it");
}

TEST_CASE("A partition whose init was killed is reported as drift and started again by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        auto j = nlohmann::json::parse(sb.Lab("status nested-nat --json").out);
        int pid = 0;
        for (const auto& m : j["machines"])
          if (m["name"] == "nested1") pid = m["pid"].get<int>();
        REQUIRE(pid > 0);
        REQUIRE(::kill(pid, SIGKILL) == 0);  // the init lab started, by its recorded pid
        for (int i = 0; i < 200 && !ProcessGone(pid); ++i) ::usleep(10000);
      },
      "partition/nested1: not running", "not running: start it (its disk is kept)");
}

TEST_CASE("A flushed NAT table is reported as drift and filled again by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "middle", [](const NetNs& ns, Netlink&) {
          auto tables = lab::hv::kernel::NftListTables(ns);
          REQUIRE(tables.ok());
          std::string nat;
          for (const auto& t : *tables)
            if (t.rfind("ip lab_", 0) == 0) nat = t;
          REQUIRE(!nat.empty());
          REQUIRE(lab::hv::kernel::NftApply(ns, "flush table " + nat + "\n").ok());
        });
      },
      "has no masquerade rule (flushed)", "has no masquerade rule (flushed): remake it");
}

TEST_CASE("A changed address is reported as drift, shown as found by status and put back in place by up",
          "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "nested1", [](const NetNs&, Netlink& nl) {
          REQUIRE(nl.DeleteAddress("Ethernet", *lab::Cidr::Parse("192.168.100.2/24")).ok());
          REQUIRE(nl.AddAddress("Ethernet", *lab::Cidr::Parse("192.168.100.9/24")).ok());
        });
      },
      "adapter/nested1/Ethernet: address of 'Ethernet' is 192.168.100.9/24, not 192.168.100.2/24",
      "drift: address of 'Ethernet' is 192.168.100.9/24, not 192.168.100.2/24", /*in_place=*/true,
      [](const Sandbox& sb) {
        // What is there, marked where it differs from the records.
        Run status = sb.Lab("status " + std::string(kLab));
        INFO(status.out);
        CHECK(status.out.find("Ethernet 192.168.100.9/24 (recorded 192.168.100.2/24)") != std::string::npos);
        auto j = nlohmann::json::parse(sb.Lab("status " + std::string(kLab) + " --json").out);
        bool found = false;
        for (const auto& m : j["machines"])
          if (m["name"] == "nested1") {
            REQUIRE(m["interfaces"].size() == 1);
            const auto& i = m["interfaces"][0];
            CHECK(i["recorded"] == "192.168.100.2/24");
            CHECK(i["addresses"] == nlohmann::json::array({"192.168.100.9/24"}));
            CHECK(i["differs"] == true);
            CHECK(i["up"] == true);
            found = true;
          }
        CHECK(found);
      });
}

TEST_CASE("A VM's default route deleted is reported as drift and put back in place by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "nested1", [](const NetNs&, Netlink& nl) { REQUIRE(nl.DeleteDefaultRoute().ok()); });
        REQUIRE(DefaultRoutes(sb, kLab, "nested1").empty());
      },
      "adapter/nested1/Ethernet: no default route (via 192.168.100.1)",
      "drift: no default route (via 192.168.100.1): put back in place", /*in_place=*/true,
      [](const Sandbox& sb) {
        auto j = nlohmann::json::parse(sb.Lab("status " + std::string(kLab) + " --json").out);
        for (const auto& m : j["machines"])
          if (m["name"] == "nested1") {
            CHECK(m["default_routes"] == nlohmann::json::array());
            CHECK(m["gateways"] == nlohmann::json::array({"192.168.100.1"}));
          }
      });
}

TEST_CASE("A VM's link set down is reported as drift and set up again in place by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "nested1", [](const NetNs&, Netlink& nl) { REQUIRE(nl.SetUp("Ethernet", false).ok()); });
      },
      // Linux drops the routes through a link set down: the default route goes with it.
      "adapter/nested1/Ethernet: link of veth 'Ethernet' of VM 'nested1' is down; no default route (via "
      "192.168.100.1)",
      "put back in place: link up, address and default route set again (nothing is remade)", /*in_place=*/true,
      [](const Sandbox& sb) {
        Run status = sb.Lab("status " + std::string(kLab));
        INFO(status.out);
        CHECK(status.out.find("Ethernet 192.168.100.2/24 (link down)") != std::string::npos);
      });
}

TEST_CASE("A rewritten resolv.conf is reported as drift and written again in place by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        int pid = PidOf(sb, "nested1");
        REQUIRE(pid > 0);
        // As a user (or a DHCP client) would inside the VM: its own /etc/resolv.conf, written
        // through whatever it is (a link into the VM's /run on a current base).
        std::ofstream f("/proc/" + std::to_string(pid) + "/root/etc/resolv.conf", std::ios::trunc);
        f << "nameserver 8.8.8.8\n";
        f.close();
        REQUIRE(f.good());
      },
      "dns/nested1: /etc/resolv.conf of 'nested1' names 8.8.8.8, not 10.10.0.1",
      "drift: /etc/resolv.conf of 'nested1' names 8.8.8.8, not 10.10.0.1: write resolv.conf again, in place",
      /*in_place=*/true,
      [](const Sandbox& sb) {
        auto j = nlohmann::json::parse(sb.Lab("status " + std::string(kLab) + " --json").out);
        for (const auto& m : j["machines"])
          if (m["name"] == "nested1") {
            CHECK(m["dns_found"] == nlohmann::json::array({"8.8.8.8"}));
            CHECK(m["dns"] == nlohmann::json::array({"10.10.0.1"}));
          }
      });
}

TEST_CASE("A VM's cable pulled and plugged back in (lab link down, up) keeps its default route", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Run up = sb.Lab("up " + File());
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);
  NoteMarks(sb);
  REQUIRE(DefaultRoutes(sb, kLab, "middle") == std::vector<std::string>{"10.10.0.1"});

  REQUIRE(sb.Lab("link " + std::string(kLab) + " middle Ethernet down").code == 0);
  // Pulled: drift, which up would repair (the cable plugged back in).
  Run status = sb.Lab("status " + std::string(kLab));
  INFO(status.out);
  CHECK(status.code == 1);
  CHECK(status.out.find("adapter/middle/Ethernet: link of veth 'Ethernet' of VM 'middle' is down") != std::string::npos);
  Run plan = sb.Lab("plan " + File());
  INFO(plan.out);
  CHECK(plan.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);

  Run back = sb.Lab("link " + std::string(kLab) + " middle Ethernet up");
  INFO(back.out);
  REQUIRE(back.code == 0);
  CHECK(DefaultRoutes(sb, kLab, "middle") == std::vector<std::string>{"10.10.0.1"});
  status = sb.Lab("status " + std::string(kLab));
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("no drift") != std::string::npos);
  CHECK(sb.Lab("plan " + File()).out.find("No changes.") != std::string::npos);
  Run check = sb.Lab("check " + std::string(kLab));  // nested1's NAT'd traffic leaves by middle's default route
  INFO(check.out);
  CHECK(check.code == 0);

  auto now = InitPids(sb, kLab);
  CHECK(now == pids);
  REQUIRE(sb.Lab("down " + std::string(kLab)).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("A host NIC's cable pulled and plugged back in keeps its address and default route", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string lab = "nic-pull";
  std::string file = sb.dir + "/nic-pull.yaml";
  REQUIRE(lab::WriteFileAtomic(file,
                               "lab: nic-pull\n"
                               "networks:\n"
                               "  lan: {subnet: 10.71.0.0/24, gateway: 10.71.0.1}\n"
                               "hosts:\n"
                               "  hv1:\n"
                               "    nics:\n"
                               "      Ethernet: {network: lan, ip: 10.71.0.11/24, gateway: 10.71.0.1, dns: [10.71.0.1]}\n"
                               "checks:\n"
                               "  - {from: hv1, ping: 10.71.0.1}\n"));
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, lab);
  NoteMarks(sb);
  REQUIRE(DefaultRoutes(sb, lab, "hv1") == std::vector<std::string>{"10.71.0.1"});

  REQUIRE(sb.Lab("link " + lab + " hv1 Ethernet down").code == 0);
  Run status = sb.Lab("status " + lab);
  INFO(status.out);
  CHECK(status.code == 1);
  CHECK(status.out.find("nic/hv1/Ethernet: link of veth 'Ethernet' of host 'hv1' is down; no default route (via "
                        "10.71.0.1)") != std::string::npos);
  CHECK(status.out.find("Ethernet 10.71.0.11/24 (link down)") != std::string::npos);

  REQUIRE(sb.Lab("link " + lab + " hv1 Ethernet up").code == 0);
  CHECK(DefaultRoutes(sb, lab, "hv1") == std::vector<std::string>{"10.71.0.1"});
  status = sb.Lab("status " + lab);
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("Ethernet 10.71.0.11/24") != std::string::npos);
  CHECK(sb.Lab("plan " + file).out.find("No changes.") != std::string::npos);
  CHECK(sb.Lab("check " + lab).code == 0);

  // Pulled again and left: lab up plugs it back in, in place.
  REQUIRE(sb.Lab("link " + lab + " hv1 Ethernet down").code == 0);
  Run repair = sb.Lab("up " + file);
  INFO(repair.out);
  CHECK(repair.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);
  CHECK(DefaultRoutes(sb, lab, "hv1") == std::vector<std::string>{"10.71.0.1"});
  CHECK(sb.Lab("status " + lab).code == 0);

  REQUIRE(sb.Lab("down " + lab).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("A stopped stand-in service is reported as drift and started again by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        std::string run = MachineRun(sb, kLab, "lan", "n");
        auto note = nlohmann::json::parse(lab::ReadFile(run + "/standin.json").value_or("{}"));
        int pid = note["dnsmasq"].value("pid", 0);
        REQUIRE(pid > 0);
        REQUIRE(::kill(pid, SIGKILL) == 0);  // the dnsmasq lab started, by its pid
        for (int i = 0; i < 200 && !ProcessGone(pid); ++i) ::usleep(10000);
      },
      "standin/lan: not running", "drift: not running: remake it");
}
