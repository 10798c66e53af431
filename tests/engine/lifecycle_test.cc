// The lifecycle verbs (lab stop|start|save|resume|checkpoint|restore) on the engine, with a
// recording hypervisor: preconditions before changes, records never lost, the power state the
// user set kept, checkpoints covering the VMs inside, and one lab from one file.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/lifecycle.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::ApplyResult;
using lab::engine::Engine;
using lab::engine::ExecOptions;
using lab::engine::LifecycleOp;
using lab::engine::LifecycleReport;
using lab::engine::LifecycleRequest;
using lab::engine::Plan;
using lab::testing::FakeHypervisor;
using lab::testing::StateDir;

namespace {

/// An engine over a fake hypervisor, with lab files written into its state dir (the records
/// name real files, as `lab up FILE` does).
struct Fixture {
  StateDir dir;
  FakeHypervisor hv;
  std::unique_ptr<Engine> engine = lab::testing::OpenEngine(dir, hv);

  /// Writes `text` to DIR/`name` and parses it from there.
  lab::schema::Lab Write(const std::string& name, const std::string& text) {
    const std::string path = dir.path + "/" + name;
    std::ofstream(path) << text;
    return lab::testing::ParseLab(text, path);
  }
  ApplyResult Up(const lab::schema::Lab& lab) {
    auto r = engine->Up(lab, nullptr, ExecOptions{3, nullptr});
    INFO(r.message());
    REQUIRE(r);
    INFO(lab::Join(r->report.errors, "\n"));
    REQUIRE(r->report.ok());
    return *r;
  }
  lab::Result<LifecycleReport> Run(LifecycleOp op, const std::string& machine, const std::string& checkpoint = "") {
    LifecycleRequest req;
    req.op = op;
    req.lab = "nested-nat";
    req.machine = machine;
    req.checkpoint = checkpoint;
    return lab::engine::RunLifecycle(*engine, req, ExecOptions{3, nullptr});
  }
  void Ok(LifecycleOp op, const std::string& machine, const std::string& checkpoint = "") {
    auto r = Run(op, machine, checkpoint);
    INFO(lab::engine::ToString(op) << " " << machine << ": " << r.message());
    REQUIRE(r);
    if (r->applied) {
      INFO(lab::Join(r->apply.report.errors, "\n"));
      REQUIRE(r->apply.report.ok());
    }
  }
  std::set<std::string> Recorded() {
    auto snap = engine->store().Load("nested-nat");
    REQUIRE(snap);
    std::set<std::string> keys;
    for (const auto& [k, _] : snap->resources) keys.insert(k);
    return keys;
  }
};

bool Has(const std::vector<std::string>& calls, const std::string& line) {
  return std::find(calls.begin(), calls.end(), line) != calls.end();
}

}  // namespace

