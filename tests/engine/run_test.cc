// A machine's run: commands: one planned action per machine, after everything that gives it its
// addresses, routes and DNS; run when the machine is made or remade, never on a no-op up; a
// failing command fails the action and leaves nothing recorded, so the next up runs them again.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "hv/spec.h"
#include "schema/lab.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::ExecOptions;
using lab::engine::Execute;
using lab::engine::Kind;
using lab::engine::Observed;
using lab::engine::Plan;
using lab::engine::RenderPlanText;
using lab::engine::Resource;
using lab::testing::ByKey;
using lab::testing::FakeHypervisor;
using lab::testing::IndexOf;
using lab::testing::kUid;
using lab::testing::LabText;
using lab::testing::OpenStore;
using lab::testing::ParseLab;
using lab::testing::Recorded;
using lab::testing::ReplaceOnce;
using lab::testing::StateDir;

namespace {

/// nested-nat with run: commands on nested1 (and, with `on_host`, one on hv1).
std::string WithRun(const std::string& commands = "[\"echo one > /tmp/x\", \"cat /tmp/x\"]", bool on_host = false) {
  std::string text = ReplaceOnce(LabText("nested-nat"), "          nested1:\n            memory: {startup: 512MiB}\n",
                                 "          nested1:\n            memory: {startup: 512MiB}\n            run: " +
                                     commands + "\n            run_timeout: 5s\n");
  if (on_host) text = ReplaceOnce(text, "  hv1:\n    nics:\n", "  hv1:\n    run: [hostname]\n    nics:\n");
  return text;
}

const Resource& Find(const std::vector<Resource>& rs, const std::string& key) {
  for (const auto& r : rs)
    if (r.key == key) return r;
  FAIL("no resource " << key);
  throw;
}

}  // namespace

TEST_CASE("A VM's run: commands are one action after its adapters, addresses, DNS and the stand-ins", "[engine]") {
  auto desired = Desired(ParseLab(WithRun()), kUid);
  const Resource& run = Find(desired, "run/nested1");
  CHECK(run.kind == Kind::kRun);
  CHECK(run.display == "run VM 'nested1' (2 commands)");
  for (const char* dep : {"partition/nested1", "adapter/nested1/Ethernet", "dns/nested1", "standin/lan"}) {
    INFO(dep);
    CHECK(std::count(run.deps.begin(), run.deps.end(), dep) == 1);
  }
  auto spec = run.spec.get<lab::hv::RunSpec>();
  CHECK(spec.machine == "nested1");
  CHECK(spec.commands == std::vector<std::string>{"echo one > /tmp/x", "cat /tmp/x"});
  CHECK(spec.timeout_ms == 5000);
  CHECK(spec.lineage == std::vector<std::string>{"hv1", "middle", "nested1"});
  // Made after each of them.
  auto at = [&](const std::string& key) {
    return std::find_if(desired.begin(), desired.end(), [&](const Resource& r) { return r.key == key; }) - desired.begin();
  };
  for (const auto& d : run.deps) CHECK(at(d) < at("run/nested1"));
  // Machines without run: have none.
  for (const auto& r : desired) CHECK((r.kind != Kind::kRun || r.key == "run/nested1"));

  Plan plan = ComputePlan(desired, {}, {});
  CHECK_THAT(RenderPlanText(plan), Catch::Contains("  +    run VM 'nested1' (2 commands)\n"));
}

TEST_CASE("A host's run: commands are planned as its own, with its NICs and switches first", "[engine]") {
  auto desired = Desired(ParseLab(WithRun("[\"true\"]", /*on_host=*/true)), kUid);
  const Resource& run = Find(desired, "run/hv1");
  CHECK(run.display == "run host 'hv1' (1 command)");
  for (const char* dep : {"partition/hv1", "nic/hv1/Ethernet", "switch/hv1/External", "dns/hv1"}) {
    INFO(dep);
    CHECK(std::count(run.deps.begin(), run.deps.end(), dep) == 1);
  }
  CHECK(run.spec.value("timeout_ms", 0) == 60000);  // the default run_timeout
}

