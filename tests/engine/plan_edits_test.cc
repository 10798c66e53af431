// Plans of realistic edits to a lab that is up: what each one says it will do, and that it does
// no more than Hyper-V would (addresses, gateways and DNS servers change in place, a switch
// rename is a rename, a restart is one line per VM).
//
// The golden files tests/engine/golden/edit-*.plan hold the text `lab plan` prints without colors
// for each edit of labs/nested-nat.yaml recorded as made. After a deliberate change, rewrite them
// with LAB_UPDATE_GOLDEN=1 and read the diff before committing:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_engine "[golden]"
#include <catch2/catch.hpp>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "engine/plan.h"
#include "engine/resources.h"
#include "tests/engine/engine_support.h"

using lab::engine::Action;
using lab::engine::ActionType;
using lab::engine::Change;
using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::Kind;
using lab::engine::Plan;
using lab::engine::RenderPlanText;
using lab::testing::ByKey;
using lab::testing::CompareWithGolden;
using lab::testing::kUid;
using lab::testing::LabText;
using lab::testing::LoadLab;
using lab::testing::ParseLab;
using lab::testing::Recorded;
using lab::testing::ReplaceOnce;
using lab::testing::UpdateLines;

namespace {

/// nested-nat recorded as made, and the plan for `text` against it.
Plan PlanEdit(const std::string& text, const lab::engine::Observed& broken = {}) {
  return ComputePlan(Desired(ParseLab(text), kUid), Recorded(Desired(LoadLab("nested-nat"), kUid)), broken);
}

/// The records after `plan` was applied to nested-nat: what the executor writes (records of
/// what it made or updated, none of what it deleted).
lab::state::Snapshot AppliedRecords(const Plan& plan) {
  auto snap = Recorded(Desired(LoadLab("nested-nat"), kUid));
  for (const auto& a : plan.actions) {
    if (a.type == ActionType::kDelete || a.old.key != a.resource.key) snap.resources.erase(a.old.key);
    if (a.type != ActionType::kDelete) snap.resources[a.resource.key] = lab::testing::RecordOf(a.resource);
  }
  return snap;
}

// nested1 moves to .4, middle's gateway and DNS servers change, hv1's NIC moves to .12.
std::string AddressEdits() {
  std::string text = LabText("nested-nat");
  text = ReplaceOnce(text, "ip: 192.168.100.2/24", "ip: 192.168.100.4/24");
  text = ReplaceOnce(text, "ip: 10.10.0.10/24, gateway: 10.10.0.1, dns: [10.10.0.1]",
                     "ip: 10.10.0.10/24, gateway: 10.10.0.2, dns: [10.10.0.1, 10.10.0.2]");
  text = ReplaceOnce(text, "ip: 10.10.0.11/24", "ip: 10.10.0.12/24");
  return text;
}

const Change* FindChange(const Action& a, const std::string& key) {
  for (const auto& c : a.changes)
    if (c.key == key) return &c;
  return nullptr;
}

}  // namespace

TEST_CASE("Address, gateway and DNS edits plan as in-place changes, remaking nothing", "[engine][golden]") {
  Plan plan = PlanEdit(AddressEdits());
  CompareWithGolden(RenderPlanText(plan), "edit-addresses.plan");
  for (const auto& a : plan.actions) {
    INFO(a.resource.key << ": " << a.reason);
    CHECK(a.type == ActionType::kUpdate);
  }
  auto by = ByKey(plan);
  // hv1's NIC is bound to its external switch with management OS: the address is the switch's.
  std::set<std::string> keys;
  for (const auto& [k, _] : by) keys.insert(k);
  CHECK(keys == std::set<std::string>{"switch/hv1/External", "adapter/middle/Ethernet", "dns/middle",
                                      "adapter/nested1/Ethernet", "standin/lan"});
  REQUIRE(FindChange(*by["adapter/nested1/Ethernet"], "ip"));
  CHECK(*FindChange(*by["adapter/nested1/Ethernet"], "ip") == Change{"ip", "192.168.100.2/24", "192.168.100.4/24"});
  CHECK(*FindChange(*by["adapter/middle/Ethernet"], "gateway") == Change{"gateway", "10.10.0.1", "10.10.0.2"});
  CHECK(*FindChange(*by["dns/middle"], "dns") == Change{"dns", "10.10.0.1", "10.10.0.1, 10.10.0.2"});
  CHECK(plan.Summary() == "Plan: 0 to add, 5 to change, 0 to destroy.");
}