TEST_CASE("Restoring a checkpoint the VM does not have changes nothing and names the ones it has", "[engine]") {
  Fixture f;
  f.Up(f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat")));
  f.Ok(LifecycleOp::kCheckpoint, "middle", "c1");
  f.hv.ClearCalls();

  auto r = f.Run(LifecycleOp::kRestore, "middle", "nosuch");
  REQUIRE_FALSE(r);
  CHECK(r.message().find("VM 'middle' has no checkpoint 'nosuch' (it has: c1)") != std::string::npos);
  CHECK(r.message().find("nothing was changed") != std::string::npos);
  // Nothing was stopped: not the VM, not the VMs inside it.
  CHECK(f.hv.Mutations().empty());
}

TEST_CASE("Starting a VM whose parent is off is refused before anything changes, naming the command to run first",
          "[engine]") {
  Fixture f;
  f.Up(f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat")));
  f.Ok(LifecycleOp::kStop, "middle");
  const auto before = f.Recorded();
  f.hv.ClearCalls();

  auto r = f.Run(LifecycleOp::kStart, "nested1");
  REQUIRE_FALSE(r);
  CHECK(r.message() == "VM 'nested1': its parent 'middle' is off; run `lab start nested-nat middle` first");
  CHECK(f.hv.Mutations().empty());
  CHECK(f.Recorded() == before);  // nested1 is still a machine of the lab

  // A saved parent: resume it first.
  f.Ok(LifecycleOp::kStart, "middle");
  f.Ok(LifecycleOp::kSave, "middle");
  f.hv.ClearCalls();
  r = f.Run(LifecycleOp::kResume, "nested1");
  REQUIRE_FALSE(r);
  CHECK(r.message().find("its parent 'middle' is saved; run `lab resume nested-nat middle` first") != std::string::npos);
  r = f.Run(LifecycleOp::kStop, "nested1");
  REQUIRE_FALSE(r);
  CHECK(r.message().find("run `lab resume nested-nat middle` first") != std::string::npos);
  CHECK(f.hv.Mutations().empty());
}

TEST_CASE("A VM whose remake fails keeps its record, so the next run finds it and starts it", "[engine]") {
  Fixture f;
  auto lab = f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat"));
  f.Up(lab);
  f.hv.MarkDead("nested1");
  f.hv.FailOn("CreatePartition nested1");
  auto r = f.engine->Up(lab, nullptr, ExecOptions{3, nullptr});
  REQUIRE(r);
  CHECK_FALSE(r->report.ok());
  // The old half of the remake went; its record did not.
  auto keys = f.Recorded();
  CHECK(keys.count("partition/nested1"));
  CHECK(keys.count("adapter/nested1/Ethernet"));
  auto st = f.engine->Status("nested-nat");
  REQUIRE(st);
  CHECK(std::find(st->drift.begin(), st->drift.end(), "partition/nested1: not running") != st->drift.end());

  f.hv.Heal();
  f.hv.ClearCalls();
  f.Up(lab);
  CHECK(Has(f.hv.Calls(), "CreatePartition nested1"));
}

TEST_CASE("A VM the user stopped stays off on lab up and when its parent starts again, until lab start", "[engine]") {
  Fixture f;
  auto lab = f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat"));
  f.Up(lab);
  f.Ok(LifecycleOp::kStop, "nested1");

  // lab up: nothing to do, and it says why nested1 stays off.
  Plan seen;
  f.hv.ClearCalls();
  auto up = f.engine->Up(lab, [&seen](const Plan& p) { seen = p; }, ExecOptions{3, nullptr});
  REQUIRE(up);
  CHECK(seen.empty());
  CHECK(seen.Summary() == "No changes.");
  REQUIRE(seen.notes.size() >= 1);
  CHECK(std::find(seen.notes.begin(), seen.notes.end(),
                  "VM 'nested1' is off (lab stop); lab start nested-nat nested1 to run it") != seen.notes.end());
  CHECK_FALSE(Has(f.hv.Calls(), "CreatePartition nested1"));
  // Off as the user set it is not drift.
  auto st = f.engine->Status("nested-nat");
  REQUIRE(st);
  CHECK(st->drift.empty());

  // Its parent restarts: nested2 comes back with it, nested1 does not.
  f.Ok(LifecycleOp::kStop, "middle");
  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kStart, "middle");
  CHECK(Has(f.hv.Calls(), "CreatePartition middle"));
  CHECK(Has(f.hv.Calls(), "CreatePartition nested2"));
  CHECK_FALSE(Has(f.hv.Calls(), "CreatePartition nested1"));
  CHECK_FALSE(Has(f.hv.Calls(), "ConnectAdapter nested1/Ethernet"));

  // A change to it waits for its start, and is counted as waiting.
  auto changed = f.Write("nested-nat.yaml",
                         lab::testing::ReplaceOnce(lab::testing::LabText("nested-nat"),
                                                   "ip: 192.168.100.2/24", "ip: 192.168.100.12/24"));
  auto plan = f.engine->PlanUp(changed);
  REQUIRE(plan);
  INFO(lab::engine::RenderPlanText(*plan));
  for (const auto& a : plan->actions) CHECK(a.resource.key.find("nested1") == std::string::npos);
  CHECK(std::find(plan->notes.begin(), plan->notes.end(),
                  "VM 'nested1' is off (lab stop); lab start nested-nat nested1 to run it (1 change wait for it)") !=
        plan->notes.end());

  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kStart, "nested1");
  CHECK(Has(f.hv.Calls(), "CreatePartition nested1"));
  CHECK(f.engine->store().Load("nested-nat")->stopped.empty());
}

