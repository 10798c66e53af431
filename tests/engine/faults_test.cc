// The engine under faults, with the recording fake hypervisor (no root): drift the hypervisor
// observes is planned as a remake with its reason and shown by status; what a killed run left
// (a pending record, an action left intended) is remade by the next up and settled after it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "engine/executor.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::Engine;
using lab::engine::EngineOptions;
using lab::engine::ExecOptions;
using lab::engine::Plan;
using lab::testing::FakeHypervisor;
using lab::testing::LoadLab;
using lab::testing::StateDir;

namespace {

struct Fixture {
  StateDir dir;
  FakeHypervisor hv;
  std::unique_ptr<Engine> engine;

  Fixture() { engine = Open(hv); }
  std::unique_ptr<Engine> Open(FakeHypervisor& fake) { return lab::testing::OpenEngine(dir, fake); }
  /// Up, returning the plan it ran.
  Plan Up(const ExecOptions& exec = ExecOptions{2, nullptr}) {
    auto r = engine->Up(LoadLab("nested-nat"), nullptr, exec);
    INFO(r.message());
    REQUIRE(r);
    INFO(lab::Join(r->report.errors, "\n"));
    REQUIRE(r->report.ok());
    return r->plan;
  }
};

const lab::engine::Action* Find(const Plan& plan, const std::string& key) {
  for (const auto& a : plan.actions)
    if (a.resource.key == key) return &a;
  return nullptr;
}

}  // namespace

TEST_CASE("Drift the hypervisor observes is shown by status and remade by up, with its reason", "[engine]") {
  Fixture f;
  f.Up();
  f.hv.SetDrift("adapter/nested1/Ethernet", "veth 'Ethernet' of VM 'nested1' is missing");
  auto status = f.engine->Status("nested-nat");
  REQUIRE(status);
  CHECK(status->drift ==
        std::vector<std::string>{"adapter/nested1/Ethernet: veth 'Ethernet' of VM 'nested1' is missing"});

  auto plan = f.engine->PlanUp(LoadLab("nested-nat"));
  REQUIRE(plan);
  const auto* a = Find(*plan, "adapter/nested1/Ethernet");
  REQUIRE(a != nullptr);
  CHECK(a->type == ActionType::kReplace);
  CHECK(a->reason == "drift: veth 'Ethernet' of VM 'nested1' is missing: remake it");
  // Only that adapter: nothing else lives in it.
  CHECK(plan->Summary() == "Plan: 1 to add, 0 to change, 1 to destroy.");

  f.hv.ClearCalls();
  f.Up();
  CHECK(f.hv.Mutations() ==
        std::vector<std::string>{"RemoveAdapter nested1/Ethernet", "ConnectAdapter nested1/Ethernet"});
  f.hv.ClearDrift();  // what the remake did in the kernel
  CHECK(f.engine->PlanUp(LoadLab("nested-nat"))->empty());
}

TEST_CASE("Drift with only settings gone is repaired in place by up: a change, nothing remade", "[engine]") {
  Fixture f;
  f.Up();
  f.hv.SetDrift("adapter/nested1/Ethernet", "link of veth 'Ethernet' of VM 'nested1' is down", /*in_place=*/true);
  f.hv.SetDrift("switch/middle/VmNAT", "address of 'VmNAT' is none, not 192.168.100.1/24", true);
  f.hv.SetDrift("dns/nested2", "/etc/resolv.conf of 'nested2' names 8.8.8.8, not 10.10.0.1", true);
  auto status = f.engine->Status("nested-nat");
  REQUIRE(status);
  CHECK(status->drift.size() == 3);

  auto plan = f.engine->PlanUp(LoadLab("nested-nat"));
  REQUIRE(plan);
  // The switch keeps its VMs' adapters: nothing is remade with it.
  CHECK(plan->Summary() == "Plan: 0 to add, 3 to change, 0 to destroy.");
  const auto* a = Find(*plan, "adapter/nested1/Ethernet");
  REQUIRE(a != nullptr);
  CHECK(a->type == ActionType::kUpdate);
  CHECK(a->repair);
  CHECK(a->reason ==
        "drift: link of veth 'Ethernet' of VM 'nested1' is down: put back in place: link up, address and default "
        "route set again (nothing is remade)");
  const auto* d = Find(*plan, "dns/nested2");
  REQUIRE(d != nullptr);
  CHECK(d->reason == "drift: /etc/resolv.conf of 'nested2' names 8.8.8.8, not 10.10.0.1: write resolv.conf again, "
                     "in place (Set-DnsClientServerAddress)");

  f.hv.ClearCalls();
  f.Up();
  auto calls = f.hv.Mutations();
  std::sort(calls.begin(), calls.end());
  CHECK(calls == std::vector<std::string>{"RepairAdapter nested1/Ethernet", "RepairSwitch middle/VmNAT", "SetDns nested2"});
  f.hv.ClearDrift();
  CHECK(f.engine->PlanUp(LoadLab("nested-nat"))->empty());
}

