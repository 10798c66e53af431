// lab move's placements: the lab file with a VM's subtree under another host.
#include <catch2/catch.hpp>

#include "engine/placement.h"
#include "engine/resources.h"
#include "tests/engine/engine_support.h"

using lab::engine::ApplyPlacements;
using lab::engine::CheckPlacement;
using lab::engine::MoveMachine;
using lab::testing::LabText;
using lab::testing::ParseLab;
using lab::testing::ReplaceOnce;

namespace {

/// two-hosts with a plain VM 'web' on hv1's External switch.
lab::schema::Lab WithWeb() {
  return ParseLab(ReplaceOnce(LabText("two-hosts"), "  hv2:\n",
                              "      web:\n"
                              "        memory: {startup: 256MiB}\n"
                              "        adapters:\n"
                              "          - {switch: External, ip: 10.20.0.30/24, gateway: 10.20.0.1}\n"
                              "  hv2:\n"));
}

std::vector<std::string> Order(const lab::schema::Lab& lab) {
  std::vector<std::string> out;
  for (const auto& m : lab.machines) out.push_back(m.name + "@" + std::to_string(m.depth) + "<" + m.parent);
  return out;
}

}  // namespace

TEST_CASE("Moving a middle VM puts it and its nested VMs under the new host, parents first", "[engine]") {
  auto lab = WithWeb();
  REQUIRE(CheckPlacement(lab, "mid1", "hv2").empty());
  auto moved = MoveMachine(lab, "mid1", "hv2");
  CHECK(Order(moved) == std::vector<std::string>{"hv1@0<", "web@1<hv1", "hv2@0<", "mid2@1<hv2", "n21@2<mid2",
                                                 "n22@2<mid2", "mid1@1<hv2", "n11@2<mid1", "n12@2<mid1"});
  CHECK(moved.FindMachine("hv1")->vms == std::vector<std::string>{"web"});
  CHECK(moved.FindMachine("hv2")->vms == std::vector<std::string>{"mid2", "mid1"});
  // The resources follow: mid1's partition lives in hv2, its adapter is a port of hv2's switch.
  auto rs = lab::engine::Desired(moved, lab::testing::kUid);
  for (const auto& r : rs) {
    if (r.key == "partition/mid1") CHECK(r.deps == std::vector<std::string>{"partition/hv2"});
    if (r.key == "adapter/mid1/Ethernet") CHECK(r.spec.dump().find("hv2") != std::string::npos);
  }
}

TEST_CASE("A move is refused with the reason when the destination cannot hold the VM", "[engine]") {
  auto lab = WithWeb();
  CHECK_THAT(CheckPlacement(lab, "web", "nosuch"), Catch::Contains("'nosuch' is not a host of lab 'two-hosts'") &&
                                                       Catch::Contains("hv1, hv2"));
  CHECK_THAT(CheckPlacement(lab, "hv1", "hv2"), Catch::Contains("is a host"));
  CHECK_THAT(CheckPlacement(lab, "n11", "hv2"), Catch::Contains("nested inside 'mid1' and moves with it"));
  CHECK_THAT(CheckPlacement(lab, "ghost", "hv2"), Catch::Contains("has no machine 'ghost'"));
  // The destination's switch has another name: Move-VM would leave the adapter disconnected.
  auto renamed = ParseLab(ReplaceOnce(
      ReplaceOnce(ReplaceOnce(LabText("two-hosts"), "  hv2:\n",
                              "      web:\n        adapters:\n          - {switch: External, ip: 10.20.0.30/24}\n  hv2:\n"),
                  "      External: {type: external, nics: [Ethernet], allow_management_os: true}\n    vms:\n      mid2:",
                  "      Uplink: {type: external, nics: [Ethernet], allow_management_os: true}\n    vms:\n      mid2:"),
      "{switch: External, ip: 10.20.0.22/24", "{switch: Uplink, ip: 10.20.0.22/24"));
  CHECK_THAT(CheckPlacement(renamed, "web", "hv2"),
             Catch::Contains("host 'hv2' has no switch 'External' for adapter 'Ethernet' of 'web'"));
}

TEST_CASE("A placement the file no longer allows is ignored with a note", "[engine]") {
  auto lab = WithWeb();
  auto placed = ApplyPlacements(lab, {{"web", "hv2"}, {"gone", "hv2"}, {"mid2", "hv9"}});
  CHECK(placed.lab.FindMachine("web")->parent == "hv2");
  CHECK(placed.lab.FindMachine("mid2")->parent == "hv2");
  REQUIRE(placed.notes.size() == 2);
  CHECK_THAT(placed.notes[0], Catch::Contains("'gone'") && Catch::Contains("runs where the lab file puts it"));
  CHECK_THAT(placed.notes[1], Catch::Contains("'mid2' was moved to 'hv9'"));
  // A placement the file now agrees with changes nothing.
  CHECK(ApplyPlacements(lab, {{"web", "hv1"}}).lab.machines.size() == lab.machines.size());
  CHECK(ApplyPlacements(lab, {{"web", "hv1"}}).notes.empty());
}
