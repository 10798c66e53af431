// The executor against a recording hypervisor and a real store: what runs, in which order, and
// what the records say afterwards.
#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::ExecOptions;
using lab::engine::ExecReport;
using lab::engine::Execute;
using lab::engine::HomesOf;
using lab::engine::Plan;
using lab::engine::Resource;
using lab::engine::StepEvent;
using lab::testing::CreateLine;
using lab::testing::FakeHypervisor;
using lab::testing::IndexOf;
using lab::testing::kUid;
using lab::testing::LoadLab;
using lab::testing::OpenStore;
using lab::testing::RemoveLine;
using lab::testing::StateDir;

namespace {

constexpr const char* kLab = "nested-nat";

/// A store with the lab recorded (resources need their lab row).
struct Fixture {
  StateDir dir;
  std::unique_ptr<lab::state::Store> store = OpenStore(dir.path);
  FakeHypervisor hv;
  std::vector<Resource> desired = Desired(LoadLab(kLab), kUid);

  Fixture() { REQUIRE(store->PutLab(lab::state::LabRecord{kLab, kUid, "/labs/nested-nat.yaml", 0, 0}).ok()); }

  lab::state::Snapshot Snapshot() {
    auto s = store->Load(kLab);
    REQUIRE(s);
    return *s;
  }
  std::set<std::string> RecordedKeys() {
    std::set<std::string> out;
    for (const auto& [k, _] : Snapshot().resources) out.insert(k);
    return out;
  }
  std::set<std::string> DesiredKeys(const std::set<std::string>& except = {}) const {
    std::set<std::string> out;
    for (const auto& r : desired)
      if (!except.count(r.key)) out.insert(r.key);
    return out;
  }
  const Resource& Get(const std::string& key) const {
    for (const auto& r : desired)
      if (r.key == key) return r;
    FAIL("no resource " << key);
    throw;
  }
};

/// Collects step events (the executor serializes on_step calls, but keep it honest).
struct Steps {
  std::mutex mu;
  std::vector<std::string> skipped, failed, done;
  ExecOptions Options(int jobs) {
    ExecOptions o;
    o.jobs = jobs;
    o.on_step = [this](const StepEvent& ev) {
      std::lock_guard guard(mu);
      std::string what = (ev.teardown ? "-" : "+") + ev.action->resource.key;
      if (ev.skipped) skipped.push_back(what);
      else if (!ev.status.ok()) failed.push_back(what);
      else done.push_back(what);
    };
    return o;
  }
};

std::set<std::string> AsSet(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

std::vector<std::string> Starting(const std::vector<std::string>& calls, const std::vector<std::string>& prefixes) {
  std::vector<std::string> out;
  for (const auto& c : calls)
    for (const auto& p : prefixes)
      if (c.rfind(p, 0) == 0) out.push_back(c);
  return out;
}

const std::vector<std::string> kMakers = {"Create", "Connect", "Set", "Start"};
const std::vector<std::string> kRemovers = {"Remove", "Clear", "Stop"};

}  // namespace

TEST_CASE("Executor makes every resource after the resources it depends on", "[engine]") {
  Fixture f;
  Plan plan = ComputePlan(f.desired, f.Snapshot(), {});
  ExecReport report = Execute(plan, kLab, f.hv, *f.store, ExecOptions{4, nullptr});
  INFO(lab::Join(report.errors, "\n"));
  REQUIRE(report.ok());
  CHECK(report.done == static_cast<int>(f.desired.size()));

  auto calls = f.hv.Calls();
  CHECK(calls.size() == f.desired.size());  // one call per resource, nothing else
  for (const auto& r : f.desired) {
    long at = IndexOf(calls, CreateLine(r));
    INFO(r.key);
    REQUIRE(at >= 0);
    for (const auto& d : r.deps) {
      INFO("depends on " << d);
      CHECK(IndexOf(calls, CreateLine(f.Get(d))) < at);
    }
  }

  auto snap = f.Snapshot();
  CHECK(f.RecordedKeys() == f.DesiredKeys());
  // Records carry what the hypervisor reported, and the spec hash of what was made.
  const auto& middle = snap.resources.at("partition/middle");
  CHECK_THAT(middle.facts, Catch::Contains(R"("init":{"pid":)"));
  CHECK(middle.spec_hash == f.Get("partition/middle").Hash());
  CHECK(middle.parent == "partition/hv1");
  CHECK(middle.kind == "partition");
  // Made again from its records, the lab has nothing left to do.
  CHECK(ComputePlan(f.desired, snap, {}).empty());
}

TEST_CASE("A failed create stops what depends on it and lets the rest run", "[engine]") {
  Fixture f;
  f.hv.FailOn("CreateSwitch middle/VmNAT", "bridge VmNAT: File exists");
  Steps steps;
  Plan plan = ComputePlan(f.desired, f.Snapshot(), {});
  ExecReport report = Execute(plan, kLab, f.hv, *f.store, steps.Options(3));

  CHECK_FALSE(report.ok());
  CHECK(report.failed == 1);
  CHECK(report.skipped == 3);
  CHECK(report.done == static_cast<int>(f.desired.size()) - 4);
  CHECK(report.errors == std::vector<std::string>{"switch/middle/VmNAT: bridge VmNAT: File exists"});
  CHECK(AsSet(steps.failed) == std::set<std::string>{"+switch/middle/VmNAT"});
  CHECK(AsSet(steps.skipped) ==
        std::set<std::string>{"+nat/middle/LocalNAT", "+adapter/nested1/Ethernet", "+adapter/nested2/Ethernet"});

  // Nothing was asked of the hypervisor for the skipped ones; independent ones all ran.
  auto calls = f.hv.Calls();
  CHECK(IndexOf(calls, "CreateNat middle/LocalNAT") == -1);
  CHECK(IndexOf(calls, "ConnectAdapter nested1/Ethernet") == -1);
  CHECK(IndexOf(calls, "ConnectAdapter nested2/Ethernet") == -1);
  CHECK(IndexOf(calls, "CreatePartition nested2") >= 0);
  CHECK(IndexOf(calls, "SetDns nested1") >= 0);
  CHECK(IndexOf(calls, "StartStandIn lan") >= 0);

  // The journal says what failed and why; the records hold exactly what was made.
  bool journaled = false;
  for (const auto& e : f.store->Journal(kLab, 1000))
    if (e.key == "switch/middle/VmNAT") {
      journaled = true;
      CHECK(e.action == "create");
      CHECK(e.status == "failed");
      CHECK(e.error == "bridge VmNAT: File exists");
    }
  CHECK(journaled);
  CHECK(f.RecordedKeys() == f.DesiredKeys({"switch/middle/VmNAT", "nat/middle/LocalNAT", "adapter/nested1/Ethernet",
                                           "adapter/nested2/Ethernet"}));
}

TEST_CASE("After a failed create the next run makes only what is missing", "[engine]") {
  Fixture f;
  f.hv.FailOn("ConnectAdapter nested1/Ethernet");
  ExecReport first = Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  CHECK(first.failed == 1);
  CHECK(first.skipped == 0);  // nothing waits on a nested VM's adapter
  CHECK(f.RecordedKeys() == f.DesiredKeys({"adapter/nested1/Ethernet"}));

  f.hv.Heal();
  f.hv.ClearCalls();
  Plan again = ComputePlan(f.desired, f.Snapshot(), {});
  REQUIRE(again.actions.size() == 1);
  CHECK(again.actions[0].type == ActionType::kCreate);
  CHECK(again.actions[0].resource.key == "adapter/nested1/Ethernet");
  ExecReport second = Execute(again, kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  CHECK(second.ok());
  CHECK(f.hv.Calls() == std::vector<std::string>{"ConnectAdapter nested1/Ethernet"});
  CHECK(f.RecordedKeys() == f.DesiredKeys());
  CHECK(ComputePlan(f.desired, f.Snapshot(), {}).empty());
}

TEST_CASE("After a failed switch the next run makes the switch and what waited on it", "[engine]") {
  Fixture f;
  f.hv.FailOn("CreateSwitch middle/VmNAT");
  (void)Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  f.hv.Heal();
  f.hv.ClearCalls();
  Plan again = ComputePlan(f.desired, f.Snapshot(), {});
  std::set<std::string> keys;
  for (const auto& a : again.actions) {
    CHECK(a.type == ActionType::kCreate);
    keys.insert(a.resource.key);
  }
  CHECK(keys == std::set<std::string>{"switch/middle/VmNAT", "nat/middle/LocalNAT", "adapter/nested1/Ethernet",
                                      "adapter/nested2/Ethernet"});
  CHECK(Execute(again, kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  CHECK(AsSet(f.hv.Calls()) == std::set<std::string>{"CreateSwitch middle/VmNAT", "CreateNat middle/LocalNAT",
                                                     "ConnectAdapter nested1/Ethernet",
                                                     "ConnectAdapter nested2/Ethernet"});
  CHECK(f.RecordedKeys() == f.DesiredKeys());
}

TEST_CASE("Teardown after a partial run removes exactly what was recorded, dependents first", "[engine]") {
  Fixture f;
  f.hv.FailOn("CreatePartition middle");
  ExecReport up = Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  REQUIRE(up.failed == 1);
  REQUIRE(up.skipped == 10);  // middle's adapter, switch, NAT, DNS, and both nested VMs with theirs
  auto recorded = f.Snapshot();
  auto made = lab::engine::RecordedResources(recorded);
  REQUIRE(made.size() == f.desired.size() - 11);

  f.hv.Heal();
  f.hv.ClearCalls();
  Plan down = ComputePlan({}, recorded, {});
  ExecReport report = Execute(down, kLab, f.hv, *f.store, ExecOptions{3, nullptr});
  INFO(lab::Join(report.errors, "\n"));
  REQUIRE(report.ok());
  CHECK(report.done == static_cast<int>(made.size()));

  // Everything goes: on its own, or (links, switches, DNS settings) with the partitions that hold it.
  auto calls = f.hv.Calls();
  std::set<std::string> expected;
  for (const auto& r : made)
    if (HomesOf(r).empty()) expected.insert(RemoveLine(r));
  CHECK(AsSet(calls) == expected);
  CHECK(calls.size() == expected.size());
  for (const auto& r : made)
    for (const auto& d : r.deps) {
      if (!expected.count(RemoveLine(r))) continue;
      INFO(r.key << " depends on " << d);
      CHECK(IndexOf(calls, RemoveLine(r)) < IndexOf(calls, RemoveLine(f.Get(d))));
    }
  CHECK(f.Snapshot().resources.empty());
}

TEST_CASE("Deleting a whole lab removes its links, switches, NATs and DNS settings with their partitions, each journaled", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.ClearCalls();
  Steps steps;
  ExecReport report = Execute(ComputePlan({}, f.Snapshot(), {}), kLab, f.hv, *f.store, steps.Options(2));
  REQUIRE(report.ok());
  CHECK(report.done == static_cast<int>(f.desired.size()));
  auto calls = f.hv.Calls();
  for (const char* gone_with_partitions : {"RemoveAdapter", "RemoveSwitch", "RemoveNic", "RemoveNat", "ClearDns"})
    CHECK(Starting(calls, {gone_with_partitions}).empty());
  CHECK(AsSet(Starting(calls, {"RemovePartition"})) ==
        std::set<std::string>{"RemovePartition hv1", "RemovePartition middle", "RemovePartition nested1",
                              "RemovePartition nested2"});
  // Every resource is reported and journaled as deleted, and no record is left.
  std::set<std::string> deleted;
  for (const auto& d : steps.done) deleted.insert(d);
  CHECK(deleted.size() == f.desired.size());
  std::set<std::string> journaled;
  for (const auto& e : f.store->Journal(kLab, 1000))
    if (e.action == "delete" && e.status == "done") journaled.insert(e.key);
  CHECK(journaled == f.DesiredKeys());
  CHECK(f.Snapshot().resources.empty());
}

TEST_CASE("A link whose partition did not go keeps its record for the next run", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.FailOn("RemovePartition middle", "device busy");
  ExecReport report = Execute(ComputePlan({}, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  CHECK_FALSE(report.ok());
  auto keys = f.RecordedKeys();
  // Inside middle: still recorded. The nested VMs went, but their adapters' ports live in middle.
  for (const char* k : {"partition/middle", "partition/hv1", "switch/middle/VmNAT", "nat/middle/LocalNAT",
                        "adapter/middle/Ethernet", "adapter/nested1/Ethernet", "adapter/nested2/Ethernet"})
    CHECK(keys.count(k));
  for (const char* k : {"partition/nested1", "partition/nested2", "dns/nested1", "dns/nested2"}) CHECK_FALSE(keys.count(k));

  // The next run removes the rest for real: what is already gone is success.
  f.hv.Heal();
  f.hv.ClearCalls();
  REQUIRE(Execute(ComputePlan({}, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  auto calls = f.hv.Calls();
  CHECK(IndexOf(calls, "RemoveAdapter nested1/Ethernet") >= 0);  // nested1 is no longer in the plan
  CHECK(IndexOf(calls, "RemoveAdapter nested1/Ethernet") < IndexOf(calls, "RemovePartition middle"));
  CHECK(f.Snapshot().resources.empty());
}

TEST_CASE("A failed teardown step means nothing is made", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.ClearCalls();
  f.hv.FailOn("RemoveAdapter nested1/Ethernet", "device busy");
  Steps steps;
  Plan plan = ComputePlan(f.desired, f.Snapshot(), {"partition/middle"});
  ExecReport report = Execute(plan, kLab, f.hv, *f.store, steps.Options(2));

  CHECK(report.failed == 1);
  CHECK(Starting(f.hv.Calls(), kMakers).empty());
  // What lived in what failed to go stays; teardown that did not wait on it went ahead.
  CHECK(AsSet(steps.skipped) == std::set<std::string>{"-partition/nested1", "-switch/middle/VmNAT", "-partition/middle"});
  CHECK(report.skipped == 3);
  CHECK(IndexOf(f.hv.Calls(), "RemoveAdapter nested2/Ethernet") >= 0);
  CHECK(IndexOf(f.hv.Calls(), "RemovePartition middle") == -1);
  // No record is lost: what failed to go, what waited on it, and the old halves of remakes that
  // went (found gone, the next run makes them again) are all still recorded.
  auto keys = f.RecordedKeys();
  for (const char* k : {"adapter/nested1/Ethernet", "partition/nested1", "switch/middle/VmNAT", "partition/middle",
                        "adapter/nested2/Ethernet", "partition/nested2", "nat/middle/LocalNAT", "dns/nested1"})
    CHECK(keys.count(k));
}

TEST_CASE("Executor remakes a replaced resource: the old copy goes before the new one comes, and a VM keeps its disk", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.ClearCalls();
  Plan plan = ComputePlan(f.desired, f.Snapshot(), {"partition/nested2"});
  REQUIRE(plan.actions.size() == 3);  // nested2, its adapter, its DNS
  REQUIRE(Execute(plan, kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  auto calls = f.hv.Calls();
  CHECK(calls.size() == 6);
  // A remade VM is stopped (Stop-VM keeps its disk), never removed.
  CHECK(IndexOf(calls, "RemovePartition nested2") == -1);
  CHECK(IndexOf(calls, "RemoveAdapter nested2/Ethernet") < IndexOf(calls, "StopPartition nested2"));
  CHECK(IndexOf(calls, "ClearDns nested2") < IndexOf(calls, "StopPartition nested2"));
  for (const char* make : {"CreatePartition nested2", "ConnectAdapter nested2/Ethernet", "SetDns nested2"})
    for (const char* remove : {"StopPartition nested2", "RemoveAdapter nested2/Ethernet", "ClearDns nested2"})
      CHECK(IndexOf(calls, remove) < IndexOf(calls, make));
  CHECK(IndexOf(calls, "CreatePartition nested2") < IndexOf(calls, "ConnectAdapter nested2/Ethernet"));
  CHECK(f.RecordedKeys() == f.DesiredKeys());
  // The new copy's facts are recorded (a new init).
  auto facts = f.Snapshot().resources.at("partition/nested2").facts;
  CHECK_THAT(facts, Catch::Contains("\"pid\":"));
}

TEST_CASE("Executor updates a stand-in by restarting it with the new records", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.ClearCalls();
  auto changed = Desired(lab::testing::ParseLab(lab::testing::ReplaceOnce(lab::testing::LabText(kLab), "www.example.test: 10.10.0.1",
                                                                          "www.example.test: 10.10.0.2")),
                         kUid);
  Plan plan = ComputePlan(changed, f.Snapshot(), {});
  REQUIRE(plan.actions.size() == 1);
  REQUIRE(plan.actions[0].type == ActionType::kUpdate);
  REQUIRE(Execute(plan, kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  CHECK(f.hv.Calls() == std::vector<std::string>{"StopStandIn lan", "StartStandIn lan"});
  CHECK(ComputePlan(changed, f.Snapshot(), {}).empty());
  bool journaled = false;
  for (const auto& e : f.store->Journal(kLab, 1))
    journaled = e.key == "standin/lan" && e.action == "update" && e.status == "done";
  CHECK(journaled);
}

TEST_CASE("An interrupted run starts no more actions, records those done, and the next run makes the rest", "[engine]") {
  Fixture f;
  std::atomic<bool> interrupt{false};
  ExecOptions options{1, nullptr};
  int seen = 0;
  // As a SIGINT while the third action runs: it finishes, nothing after it starts.
  options.on_step = [&](const StepEvent& ev) {
    CHECK_FALSE(ev.skipped);
    if (++seen == 3) interrupt = true;
  };
  options.interrupt = &interrupt;
  Plan plan = ComputePlan(f.desired, f.Snapshot(), {});
  ExecReport report = Execute(plan, kLab, f.hv, *f.store, options);
  CHECK(report.interrupted());
  CHECK_FALSE(report.ok());
  CHECK(report.done == 3);
  CHECK(report.failed == 0);
  CHECK(report.skipped == 0);
  CHECK(report.total == static_cast<int>(f.desired.size()));
  CHECK(report.not_run == report.total - 3);
  CHECK(seen == 3);  // the ones not started are not shown as steps
  CHECK(f.hv.Calls().size() == 3);
  CHECK(f.RecordedKeys().size() == 3);
  // Nothing is left intended: the next run plans the rest as creates and converges.
  CHECK(f.store->Intended(kLab).empty());
  Plan rest = ComputePlan(f.desired, f.Snapshot(), {});
  CHECK(rest.actions.size() == f.desired.size() - 3);
  for (const auto& a : rest.actions) CHECK(a.type == ActionType::kCreate);
  ExecReport second = Execute(rest, kLab, f.hv, *f.store, ExecOptions{2, nullptr});
  CHECK(second.ok());
  CHECK(f.RecordedKeys() == f.DesiredKeys());
}

TEST_CASE("A teardown interrupted before it starts removes nothing and says so", "[engine]") {
  Fixture f;
  REQUIRE(Execute(ComputePlan(f.desired, f.Snapshot(), {}), kLab, f.hv, *f.store, ExecOptions{2, nullptr}).ok());
  f.hv.ClearCalls();
  std::atomic<bool> interrupt{true};
  ExecOptions options{4, nullptr};
  options.interrupt = &interrupt;
  Plan down = ComputePlan({}, f.Snapshot(), {});
  ExecReport report = Execute(down, kLab, f.hv, *f.store, options);
  CHECK(report.interrupted());
  CHECK(report.done == 0);
  CHECK(report.skipped == 0);
  CHECK(report.not_run == report.total);
  CHECK(report.total == static_cast<int>(down.actions.size()));
  CHECK(f.hv.Calls().empty());
  CHECK(f.RecordedKeys() == f.DesiredKeys());
}