TEST_CASE("run: commands run again when their VM is remade or they change, never on a no-op up", "[engine]") {
  auto desired = Desired(ParseLab(WithRun()), kUid);
  auto recorded = Recorded(desired);
  CHECK(ComputePlan(desired, recorded, {}).empty());

  // nested1 found dead: remade, and its commands with it.
  Plan dead_plan = ComputePlan(desired, recorded, Observed{"partition/nested1"});
  auto dead = ByKey(dead_plan);
  REQUIRE(dead.count("run/nested1"));
  CHECK(dead.at("run/nested1")->type == ActionType::kReplace);
  // Its parent restarted: the same.
  Plan parent_plan = ComputePlan(desired, recorded, Observed{"partition/middle"});
  auto parent = ByKey(parent_plan);
  REQUIRE(parent.count("run/nested1"));
  CHECK(parent.at("run/nested1")->type == ActionType::kReplace);

  // Other commands: run again (nothing else changes).
  auto changed = ComputePlan(Desired(ParseLab(WithRun("[\"echo two\"]")), kUid), recorded, {});
  REQUIRE(changed.actions.size() == 1);
  CHECK(changed.actions[0].resource.key == "run/nested1");
  CHECK(changed.actions[0].type == ActionType::kReplace);

  // run: removed from the file: the record (and its log) goes.
  Plan removed_plan = ComputePlan(Desired(ParseLab(LabText("nested-nat")), kUid), recorded, {});
  auto removed = ByKey(removed_plan);
  REQUIRE(removed.size() == 1);
  CHECK(removed.at("run/nested1")->type == ActionType::kDelete);
}

TEST_CASE("A failing run: command fails its action with nothing recorded, and the next run retries it", "[engine]") {
  StateDir dir;
  auto store = OpenStore(dir.path);
  REQUIRE(store->PutLab(lab::state::LabRecord{"nested-nat", kUid, "/labs/nested-nat.yaml", 0, 0}).ok());
  FakeHypervisor hv;
  auto desired = Desired(ParseLab(WithRun()), kUid);
  hv.FailOn("RunCommands nested1", "VM 'nested1': run: command 2 of 2 (cat /tmp/x) exited with code 1");
  auto first = Execute(ComputePlan(desired, *store->Load("nested-nat"), {}), "nested-nat", hv, *store,
                       ExecOptions{2, nullptr});
  CHECK(first.failed == 1);
  CHECK(first.skipped == 0);  // nothing waits on it
  REQUIRE(first.errors.size() == 1);
  CHECK_THAT(first.errors[0], Catch::Contains("run/nested1: VM 'nested1': run: command 2 of 2 (cat /tmp/x) exited with code 1"));
  auto calls = hv.Calls();
  // It ran after its VM's adapter and DNS settings.
  CHECK(IndexOf(calls, "RunCommands nested1") > IndexOf(calls, "ConnectAdapter nested1/Ethernet"));
  CHECK(IndexOf(calls, "RunCommands nested1") > IndexOf(calls, "SetDns nested1"));
  CHECK(store->Load("nested-nat")->resources.count("run/nested1") == 0);

  hv.Heal();
  hv.ClearCalls();
  Plan again = ComputePlan(desired, *store->Load("nested-nat"), {});
  REQUIRE(again.actions.size() == 1);
  CHECK(again.actions[0].resource.key == "run/nested1");
  CHECK(again.actions[0].type == ActionType::kCreate);
  CHECK(Execute(again, "nested-nat", hv, *store, ExecOptions{2, nullptr}).ok());
  CHECK(hv.Calls() == std::vector<std::string>{"RunCommands nested1"});
  CHECK(ComputePlan(desired, *store->Load("nested-nat"), {}).empty());
}

TEST_CASE("run_timeout takes a duration, and a bad one is an error at its place", "[engine]") {
  std::string text = ReplaceOnce(WithRun(), "run_timeout: 5s", "run_timeout: soon");
  auto r = lab::schema::Parse(text, "lab.yaml");
  REQUIRE_FALSE(r.ok());
  REQUIRE(r.diagnostics.size() == 1);
  CHECK_THAT(r.diagnostics[0].ToString(), Catch::Matches(R"(lab\.yaml:\d+:\d+: error: .*run_timeout: expected a duration like 2s or 500ms, got .*)"));
}