TEST_CASE("A stopped VM taken out of the lab file is forgotten: one of that name added again starts", "[engine]") {
  Fixture f;
  const std::string text = lab::testing::LabText("nested-nat");
  f.Up(f.Write("nested-nat.yaml", text));
  f.Ok(LifecycleOp::kStop, "nested2");
  const std::string nested2 =
      "          nested2:\n            memory: {startup: 512MiB}\n            adapters:\n"
      "              - {switch: VmNAT, ip: 192.168.100.3/24, gateway: 192.168.100.1,\n"
      "                 dns: [10.10.0.1]}\n";
  auto without = lab::testing::ReplaceOnce(text, nested2, "");
  without = lab::testing::ReplaceOnce(without, "  - {from: nested1, ping: 192.168.100.3}", "");
  f.Up(f.Write("nested-nat.yaml", without));
  CHECK(f.engine->store().Load("nested-nat")->stopped.empty());
  f.hv.ClearCalls();
  f.Up(f.Write("nested-nat.yaml", text));
  CHECK(Has(f.hv.Calls(), "CreatePartition nested2"));
}

TEST_CASE("A checkpoint of a VM covers the VMs inside it, and restoring it puts them all back", "[engine]") {
  Fixture f;
  f.Up(f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat")));
  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kCheckpoint, "middle", "c1");
  auto made = f.hv.Calls("CreateCheckpoint");
  REQUIRE(made.size() == 3);
  CHECK(made.back() == "CreateCheckpoint middle c1");  // last: its checkpoint says all are made
  CHECK(Has(made, "CreateCheckpoint nested1 c1"));
  CHECK(Has(made, "CreateCheckpoint nested2 c1"));

  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kRestore, "middle", "c1");
  auto calls = f.hv.Calls();
  for (const char* vm : {"middle", "nested1", "nested2"}) {
    INFO(vm);
    const long stop = lab::testing::IndexOf(calls, std::string("StopPartition ") + vm);
    const long restore = lab::testing::IndexOf(calls, std::string("RestoreCheckpoint ") + vm + " c1");
    const long start = lab::testing::IndexOf(calls, std::string("CreatePartition ") + vm);
    CHECK(stop >= 0);
    CHECK(restore > stop);
    CHECK(start > restore);
  }

  // A name a VM inside already has for a checkpoint of its own is refused before anything.
  f.Ok(LifecycleOp::kCheckpoint, "nested1", "mine");
  f.hv.ClearCalls();
  auto r = f.Run(LifecycleOp::kCheckpoint, "middle", "mine");
  REQUIRE_FALSE(r);
  CHECK(r.message().find("VM 'nested1', inside 'middle', already has a checkpoint 'mine'") != std::string::npos);
  CHECK(f.hv.Mutations().empty());
}

TEST_CASE("A checkpoint that stopped part way is completed by the same command run again", "[engine]") {
  Fixture f;
  f.Up(f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat")));
  f.hv.FailOn("CreateCheckpoint middle c1");
  REQUIRE_FALSE(f.Run(LifecycleOp::kCheckpoint, "middle", "c1"));
  f.hv.Heal();
  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kCheckpoint, "middle", "c1");
  CHECK(f.hv.Calls("CreateCheckpoint") == std::vector<std::string>{"CreateCheckpoint middle c1"});
}

