// The engine's commands end to end, with a recording hypervisor in place of the kernel.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::ApplyResult;
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

  Fixture() {
    engine = lab::testing::OpenEngine(dir, hv);
  }

  ApplyResult Up(const lab::schema::Lab& lab) {
    auto r = engine->Up(lab, nullptr, ExecOptions{3, nullptr});
    INFO(r.message());
    REQUIRE(r);
    return *r;
  }
  ApplyResult Down(const std::string& lab) {
    auto r = engine->Down(lab, nullptr, ExecOptions{3, nullptr});
    INFO(r.message());
    REQUIRE(r);
    return *r;
  }
};

std::vector<std::string> Without(const std::vector<std::string>& calls, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& c : calls)
    if (c.rfind(prefix, 0) != 0) out.push_back(c);
  return out;
}

}  // namespace

TEST_CASE("Engine brings a lab up once: a second up has nothing to do", "[engine]") {
  Fixture f;
  auto lab = LoadLab("nested-nat");
  auto first = f.Up(lab);
  CHECK(first.plan.Summary() == "Plan: 17 to add, 0 to change, 0 to destroy.");
  CHECK(first.report.ok());
  CHECK(first.report.done == 17);
  CHECK(first.note.empty());

  f.hv.ClearCalls();
  Plan seen;
  auto second = f.engine->Up(lab, [&seen](const Plan& p) { seen = p; }, ExecOptions{3, nullptr});
  REQUIRE(second);
  CHECK(second->plan.empty());
  CHECK(seen.Summary() == "No changes.");
  CHECK(f.hv.Mutations().empty());
  // The second up only looked: at every partition, network and stand-in it recorded.
  CHECK(f.hv.Calls("PartitionRunning").size() == 5);  // lan, hv1, middle, nested1, nested2
  CHECK(f.hv.Calls("StandInRunning") == std::vector<std::string>{"StandInRunning lan"});

  // One uid, made at the first up and kept.
  auto contexts = f.hv.Contexts();
  REQUIRE(contexts.size() >= 2);
  CHECK(std::regex_match(contexts.front().uid, std::regex("[0-9a-f]{12}")));
  CHECK(contexts.back().uid == contexts.front().uid);
  CHECK(contexts.front().lab == "nested-nat");
  auto rec = f.engine->Find("nested-nat");
  REQUIRE(rec);
  CHECK(rec->uid == contexts.front().uid);
  // Recorded absolute: commands by lab name find it from any directory.
  CHECK(rec->file == std::filesystem::absolute("labs/nested-nat.yaml").lexically_normal().string());
}

TEST_CASE("Engine plans without changing anything", "[engine]") {
  Fixture f;
  auto plan = f.engine->PlanUp(LoadLab("two-hosts"));
  REQUIRE(plan);
  CHECK(plan->add == 32);
  CHECK(f.hv.Mutations().empty());
  CHECK(f.engine->Labs().empty());
}

namespace {
/// "TYPE KEY | DISPLAY | REASON" per action: what a plan shows.
std::vector<std::string> Shown(const Plan& plan) {
  std::vector<std::string> out;
  for (const auto& a : plan.actions)
    out.push_back(std::string(lab::engine::ToString(a.type)) + " " + a.resource.key + " | " + a.resource.display +
                  " | " + a.reason);
  return out;
}
}  // namespace

TEST_CASE("A plan only shown is the plan up applies, without specs for what it would create", "[engine]") {
  Fixture f;
  auto lab = LoadLab("nested-nat");
  auto shown = f.engine->PlanUp(lab);
  REQUIRE(shown);
  Plan applied;
  auto up = f.engine->Up(lab, [&applied](const Plan& p) { applied = p; }, ExecOptions{3, nullptr});
  REQUIRE(up);
  CHECK(up->report.ok());
  CHECK(Shown(*shown) == Shown(applied));
  REQUIRE(!applied.actions.empty());
  for (const auto& a : shown->actions) CHECK(a.resource.spec.is_null());
  for (const auto& a : applied.actions) CHECK(a.resource.spec.is_object());

  // A changed lab: the recorded resources it compares carry their specs, and both plans agree.
  auto text = lab::testing::ReplaceOnce(lab::testing::LabText("nested-nat"), "nested1:\n            memory: {startup: 512MiB}",
                                        "nested1:\n            memory: {startup: 768MiB}");
  auto changed = lab::testing::ParseLab(text, "labs/nested-nat.yaml");
  auto shown2 = f.engine->PlanUp(changed);
  REQUIRE(shown2);
  REQUIRE(shown2->actions.size() == 1);
  CHECK(shown2->actions[0].resource.spec.value("memory_bytes", uint64_t{0}) == 768ull << 20);
  Plan applied2;
  auto up2 = f.engine->Up(changed, [&applied2](const Plan& p) { applied2 = p; }, ExecOptions{3, nullptr});
  REQUIRE(up2);
  CHECK(Shown(*shown2) == Shown(applied2));
}