TEST_CASE("An object both missing a part and drifted in settings is remade, not repaired", "[engine]") {
  lab::engine::Observed o;
  o.insert("adapter/a/Ethernet", "link down", /*in_place=*/true);
  CHECK(o.in_place("adapter/a/Ethernet"));
  o.insert("adapter/a/Ethernet", "interrupted while being made");
  CHECK_FALSE(o.in_place("adapter/a/Ethernet"));
  CHECK(o.what("adapter/a/Ethernet") == "link down");
  o.insert("nic/h/NIC1", "not running");
  o.insert("nic/h/NIC1", "link down", true);  // a remake found first stays a remake
  CHECK_FALSE(o.in_place("nic/h/NIC1"));
}

TEST_CASE("A run killed right after making an object leaves it pending; the next up remakes it", "[engine]") {
  Fixture f;
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Kill point 3: the second action's object is made, its record not yet committed.
    FakeHypervisor hv;
    EngineOptions o;
    o.state_dir = f.dir.path;
    o.run_dir = f.dir.path + "/run";
    o.hypervisor = hv.Factory();
    auto e = Engine::Open(o);
    if (e) {
      ExecOptions exec{1, nullptr};
      exec.kill_at = 3;
      (void)(*e)->Up(LoadLab("nested-nat"), nullptr, exec);
    }
    ::_exit(0);
  }
  int ws = 0;
  REQUIRE(::waitpid(child, &ws, 0) == child);
  REQUIRE(WIFSIGNALED(ws));
  CHECK(WTERMSIG(ws) == SIGKILL);

  auto plan = f.engine->PlanUp(LoadLab("nested-nat"));
  REQUIRE(plan);
  int pending = 0;
  for (const auto& a : plan->actions)
    if (a.type == ActionType::kReplace && a.reason.rfind("interrupted while being made: ", 0) == 0) ++pending;
  CHECK(pending == 1);

  Plan ran = f.Up();
  // The host whose making was interrupted is started again on its disk: a restart, not a remake.
  CHECK(ran.Summary() == "Plan: 15 to add, 0 to change, 1 to restart, 0 to destroy.");
  CHECK(f.engine->PlanUp(LoadLab("nested-nat"))->empty());
  // The interrupted entry is settled: a further up has nothing to redo.
  CHECK(f.engine->store().Intended("nested-nat").empty());
}

TEST_CASE("An action left intended by a dead process is redone by the next up", "[engine]") {
  Fixture f;
  f.Up();
  // A delete begun and never finished: the object may be gone while its record stays.
  auto id = f.engine->store().BeginAction("nested-nat", "delete", "nat/middle/LocalNAT", "not in the lab file");
  REQUIRE(id);
  f.hv.ClearCalls();
  std::string reason;
  auto r = f.engine->Up(
      LoadLab("nested-nat"),
      [&](const Plan& p) {
        if (const auto* a = Find(p, "nat/middle/LocalNAT")) reason = a->reason;
      },
      ExecOptions{2, nullptr});
  REQUIRE(r);
  CHECK(r->report.ok());
  CHECK(reason == "interrupted while being removed: remake it");
  CHECK(f.hv.Mutations() == std::vector<std::string>{"RemoveNat middle/LocalNAT", "CreateNat middle/LocalNAT"});
  CHECK(f.engine->store().Intended("nested-nat").empty());
  CHECK(f.engine->PlanUp(LoadLab("nested-nat"))->empty());
}
