// Drift: objects changed behind lab's back are reported by `lab status` (exit 1, one line per
// object and what was found), planned by `lab plan` with the reason, and repaired by `lab up`,
// after which the plan is empty again and the lab's checks pass. The tampering goes through the
// kernel layer (netlink, libnftables, kill by recorded pid), as a user's own tools would.
#include <signal.h>

#include <catch2/catch.hpp>
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

/// Up, tamper, then: status reports `drift`, plan says `reason`, up repairs, checks pass, down
/// leaves nothing.
void DetectAndRepair(const std::function<void(const Sandbox&)>& tamper, const std::string& drift,
                     const std::string& reason) {
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

  Run repair = sb.Lab("up " + File());
  INFO(repair.out);
  REQUIRE(repair.code == 0);
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

TEST_CASE("A changed address is reported as drift and put back by up", "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  DetectAndRepair(
      [](const Sandbox& sb) {
        InMachine(sb, "nested1", [](const NetNs&, Netlink& nl) {
          REQUIRE(nl.DeleteAddress("Ethernet", *lab::Cidr::Parse("192.168.100.2/24")).ok());
          REQUIRE(nl.AddAddress("Ethernet", *lab::Cidr::Parse("192.168.100.9/24")).ok());
        });
      },
      "adapter/nested1/Ethernet: address of 'Ethernet' is 192.168.100.9/24, not 192.168.100.2/24",
      "drift: address of 'Ethernet' is 192.168.100.9/24, not 192.168.100.2/24: remake it");
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