TEST_CASE("Engine remakes a VM found dead, with everything in it", "[engine]") {
  Fixture f;
  auto lab = LoadLab("nested-nat");
  f.Up(lab);
  f.hv.MarkDead("middle");
  auto status = f.engine->Status("nested-nat");
  REQUIRE(status);
  CHECK(status->drift == std::vector<std::string>{"partition/middle: not running"});

  f.hv.ClearCalls();
  auto again = f.Up(lab);
  // One start of middle, with what lives in it (it was a destroy and add of 11 objects).
  CHECK(again.plan.Summary() == "Plan: 0 to add, 0 to change, 1 to restart, 0 to destroy.");
  CHECK(again.report.ok());
  auto calls = f.hv.Calls();
  CHECK(lab::testing::IndexOf(calls, "RemovePartition middle") < lab::testing::IndexOf(calls, "CreatePartition middle"));
  CHECK(lab::testing::IndexOf(calls, "RemovePartition hv1") == -1);
}

TEST_CASE("Engine takes a lab down from its records and forgets it", "[engine]") {
  Fixture f;
  f.Up(LoadLab("two-hosts"));
  f.hv.ClearCalls();
  auto down = f.Down("two-hosts");
  CHECK(down.report.ok());
  CHECK(down.plan.destroy == 32);
  CHECK(down.report.done == 32);
  // Partitions, networks and stand-ins are removed; what lives inside them goes with them.
  auto calls = f.hv.Calls();
  size_t own = 0;
  for (const auto& a : down.plan.actions) own += lab::engine::HomesOf(a.old).empty() ? 1 : 0;
  // The hypervisor is told first that the whole lab goes (its cgroups then go in bulk).
  REQUIRE(calls.size() == own + 2);
  CHECK(calls.front() == "TearingDownLab");
  CHECK(f.hv.Calls("RemoveAdapter").empty());
  CHECK(calls.back() == "RemoveLabRoot");
  CHECK(f.engine->Labs().empty());
  CHECK_FALSE(f.engine->Find("two-hosts"));
}

TEST_CASE("Engine takes down an unknown lab as a no-op", "[engine]") {
  Fixture f;
  auto down = f.Down("never-up");
  CHECK(down.plan.empty());
  CHECK(down.report.ok());
  CHECK(f.hv.Calls().empty());
  CHECK(f.hv.Contexts().empty());
}

TEST_CASE("A failed down keeps the lab's records for the next try", "[engine]") {
  Fixture f;
  f.Up(LoadLab("nested-nat"));
  f.hv.FailOn("RemovePartition middle");
  auto down = f.Down("nested-nat");
  CHECK_FALSE(down.report.ok());
  CHECK(f.hv.Calls("RemoveLabRoot").empty());
  REQUIRE(f.engine->Find("nested-nat"));
  auto status = f.engine->Status("nested-nat");
  REQUIRE(status);
  // Left: middle, its host, and what lives in them (middle's switch, NAT, DNS and adapter, the
  // nested VMs' ports on its switch, the host's NIC and switch). The nested VMs and the network
  // did not wait on middle and went.
  CHECK(status->resources == 11);

  f.hv.Heal();
  f.hv.ClearCalls();
  auto again = f.Down("nested-nat");
  CHECK(again.report.ok());
  auto calls = Without(f.hv.Calls(), "RemoveLabRoot");
  // The nested VMs' adapters are removed on their own (their VMs are gone already), the rest with
  // middle and hv1; then the lab is forgotten.
  CHECK(std::set<std::string>(calls.begin(), calls.end()) ==
        std::set<std::string>{"TearingDownLab", "RemoveAdapter nested1/Ethernet", "RemoveAdapter nested2/Ethernet",
                              "RemoveNic hv1/Ethernet", "RemovePartition middle", "RemovePartition hv1"});
  CHECK(f.engine->Labs().empty());
}