TEST_CASE("A NIC's address and gateway change in place where no switch holds them", "[engine]") {
  auto before = Desired(LoadLab("switch-types"), kUid);
  std::string text = ReplaceOnce(LabText("switch-types"), "ip: 10.50.0.11/24, gateway: 10.50.0.1,",
                                 "ip: 10.50.0.111/24, gateway: 10.50.0.254,");
  Plan plan = ComputePlan(Desired(ParseLab(text), kUid), Recorded(before), {});
  auto by = ByKey(plan);
  REQUIRE(by.count("nic/hv1/Ethernet"));
  const Action& a = *by["nic/hv1/Ethernet"];
  CHECK(a.type == ActionType::kUpdate);
  CHECK(a.reason == "ip 10.50.0.11/24 -> 10.50.0.111/24, gateway 10.50.0.1 -> 10.50.0.254: in place, the link stays up "
                    "(New-NetIPAddress, New-NetRoute)");
  for (const auto& x : plan.actions) CHECK(x.type == ActionType::kUpdate);  // and the stand-in's record of hv1

  CHECK(UpdateLines(a) == std::vector<std::string>{"SetNicAddress hv1/Ethernet ip=10.50.0.111/24 gateway=10.50.0.254"});
}

TEST_CASE("An internal switch's address changes in place, and what is connected to it stays", "[engine]") {
  std::string text = LabText("nested-nat");
  text = ReplaceOnce(text, "ip: 192.168.100.1/24               # vEthernet (VmNAT)", "ip: 192.168.100.254/24");
  text = ReplaceOnce(text, "ip: 192.168.100.2/24, gateway: 192.168.100.1", "ip: 192.168.100.2/24, gateway: 192.168.100.254");
  text = ReplaceOnce(text, "ip: 192.168.100.3/24, gateway: 192.168.100.1", "ip: 192.168.100.3/24, gateway: 192.168.100.254");
  Plan plan = PlanEdit(text);
  auto by = ByKey(plan);
  REQUIRE(by.count("switch/middle/VmNAT"));
  CHECK(by["switch/middle/VmNAT"]->type == ActionType::kUpdate);
  CHECK(by["adapter/nested1/Ethernet"]->type == ActionType::kUpdate);
  CHECK(by["adapter/nested2/Ethernet"]->type == ActionType::kUpdate);
  for (const auto& a : plan.actions) CHECK(a.type == ActionType::kUpdate);

  CHECK(UpdateLines(*by["switch/middle/VmNAT"]) ==
        std::vector<std::string>{"SetSwitch middle/VmNAT bridge=VmNAT ip=192.168.100.254/24"});
  CHECK(UpdateLines(*by["adapter/nested1/Ethernet"]) ==
        std::vector<std::string>{
            "SetAdapter nested1/Ethernet mac_address_spoofing=off ip=192.168.100.2/24 gateway=192.168.100.254"});
}