TEST_CASE("Removing a checkpoint of a VM removes it from the VMs inside too, innermost first; unknown names are listed",
          "[engine]") {
  Fixture f;
  f.Up(f.Write("nested-nat.yaml", lab::testing::LabText("nested-nat")));
  const std::string name = "middle - (12/07/2026 - 07:05:31)";
  f.Ok(LifecycleOp::kCheckpoint, "middle", name);
  f.Ok(LifecycleOp::kCheckpoint, "middle", "c2");
  auto listed = lab::engine::ListCheckpoints(*f.engine, "nested-nat", "middle");
  REQUIRE(listed);
  REQUIRE(listed->size() == 2);
  CHECK((*listed)[0].name == name);
  CHECK((*listed)[1].name == "c2");

  f.hv.ClearCalls();
  auto unknown = lab::engine::RemoveCheckpoint(*f.engine, "nested-nat", "middle", "nosuch");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.message().find("VM 'middle' has no checkpoint 'nosuch' (it has: " + name + ", c2)") !=
        std::string::npos);
  CHECK(f.hv.Mutations().empty());

  auto removed = lab::engine::RemoveCheckpoint(*f.engine, "nested-nat", "middle", name);
  INFO(removed.message());
  REQUIRE(removed);
  auto calls = f.hv.Calls("RemoveCheckpoint");
  REQUIRE(calls.size() == 3);
  CHECK(calls.back() == "RemoveCheckpoint middle " + name);  // last: while it is listed, the next run finishes
  CHECK(Has(calls, "RemoveCheckpoint nested1 " + name));
  lab::hv::PartitionSpec nested1;
  nested1.name = "nested1";
  CHECK(f.hv.Checkpoints(nested1) == std::vector<std::string>{"c2"});
  CHECK(lab::engine::ListCheckpoints(*f.engine, "nested-nat", "middle")->size() == 1);
  // Hosts have no checkpoints; unknown machines are named.
  CHECK(lab::engine::ListCheckpoints(*f.engine, "nested-nat", "hv1").message().find("is a host") != std::string::npos);
  CHECK(lab::engine::ListCheckpoints(*f.engine, "nested-nat", "nosuch").message().find("has no machine 'nosuch'") !=
        std::string::npos);
}

TEST_CASE("A saved VM's memory change is not made in place: the plan says its saved state is removed", "[engine]") {
  Fixture f;
  const std::string text = lab::testing::LabText("nested-nat");
  f.Up(f.Write("nested-nat.yaml", text));
  f.Ok(LifecycleOp::kSave, "nested1");
  auto bigger = f.Write("nested-nat.yaml",
                        lab::testing::ReplaceOnce(text, "nested1:\n            memory: {startup: 512MiB}",
                                                  "nested1:\n            memory: {startup: 1GiB}"));
  auto plan = f.engine->PlanUp(bigger);
  REQUIRE(plan);
  auto by_key = lab::testing::ByKey(*plan);
  REQUIRE(by_key.count("partition/nested1"));
  const auto* a = by_key["partition/nested1"];
  INFO(a->reason);
  CHECK(a->type == ActionType::kReplace);
  CHECK(a->reason.find("saved state removed: Remove-VMSavedState") != std::string::npos);
  // Running, the same change is made in place (Set-VMMemory).
  f.Ok(LifecycleOp::kResume, "nested1");
  plan = f.engine->PlanUp(bigger);
  REQUIRE(plan);
  CHECK(lab::testing::ByKey(*plan).at("partition/nested1")->type == ActionType::kUpdate);
}

TEST_CASE("A change that restarts a saved VM, and the saved VMs inside it, says their saved state is removed",
          "[engine]") {
  Fixture f;
  const std::string text = lab::testing::LabText("nested-nat");
  f.Up(f.Write("nested-nat.yaml", text));
  f.Ok(LifecycleOp::kSave, "nested1");
  f.Ok(LifecycleOp::kSave, "middle");
  auto changed = f.Write("nested-nat.yaml", lab::testing::ReplaceOnce(text, "startup: 2GiB", "startup: 3GiB"));
  auto plan = f.engine->PlanUp(changed);
  REQUIRE(plan);
  auto by_key = lab::testing::ByKey(*plan);
  REQUIRE(by_key.count("partition/middle"));
  REQUIRE(by_key.count("partition/nested1"));
  REQUIRE(by_key.count("partition/nested2"));
  INFO(by_key["partition/middle"]->reason);
  CHECK(by_key["partition/middle"]->type == ActionType::kReplace);
  CHECK(by_key["partition/middle"]->reason.find("saved state removed: Remove-VMSavedState") != std::string::npos);
  CHECK(by_key["partition/nested1"]->reason ==
        "stopped and started with VM 'middle' (on hv1); saved state removed: Remove-VMSavedState");
  CHECK(by_key["partition/nested2"]->reason == "stopped and started with VM 'middle' (on hv1)");
  // The VMs inside restart with it, the saved one too (--no-restart sees it).
  INFO(lab::engine::RenderPlanText(*plan));
  CHECK(lab::engine::Restarts(*plan).size() == 3);
}