TEST_CASE("A second up while another process holds the lab's lock is refused", "[engine]") {
  StateDir dir;
  int ready[2];
  int release[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(release) == 0);
  // Fork before this process opens the database: SQLite connections must not cross a fork.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(release[1]);
    char c = 'e';
    {
      auto store = lab::state::Store::Open(dir.path);
      if (store) {
        auto lock = (*store)->Lock("nested-nat");
        if (lock) c = 'r';
        (void)!::write(ready[1], &c, 1);
        (void)!::read(release[0], &c, 1);
      } else {
        (void)!::write(ready[1], &c, 1);
      }
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  REQUIRE(c == 'r');

  FakeHypervisor hv;
  EngineOptions o;
  o.state_dir = dir.path;
  o.hypervisor = hv.Factory();
  auto engine = Engine::Open(o);
  REQUIRE(engine);
  auto up = (*engine)->Up(LoadLab("nested-nat"), nullptr, ExecOptions{2, nullptr});
  REQUIRE_FALSE(up);
  CHECK(std::regex_match(up.message(), std::regex("lab 'nested-nat' is locked by pid " + std::to_string(child) +
                                                  R"( \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\))")));
  auto down = (*engine)->Down("nested-nat", nullptr, ExecOptions{2, nullptr});
  REQUIRE_FALSE(down);
  CHECK_THAT(down.message(), Catch::Contains("is locked by pid " + std::to_string(child)));
  CHECK(hv.Calls().empty());
  CHECK((*engine)->Labs().empty());

  REQUIRE(::write(release[1], "x", 1) == 1);
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  ::close(ready[0]);
  ::close(release[1]);
  // Released, the lab can come up, without any takeover.
  auto after = (*engine)->Up(LoadLab("nested-nat"), nullptr, ExecOptions{2, nullptr});
  REQUIRE(after);
  CHECK(after->note.empty());
  CHECK(after->report.ok());
}

TEST_CASE("Engine status lists machines with their addresses and pids", "[engine]") {
  Fixture f;
  f.Up(LoadLab("nested-nat"));
  auto status = f.engine->Status("nested-nat");
  REQUIRE(status);
  CHECK(status->drift.empty());
  CHECK(status->resources == 17);
  std::set<std::string> names;
  for (const auto& m : status->machines) {
    names.insert(m.kind + " " + m.name);
    CHECK(m.state == "running");
    CHECK(m.pid > 1000);
    if (m.name == "hv1") CHECK(m.addresses == std::vector<std::string>{"vEthernet (External) 10.10.0.11/24"});
    if (m.name == "middle") {
      CHECK(m.parent == "hv1");
      CHECK(m.addresses == std::vector<std::string>{"Ethernet 10.10.0.10/24", "vEthernet (VmNAT) 192.168.100.1/24"});
    }
  }
  CHECK(names == std::set<std::string>{"network lan", "host hv1", "vm middle", "vm nested1", "vm nested2"});
}

TEST_CASE("Engine runs the lab's checks inside its machines", "[engine]") {
  Fixture f;
  auto lab = LoadLab("nested-nat");
  f.Up(lab);
  using lab::hv::ProbeAnswer;
  f.hv.SetProbe("nested1", "ping", "www.example.test", ProbeAnswer{true, "", "10.10.0.1"});
  f.hv.SetProbe("nested1", "http", "http://www.example.test/", ProbeAnswer{true, "", "10.10.0.10"});
  f.hv.SetProbe("nested1", "resolve", "www.example.test", ProbeAnswer{true, "", "10.10.0.1"});
  f.hv.SetProbe("nested1", "ping", "192.168.100.3", ProbeAnswer{true, "", "192.168.100.3"});
  f.hv.SetProbe("hv1", "ping", "192.168.100.2", ProbeAnswer{false, "timeout", ""});
  f.hv.SetProbe("middle", "ping", "192.168.100.2", ProbeAnswer{true, "", "192.168.100.2"});
  auto outcomes = f.engine->Check(lab);
  REQUIRE(outcomes);
  REQUIRE(outcomes->size() == lab.checks.size());
  for (const auto& o : *outcomes) {
    INFO(o.check.Describe() << ": " << o.reason);
    CHECK(o.passed);
    CHECK(o.attempts == 1);
  }
}

TEST_CASE("Engine refuses checks and exec for a lab that is not up", "[engine]") {
  Fixture f;
  auto checks = f.engine->Check(LoadLab("nested-nat"));
  REQUIRE_FALSE(checks);
  CHECK_THAT(checks.message(), Catch::Contains("lab 'nested-nat' is not up"));
  auto exec = f.engine->Exec("nested-nat", "hv1", {{"true"}});
  REQUIRE_FALSE(exec);
  f.Up(LoadLab("nested-nat"));
  auto unknown = f.engine->Exec("nested-nat", "nested9", {{"true"}});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.message() == "lab 'nested-nat' has no machine 'nested9' (it has: hv1, middle, nested1, nested2)");
  auto ok = f.engine->Exec("nested-nat", "nested1", {{"ip", "addr"}});
  REQUIRE(ok);
  CHECK(*ok == 0);
  CHECK(f.hv.Calls("Exec") == std::vector<std::string>{"Exec nested1 ip addr"});
}