TEST_CASE("A switch rename is a rename in place: its bridge, its ports and its NAT stay", "[engine][golden]") {
  std::string text = LabText("nested-nat");
  text = ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.2/24", "- {switch: NatSwitch, ip: 192.168.100.2/24");
  text = ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.3/24", "- {switch: NatSwitch, ip: 192.168.100.3/24");
  text = ReplaceOnce(text, "          VmNAT:\n", "          NatSwitch:\n");
  Plan plan = PlanEdit(text);
  CompareWithGolden(RenderPlanText(plan), "edit-rename-switch.plan");
  auto by = ByKey(plan);
  REQUIRE(by.count("switch/middle/NatSwitch"));
  const Action& sw = *by["switch/middle/NatSwitch"];
  CHECK(sw.type == ActionType::kUpdate);
  CHECK(sw.old.key == "switch/middle/VmNAT");
  CHECK(sw.resource.spec["ifname"] == "VmNAT");  // an up bridge cannot be renamed: its altnames are
  CHECK(*FindChange(sw, "name") == Change{"name", "VmNAT", "NatSwitch"});
  for (const auto& a : plan.actions) {
    INFO(a.resource.key << ": " << a.reason);
    CHECK(a.type == ActionType::kUpdate);
  }
  CHECK(by["adapter/nested1/Ethernet"]->resource.spec["switch_ifname"] == "VmNAT");
  CHECK(*FindChange(*by["adapter/nested1/Ethernet"], "switch") == Change{"switch", "VmNAT", "NatSwitch"});
  CHECK(plan.destroy == 0);

  // The records follow the new name, and the next plan has nothing to do.
  CHECK(ComputePlan(Desired(ParseLab(text), kUid), AppliedRecords(plan), {}).empty());

  CHECK(UpdateLines(sw) == std::vector<std::string>{"SetSwitch middle/NatSwitch bridge=VmNAT ip=192.168.100.1/24"});
}

TEST_CASE("A switch that changes more than its name and address is not taken for a rename", "[engine]") {
  std::string text = LabText("nested-nat");
  text = ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.2/24", "- {switch: Other, ip: 192.168.100.2/24");
  text = ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.3/24", "- {switch: Other, ip: 192.168.100.3/24");
  auto a = text.find("          VmNAT:\n");
  auto b = text.find("        vms:\n          nested1:");
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  text.replace(a, b - a, "          Other: {type: private}\n");
  Plan plan = PlanEdit(text);
  auto by = ByKey(plan);
  REQUIRE(by.count("switch/middle/VmNAT"));
  CHECK(by["switch/middle/VmNAT"]->type == ActionType::kDelete);
  REQUIRE(by.count("switch/middle/Other"));
  CHECK(by["switch/middle/Other"]->type == ActionType::kCreate);
}

TEST_CASE("A restart is one line per VM, with what it holds, counted as a restart", "[engine][golden]") {
  std::string text = ReplaceOnce(LabText("nested-nat"), "startup: 2GiB", "startup: 3GiB");
  text = ReplaceOnce(text, "ip: 192.168.100.2/24", "ip: 192.168.100.4/24");
  Plan plan = PlanEdit(text);
  CompareWithGolden(RenderPlanText(plan), "edit-restart.plan");
  std::string shown = RenderPlanText(plan);
  CHECK_THAT(shown, Catch::Contains("  -/+  restart VM 'middle' (on hv1) (and 2 VMs inside): stop, memory.startup 2GiB -> "
                                    "3GiB, start\n"));
  // The remade nested adapter shows its new address.
  CHECK_THAT(shown, Catch::Contains("adapter 'Ethernet' of VM 'nested1' on switch 'VmNAT': ip 192.168.100.2/24 -> "
                                    "192.168.100.4/24"));
  CHECK(plan.restart == 1);
  CHECK(plan.destroy == 0);
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 1 to restart, 0 to destroy.");  // the stand-in's record
  auto by = ByKey(plan);
  CHECK(by["partition/middle"]->restart);
  CHECK(by["partition/middle"]->within.empty());
  CHECK(by["partition/nested1"]->within == "partition/middle");
  CHECK(by["adapter/nested1/Ethernet"]->within == "partition/middle");
  CHECK(lab::engine::Restarts(plan).size() == 3);  // middle and the two VMs running inside it
}

TEST_CASE("A VM found not running is one start line, not a destroy", "[engine][golden]") {
  Plan plan = PlanEdit(LabText("nested-nat"), {"partition/nested2"});
  CHECK(RenderPlanText(plan) ==
        "  -/+  start VM 'nested2' (on middle): start\n"
        "        not running: start it (its disk is kept)\n"
        "Plan: 0 to add, 0 to change, 1 to restart, 0 to destroy.\n");
  CHECK(lab::engine::Restarts(plan).empty());
}

TEST_CASE("Sizes show in units and settings by their lab-file keys", "[engine]") {
  auto text = ReplaceOnce(LabText("nested-nat"), "nested1:\n            memory: {startup: 512MiB}",
                          "nested1:\n            memory: {startup: 768MiB}");
  Plan plan = PlanEdit(text);
  REQUIRE(plan.actions.size() == 1);
  CHECK(plan.actions[0].reason == "memory.startup 512MiB -> 768MiB: in place, the VM keeps running (Set-VMMemory)");
  // A changed switch name shows as `switch`, never as the kernel's names.
  std::string moved = ReplaceOnce(LabText("nested-nat"), "switches:\n          VmNAT:",
                                  "switches:\n          Other: {type: private}\n          VmNAT:");
  moved = ReplaceOnce(moved, "- {switch: VmNAT, ip: 192.168.100.3/24", "- {switch: Other, ip: 192.168.100.3/24");
  Plan other = PlanEdit(moved);
  auto by = ByKey(other);
  REQUIRE(by.count("adapter/nested2/Ethernet"));
  const Action& a = *by["adapter/nested2/Ethernet"];
  CHECK(a.type == ActionType::kReplace);
  CHECK(a.reason == "remade with private switch 'Other' on 'middle'; switch VmNAT -> Other");
  for (const auto& x : other.actions) CHECK_THAT(x.reason, !Catch::Contains("ifname"));
}

TEST_CASE("The stand-in's DNS records show per name: added, changed, removed", "[engine][golden]") {
  std::string text = ReplaceOnce(LabText("nested-nat"), "      www.example.test: 10.10.0.1\n",
                                 "      mon-vm.example.test: 10.10.0.31\n");
  text = ReplaceOnce(text, "ip: 192.168.100.3/24", "ip: 192.168.100.9/24");
  Plan plan = PlanEdit(text);
  CompareWithGolden(RenderPlanText(plan), "edit-dns-records.plan");
  auto by = ByKey(plan);
  REQUIRE(by.count("standin/lan"));
  const Action& s = *by["standin/lan"];
  CHECK(s.type == ActionType::kUpdate);
  CHECK(s.changes == std::vector<Change>{{"record mon-vm.example.test", "", "10.10.0.31"},
                                         {"record nested2", "192.168.100.3", "192.168.100.9"},
                                         {"record www.example.test", "10.10.0.1", ""}});
  std::string shown = RenderPlanText(plan);
  CHECK_THAT(shown, Catch::Contains("          + mon-vm.example.test 10.10.0.31\n"));
  CHECK_THAT(shown, Catch::Contains("          ~ nested2 192.168.100.3 -> 192.168.100.9\n"));
  CHECK_THAT(shown, Catch::Contains("          - www.example.test 10.10.0.1\n"));
}

TEST_CASE("Deleting a VM warns that its disk goes with it", "[engine][golden]") {
  std::string text = LabText("nested-nat");
  auto a = text.find("          nested2:");
  auto b = text.find("checks:");
  REQUIRE(a != std::string::npos);
  text.erase(a, b - a);
  text = ReplaceOnce(text, "  - {from: nested1, ping: 192.168.100.3}                                          # nested2, same switch\n", "");
  Plan plan = PlanEdit(text);
  CompareWithGolden(RenderPlanText(plan), "edit-delete-vm.plan");
  CHECK(plan.warnings ==
        std::vector<std::string>{"VM 'nested2' will be deleted with its disk (Remove-VM; its differencing disk is lost)"});
  CHECK_THAT(RenderPlanText(plan),
             Catch::Contains("  ! VM 'nested2' will be deleted with its disk (Remove-VM; its differencing disk is lost)\n"));
  // A restart keeps the disk: no warning.
  CHECK(PlanEdit(ReplaceOnce(LabText("nested-nat"), "startup: 2GiB", "startup: 3GiB")).warnings.empty());
}

TEST_CASE("A dependent remake still shows its own changes", "[engine]") {
  // The switch changes type (remade); nested1's adapter is remade with it and also moves to .4.
  std::string text = ReplaceOnce(LabText("nested-nat"), "ip: 192.168.100.2/24", "ip: 192.168.100.4/24");
  Plan plan = PlanEdit(text, {"switch/middle/VmNAT"});
  auto by = ByKey(plan);
  REQUIRE(by.count("adapter/nested1/Ethernet"));
  const Action& a = *by["adapter/nested1/Ethernet"];
  CHECK(a.type == ActionType::kReplace);
  CHECK(a.reason == "remade with internal switch 'VmNAT' on 'middle'; ip 192.168.100.2/24 -> 192.168.100.4/24");
}