TEST_CASE("lab up of a file naming a lab that is up from another file is refused unless forced", "[engine]") {
  Fixture f;
  const std::string text = lab::testing::LabText("nested-nat");
  auto first = f.Write("first.yaml", text);
  auto second = f.Write("second.yaml", text);
  f.Up(first);
  f.hv.ClearCalls();
  auto r = f.engine->Up(second, nullptr, ExecOptions{3, nullptr});
  REQUIRE_FALSE(r);
  CHECK(r.message().find("lab 'nested-nat' is up from another file, " + f.dir.path + "/first.yaml") !=
        std::string::npos);
  CHECK(r.message().find("--force") != std::string::npos);
  CHECK(f.hv.Mutations().empty());
  CHECK(f.engine->Find("nested-nat")->file == f.dir.path + "/first.yaml");
  // The same file again, by another spelling of its path, is the same lab.
  auto again = lab::testing::ParseLab(text, f.dir.path + "/./first.yaml");
  CHECK(f.engine->Up(again, nullptr, ExecOptions{3, nullptr}));
  // Forced, the second file takes the lab over.
  auto forced = f.engine->Up(second, nullptr, ExecOptions{3, nullptr}, nullptr, /*take_over=*/true);
  REQUIRE(forced);
  CHECK(f.engine->Find("nested-nat")->file == f.dir.path + "/second.yaml");
}

TEST_CASE("The lifecycle verbs work from the records when the lab file is gone or broken, with a warning",
          "[engine]") {
  Fixture f;
  const std::string text = lab::testing::LabText("nested-nat");
  f.Up(f.Write("nested-nat.yaml", text));
  std::filesystem::rename(f.dir.path + "/nested-nat.yaml", f.dir.path + "/moved.yaml");

  auto stop = f.Run(LifecycleOp::kStop, "middle");
  REQUIRE(stop);
  REQUIRE(stop->warnings.size() == 1);
  CHECK(stop->warnings[0].find("the lab file " + f.dir.path + "/nested-nat.yaml is gone") != std::string::npos);
  f.hv.ClearCalls();
  f.Ok(LifecycleOp::kStart, "middle");
  CHECK(Has(f.hv.Calls(), "CreatePartition nested1"));

  // A file that no longer parses: the records still hold the lab and its checks.
  std::ofstream(f.dir.path + "/nested-nat.yaml") << "lab: nested-nat\nhosts: [\n";
  auto recorded = f.engine->Recorded("nested-nat");
  REQUIRE(recorded);
  CHECK(recorded->lab.checks.size() == 6);
  REQUIRE(recorded->warnings.size() == 1);
  CHECK(recorded->warnings[0].find("no longer loads") != std::string::npos);
  f.Ok(LifecycleOp::kCheckpoint, "middle", "c1");
}

TEST_CASE("A refusal's hint quotes Hyper-V names with spaces so the command can be pasted into a shell", "[engine]") {
  Fixture f;
  f.Up(f.Write("hyperv-names.yaml", lab::testing::LabText("hyperv-names")));
  LifecycleRequest req;
  req.lab = "hyperv-names";
  req.op = LifecycleOp::kStop;
  req.machine = "135. Nested Virtualization 2022";
  auto stop = lab::engine::RunLifecycle(*f.engine, req, ExecOptions{3, nullptr});
  INFO(stop.message());
  REQUIRE(stop);
  f.hv.ClearCalls();

  req.op = LifecycleOp::kStart;
  req.machine = "nested vm 1";  // found ignoring case; the hint names it as written
  auto r = lab::engine::RunLifecycle(*f.engine, req, ExecOptions{3, nullptr});
  REQUIRE_FALSE(r);
  CHECK(r.message() ==
        "VM 'Nested VM 1': its parent '135. Nested Virtualization 2022' is off; "
        "run `lab start hyperv-names '135. Nested Virtualization 2022'` first");
  CHECK(f.hv.Mutations().empty());

  auto exec = f.engine->Exec("hyperv-names", "Nested VM 1", {{"true"}});
  REQUIRE_FALSE(exec);
  CHECK(exec.message() ==
        "VM 'Nested VM 1' is off: '135. Nested Virtualization 2022', which it runs in, is off; start that first: "
        "lab start hyperv-names '135. Nested Virtualization 2022'");
}
