// lab link: fault injection on a NIC, and the SET switches teaming it reacting within the
// command, with a recording hypervisor in place of the kernel.
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "engine/link.h"
#include "tests/engine/engine_support.h"

using lab::engine::Engine;
using lab::engine::ExecOptions;
using lab::engine::LinkRequest;
using lab::testing::FakeHypervisor;
using lab::testing::LoadLab;
using lab::testing::StateDir;

namespace {

struct Fixture {
  StateDir dir;
  FakeHypervisor hv;
  std::unique_ptr<Engine> engine;

  Fixture() {
    engine = lab::testing::OpenEngine(dir, hv);
    auto up = engine->Up(LoadLab("set-team"), nullptr, ExecOptions{3, nullptr});
    INFO(up.message());
    REQUIRE(up);
    REQUIRE(up->report.ok());
    hv.ClearCalls();
  }

  lab::Result<lab::engine::LinkReport> Link(const std::string& machine, const std::string& ifname, bool up) {
    return lab::engine::SetLink(*engine, LinkRequest{"set-team", machine, ifname, up});
  }
};

}  // namespace

TEST_CASE("lab up binds every port of a SET switch to a member, both members carrying ports", "[engine]") {
  Fixture f;
  auto st = f.engine->Status("set-team");
  REQUIRE(st);
  REQUIRE(st->teams.size() == 1);
  CHECK(lab::hv::DescribeTeam(st->teams[0].members) ==
        "NIC1 up (middle/Ethernet, vm1/Ethernet), NIC2 up (vEthernet)");
  CHECK(st->teams[0].members[0].primary);
  CHECK_FALSE(st->teams[0].members[1].primary);
  // A second up with nothing to do leaves the bindings alone.
  auto again = f.engine->Up(LoadLab("set-team"), nullptr, ExecOptions{3, nullptr});
  REQUIRE(again);
  CHECK(f.hv.Mutations().empty());
}

TEST_CASE("lab link downs a NIC, its SET switch moves the NIC's ports to the member up and rebalances when it is back",
          "[engine]") {
  Fixture f;
  auto down = f.Link("hv1", "NIC1", false);
  INFO(down.message());
  REQUIRE(down);
  CHECK(down->what == "NIC 'NIC1' of host 'hv1'");
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetLink hv1/NIC1 down", "ReconcileTeam hv1/SETswitch"});
  REQUIRE(down->teams.size() == 1);
  CHECK(down->teams[0].switch_name == "SETswitch");
  CHECK(lab::hv::DescribeTeam(down->teams[0].members) == "NIC1 down, NIC2 up (middle/Ethernet, vEthernet, vm1/Ethernet)");
  CHECK(down->teams[0].members[1].primary);

  // lab status shows the team as it is, without changing it.
  f.hv.ClearCalls();
  auto st = f.engine->Status("set-team");
  REQUIRE(st);
  REQUIRE(st->teams.size() == 1);
  CHECK(st->teams[0].owner == "hv1");
  CHECK(lab::hv::DescribeTeam(st->teams[0].members) == "NIC1 down, NIC2 up (middle/Ethernet, vEthernet, vm1/Ethernet)");
  CHECK(f.hv.Mutations().empty());

  // Back up: the ports are dealt over both members again, as before the failure.
  auto up = f.Link("hv1", "NIC1", true);
  REQUIRE(up);
  CHECK(lab::hv::DescribeTeam(up->teams.at(0).members) == "NIC1 up (middle/Ethernet, vm1/Ethernet), NIC2 up (vEthernet)");
  CHECK(up->teams[0].members[0].primary);

  // A NIC no SET switch teams: the link changes, no switch is asked to react.
  f.hv.ClearCalls();
  auto other = f.Link("hv2", "Ethernet", false);
  REQUIRE(other);
  CHECK(other->teams.empty());
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetLink hv2/Ethernet down"});

  // Journaled, and the lab's records are untouched: the next up has nothing to do.
  auto journal = f.engine->store().Journal("set-team", 10);
  REQUIRE(journal.size() >= 3);
  CHECK(journal[0].action == "link down");
  CHECK(journal[0].key == "nic/hv2/Ethernet");
  auto plan = f.engine->PlanUp(LoadLab("set-team"));
  REQUIRE(plan);
  CHECK(plan->empty());
}