TEST_CASE("After a failed up the next up makes only what is missing", "[engine]") {
  Fixture f;
  auto lab = LoadLab("nested-nat");
  f.hv.FailOn("CreatePartition middle", "cgroup: Permission denied");
  auto first = f.Up(lab);
  CHECK(first.report.failed == 1);
  CHECK(first.report.skipped == 10);
  CHECK(first.report.errors == std::vector<std::string>{"partition/middle: cgroup: Permission denied"});

  f.hv.Heal();
  f.hv.ClearCalls();
  auto second = f.Up(lab);
  CHECK(second.plan.Summary() == "Plan: 11 to add, 0 to change, 0 to destroy.");
  for (const auto& a : second.plan.actions) CHECK(a.type == ActionType::kCreate);
  CHECK(second.report.ok());
  CHECK(f.hv.Mutations().size() == 11);
  auto third = f.engine->PlanUp(lab);
  REQUIRE(third);
  CHECK(third->empty());
}

TEST_CASE("Engine takes down a partly made lab: exactly what was made, then forgets it", "[engine]") {
  Fixture f;
  f.hv.FailOn("CreatePartition middle");
  f.Up(LoadLab("nested-nat"));
  f.hv.Heal();
  f.hv.ClearCalls();
  auto down = f.Down("nested-nat");
  CHECK(down.report.ok());
  auto calls = f.hv.Calls();
  // The NIC, switch and DNS settings of hv1 go with hv1 and the network's partition.
  CHECK(std::set<std::string>(calls.begin(), calls.end()) ==
        std::set<std::string>{"TearingDownLab", "RemoveNetwork lan", "RemovePartition hv1", "StopStandIn lan",
                              "RemoveLabRoot"});
  CHECK(calls.size() == 5);
  CHECK(calls.front() == "TearingDownLab");
  CHECK(down.report.done == 6);
  CHECK(calls.back() == "RemoveLabRoot");
  CHECK(lab::testing::IndexOf(calls, "StopStandIn lan") < lab::testing::IndexOf(calls, "RemoveNetwork lan"));
  CHECK(f.engine->Labs().empty());
}

TEST_CASE("Engine resizes a running VM's memory in place through the hypervisor", "[engine]") {
  Fixture f;
  f.Up(LoadLab("nested-nat"));
  f.hv.ClearCalls();
  auto text = lab::testing::ReplaceOnce(lab::testing::LabText("nested-nat"), "nested1:\n            memory: {startup: 512MiB}",
                                        "nested1:\n            memory: {startup: 768MiB}");
  auto again = f.Up(lab::testing::ParseLab(text, "labs/nested-nat.yaml"));
  CHECK(again.plan.Summary() == "Plan: 0 to add, 1 to change, 0 to destroy.");
  CHECK(again.report.ok());
  CHECK(f.hv.Mutations() == std::vector<std::string>{"SetPartitionMemory nested1 768MiB"});
  // Recorded with its new memory: the next up has nothing to do.
  CHECK(f.engine->PlanUp(lab::testing::ParseLab(text, "labs/nested-nat.yaml"))->empty());
}

TEST_CASE("Engine renames a switch in place: its record moves to the new name and nothing is remade", "[engine]") {
  Fixture f;
  f.Up(LoadLab("nested-nat"));
  f.hv.ClearCalls();
  std::string text = lab::testing::LabText("nested-nat");
  text = lab::testing::ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.2/24", "- {switch: NatSwitch, ip: 192.168.100.2/24");
  text = lab::testing::ReplaceOnce(text, "- {switch: VmNAT, ip: 192.168.100.3/24", "- {switch: NatSwitch, ip: 192.168.100.3/24");
  text = lab::testing::ReplaceOnce(text, "          VmNAT:\n", "          NatSwitch:\n");
  auto renamed = lab::testing::ParseLab(text, "labs/nested-nat.yaml");  // the file the lab is up from, edited
  auto again = f.Up(renamed);
  CHECK(again.plan.Summary() == "Plan: 0 to add, 4 to change, 0 to destroy.");
  CHECK(again.report.ok());
  auto calls = Without(f.hv.Mutations(), "ReconcileTeam");
  std::sort(calls.begin(), calls.end());
  CHECK(calls == std::vector<std::string>{"CreateNat middle/LocalNAT",
                                          "SetAdapter nested1/Ethernet mac_address_spoofing=off ip=192.168.100.2/24 "
                                          "gateway=192.168.100.1",
                                          "SetAdapter nested2/Ethernet mac_address_spoofing=off ip=192.168.100.3/24 "
                                          "gateway=192.168.100.1",
                                          "SetSwitch middle/NatSwitch bridge=VmNAT ip=192.168.100.1/24"});
  auto snap = f.engine->store().Load("nested-nat");
  REQUIRE(snap);
  CHECK(snap->resources.count("switch/middle/NatSwitch") == 1);
  CHECK(snap->resources.count("switch/middle/VmNAT") == 0);
  CHECK(f.engine->PlanUp(renamed)->empty());
}