TEST_CASE("lab link up gives the interface back its address and default route, as Windows keeps them", "[engine]") {
  Fixture f;
  REQUIRE(f.Link("hv2", "Ethernet", false));
  REQUIRE(f.Link("vm1", "Ethernet", false));
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetLink hv2/Ethernet down", "SetLink vm1/Ethernet down"});
  f.hv.ClearCalls();
  REQUIRE(f.Link("hv2", "Ethernet", true));
  REQUIRE(f.Link("vm1", "Ethernet", true));
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetLink hv2/Ethernet up", "RepairNic hv2/Ethernet",
                                                     "SetLink vm1/Ethernet up", "RepairAdapter vm1/Ethernet"});
  // A SET member under a switch with a vEthernet: the vEthernet's address and route come back too.
  REQUIRE(f.Link("hv1", "NIC1", false));
  f.hv.ClearCalls();
  REQUIRE(f.Link("hv1", "NIC1", true));
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetLink hv1/NIC1 up", "RepairNic hv1/NIC1",
                                                     "RepairSwitch hv1/SETswitch", "ReconcileTeam hv1/SETswitch"});
}

TEST_CASE("lab link refuses what the lab does not have, before changing anything", "[engine]") {
  Fixture f;
  auto no_nic = f.Link("hv1", "NIC3", false);
  REQUIRE_FALSE(no_nic);
  CHECK(no_nic.message() == "host 'hv1' has no NIC or adapter 'NIC3' (it has: NIC1, NIC2)");
  auto no_machine = f.Link("hv9", "NIC1", false);
  REQUIRE_FALSE(no_machine);
  CHECK(no_machine.message() == "lab 'set-team' has no machine 'hv9'");
  auto no_lab = lab::engine::SetLink(*f.engine, LinkRequest{"nope", "hv1", "NIC1", false});
  REQUIRE_FALSE(no_lab);
  CHECK(no_lab.message().find("lab 'nope' is not up") != std::string::npos);
  f.hv.MarkDead("vm1");
  auto off = f.Link("vm1", "Ethernet", false);
  REQUIRE_FALSE(off);
  CHECK(off.message() == "adapter 'Ethernet' of VM 'vm1': the machine is off; start it first: lab start set-team vm1");
  CHECK(f.hv.Mutations().empty());
}

TEST_CASE("A SET switch's spec says it teams, and only a SET switch's spec has the field", "[engine]") {
  auto resources = lab::engine::Desired(LoadLab("set-team"), lab::testing::kUid);
  bool found = false;
  for (const auto& r : resources)
    if (r.key == "switch/hv1/SETswitch") {
      found = true;
      auto s = r.spec.get<lab::hv::SwitchSpec>();
      CHECK(s.embedded_teaming);
      CHECK(s.uplinks == std::vector<std::string>{"NIC1", "NIC2"});
    } else if (r.kind == lab::engine::Kind::kSwitch) {
      CHECK_FALSE(r.spec.contains("embedded_teaming"));  // other switches keep their recorded hashes
    }
  CHECK(found);
}

TEST_CASE("SET members and the adapters bound to them are reported by their written names", "[engine]") {
  const auto resources = lab::engine::Desired(LoadLab("hyperv-names"), "0123abcd");
  std::vector<lab::hv::TeamMember> team = {
      lab::hv::TeamMember{"Ethernet-2", true, true, {"DC01/Network-Adapter", "vEthernet"}},
      lab::hv::TeamMember{"NIC1", false, false, {}}};  // no such interface: as it is
  lab::engine::NameAsWritten(resources, "HV01", &team);
  CHECK(team[0].name == "Ethernet 2");
  CHECK(team[0].ports == std::vector<std::string>{"DC01/Network Adapter", "vEthernet"});
  CHECK(team[1].name == "NIC1");
  // Another machine's interface of that kernel name is not the owner's.
  std::vector<lab::hv::TeamMember> other = {lab::hv::TeamMember{"Ethernet-2", true, true, {}}};
  lab::engine::NameAsWritten(resources, "DC01", &other);
  CHECK(other[0].name == "Ethernet-2");
}
