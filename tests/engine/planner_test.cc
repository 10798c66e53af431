// The pure half of the engine: Desired() turns a lab file into resources, ComputePlan() turns
// desired + recorded + observed into actions. No hypervisor, no store.
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "base/text.h"
#include "engine/plan.h"
#include "schema/lab.h"
#include "engine/resources.h"
#include "hv/spec.h"
#include "tests/engine/engine_support.h"

using lab::engine::Action;
using lab::engine::ActionType;
using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::Kind;
using lab::engine::Plan;
using lab::engine::Resource;
using lab::testing::ByKey;
using lab::testing::kUid;
using lab::testing::LabText;
using lab::testing::LoadLab;
using lab::testing::ParseLab;
using lab::testing::Recorded;
using lab::testing::ReplaceOnce;

namespace {

const Resource& Find(const std::vector<Resource>& rs, const std::string& key) {
  for (const auto& r : rs)
    if (r.key == key) return r;
  FAIL("no resource " << key);
  throw;  // unreachable: FAIL throws
}

std::vector<std::string> Keys(const std::vector<Resource>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) out.push_back(r.key);
  return out;
}

void RequireDependencyOrder(const std::vector<Resource>& rs) {
  std::map<std::string, size_t> pos;
  for (size_t i = 0; i < rs.size(); ++i) pos[rs[i].key] = i;
  REQUIRE(pos.size() == rs.size());  // keys are unique
  for (size_t i = 0; i < rs.size(); ++i)
    for (const auto& d : rs[i].deps) {
      INFO(rs[i].key << " depends on " << d);
      REQUIRE(pos.count(d));  // every dependency is a resource of the lab
      CHECK(pos[d] < i);
    }
}

std::string NestedNatWithout(const std::string& from, const std::string& until) {
  std::string text = LabText("nested-nat");
  auto a = text.find(from);
  auto b = text.find(until, a);
  REQUIRE(a != std::string::npos);
  REQUIRE(b != std::string::npos);
  return text.erase(a, b - a);
}

}  // namespace

TEST_CASE("Desired lists the nested-nat lab's resources after their dependencies", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  RequireDependencyOrder(rs);
  std::set<std::string> keys;
  for (const auto& k : Keys(rs)) keys.insert(k);
  CHECK(keys == std::set<std::string>{
                    "network/lan",           "standin/lan",
                    "partition/hv1",         "nic/hv1/Ethernet",         "switch/hv1/External",  "dns/hv1",
                    "partition/middle",      "adapter/middle/Ethernet",  "switch/middle/VmNAT",
                    "nat/middle/LocalNAT",   "dns/middle",
                    "partition/nested1",     "adapter/nested1/Ethernet", "dns/nested1",
                    "partition/nested2",     "adapter/nested2/Ethernet", "dns/nested2",
                });
  CHECK(Find(rs, "partition/nested1").deps == std::vector<std::string>{"partition/middle"});
  CHECK(Find(rs, "adapter/nested1/Ethernet").deps ==
        std::vector<std::string>{"partition/nested1", "switch/middle/VmNAT"});
  CHECK(Find(rs, "nat/middle/LocalNAT").deps == std::vector<std::string>{"switch/middle/VmNAT"});
  CHECK(Find(rs, "switch/hv1/External").deps == std::vector<std::string>{"partition/hv1", "nic/hv1/Ethernet"});
  CHECK(Find(rs, "standin/lan").deps == std::vector<std::string>{"network/lan"});
}

TEST_CASE("Desired lists the two-hosts lab's resources after their dependencies", "[engine]") {
  auto rs = Desired(LoadLab("two-hosts"), kUid);
  RequireDependencyOrder(rs);
  // 1 network + 1 stand-in; per host: partition, NIC, switch, DNS; per middle VM: partition,
  // adapter, switch, NAT, DNS; per nested VM: partition, adapter, DNS.
  CHECK(rs.size() == 2 + 2 * (4 + 5 + 2 * 3));
  for (const char* key : {"partition/hv2", "adapter/n22/Ethernet", "nat/mid2/LocalNAT", "switch/mid1/VmNAT"})
    CHECK(Find(rs, key).key == key);
  // The two LocalNATs share a name but not a table: each lives in its own middle VM.
  auto t1 = Find(rs, "nat/mid1/LocalNAT").spec.get<lab::hv::NatSpec>().table;
  auto t2 = Find(rs, "nat/mid2/LocalNAT").spec.get<lab::hv::NatSpec>().table;
  CHECK(t1 != t2);
  CHECK(t1.find(kUid) != std::string::npos);
}

TEST_CASE("An external switch with management OS takes its NIC's address", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  auto nic = Find(rs, "nic/hv1/Ethernet").spec.get<lab::hv::NicSpec>();
  auto sw = Find(rs, "switch/hv1/External").spec.get<lab::hv::SwitchSpec>();
  CHECK_FALSE(nic.ip.has_value());
  CHECK_FALSE(nic.gateway.has_value());
  REQUIRE(sw.ip.has_value());
  CHECK(sw.ip->ToString() == "10.10.0.11/24");
  REQUIRE(sw.gateway.has_value());
  CHECK(sw.gateway->ToString() == "10.10.0.1");
  CHECK(sw.management_port);
  CHECK(sw.type == "external");
  CHECK(sw.uplinks == std::vector<std::string>{"Ethernet"});
  // A VM's adapter on that switch keeps its own address.
  auto middle = Find(rs, "adapter/middle/Ethernet").spec.get<lab::hv::AdapterSpec>();
  REQUIRE(middle.ip.has_value());
  CHECK(middle.ip->ToString() == "10.10.0.10/24");
}

TEST_CASE("Default MACs are Hyper-V's, stable, and distinct per adapter", "[engine]") {
  auto lab = LoadLab("two-hosts");
  auto first = Desired(lab, kUid);
  auto again = Desired(lab, "ba9876543210");
  static const std::regex kHyperV("00:15:5d:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}");
  std::set<std::string> macs;
  size_t count = 0;
  for (size_t i = 0; i < first.size(); ++i) {
    if (first[i].kind != Kind::kNic && first[i].kind != Kind::kAdapter) continue;
    std::string mac = first[i].spec.at("mac").get<std::string>();
    INFO(first[i].key << " " << mac);
    CHECK(std::regex_match(mac, kHyperV));
    CHECK(again[i].spec.at("mac") == first[i].spec.at("mac"));
    macs.insert(mac);
    ++count;
  }
  CHECK(count == 2 + 2 + 4);
  CHECK(macs.size() == count);
  CHECK(lab::engine::DefaultMac("two-hosts", "n11", "Ethernet") == lab::engine::DefaultMac("two-hosts", "n11", "Ethernet"));
  CHECK(lab::engine::DefaultMac("two-hosts", "n11", "Ethernet") != lab::engine::DefaultMac("other", "n11", "Ethernet"));
}

TEST_CASE("A MAC given in the lab file is used as it is", "[engine]") {
  auto text = ReplaceOnce(LabText("nested-nat"), "ip: 192.168.100.2/24,", "ip: 192.168.100.2/24, mac: \"00:15:5d:aa:bb:cc\",");
  auto rs = Desired(ParseLab(text), kUid);
  CHECK(Find(rs, "adapter/nested1/Ethernet").spec.at("mac") == "00:15:5d:aa:bb:cc");
  CHECK(Find(rs, "adapter/nested2/Ethernet").spec.at("mac") != "00:15:5d:aa:bb:cc");
}

TEST_CASE("Planner creates everything when nothing is recorded", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  Plan plan = ComputePlan(rs, {}, {});
  REQUIRE(plan.actions.size() == rs.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    CHECK(plan.actions[i].type == ActionType::kCreate);
    CHECK(plan.actions[i].resource.key == rs[i].key);
    CHECK(plan.actions[i].reason == "not made yet");
  }
  CHECK(plan.add == 17);
  CHECK(plan.Summary() == "Plan: 17 to add, 0 to change, 0 to destroy.");
}

TEST_CASE("Planner has nothing to do when the records match the lab file", "[engine]") {
  auto rs = Desired(LoadLab("two-hosts"), kUid);
  Plan plan = ComputePlan(rs, Recorded(rs), {});
  CHECK(plan.empty());
  CHECK(plan.add + plan.change + plan.destroy == 0);
  CHECK(plan.Summary() == "No changes.");
}

TEST_CASE("Planner changes only the address of a nested VM's adapter, in place", "[engine]") {
  // Hyper-V changes a guest's address on the adapter as it is (New-NetIPAddress): nothing is
  // remade. (It was remade, veth and all, before addresses changed in place.)
  auto before = Desired(LoadLab("nested-nat"), kUid);
  auto after = Desired(ParseLab(ReplaceOnce(LabText("nested-nat"), "192.168.100.2/24", "192.168.100.4/24")), kUid);
  Plan plan = ComputePlan(after, Recorded(before), {});
  auto by = ByKey(plan);
  REQUIRE(by.size() == 2);
  REQUIRE(by.count("adapter/nested1/Ethernet"));
  const Action& adapter = *by["adapter/nested1/Ethernet"];
  CHECK(adapter.type == ActionType::kUpdate);
  CHECK(adapter.reason ==
        "ip 192.168.100.2/24 -> 192.168.100.4/24: in place, the adapter stays connected (New-NetIPAddress)");
  // The stand-in resolves nested1 by name: its records follow, in place.
  REQUIRE(by.count("standin/lan"));
  CHECK(by["standin/lan"]->type == ActionType::kUpdate);
  CHECK_THAT(by["standin/lan"]->reason, Catch::Contains("~ nested1 192.168.100.2 -> 192.168.100.4"));
  CHECK(plan.Summary() == "Plan: 0 to add, 2 to change, 0 to destroy.");
}

TEST_CASE("Planner updates DNS servers in place", "[engine]") {
  auto before = Desired(LoadLab("nested-nat"), kUid);
  auto text = ReplaceOnce(LabText("nested-nat"), "ip: 192.168.100.3/24, gateway: 192.168.100.1,\n                 dns: [10.10.0.1]",
                          "ip: 192.168.100.3/24, gateway: 192.168.100.1,\n                 dns: [192.168.100.1]");
  Plan plan = ComputePlan(Desired(ParseLab(text), kUid), Recorded(before), {});
  REQUIRE(plan.actions.size() == 1);
  const Action& a = plan.actions[0];
  CHECK(a.type == ActionType::kUpdate);
  CHECK(a.resource.key == "dns/nested2");
  CHECK(std::string(lab::engine::Symbol(a.type)) == "~");
  CHECK(a.reason == "dns 10.10.0.1 -> 192.168.100.1: in place (Set-DnsClientServerAddress)");
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 0 to destroy.");
}

TEST_CASE("Planner remakes a dead VM with everything inside it", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  Plan plan = ComputePlan(rs, Recorded(rs), {"partition/middle"});
  auto by = ByKey(plan);
  std::set<std::string> keys;
  for (const auto& [k, _] : by) keys.insert(k);
  CHECK(keys == std::set<std::string>{"partition/middle", "adapter/middle/Ethernet", "switch/middle/VmNAT",
                                      "nat/middle/LocalNAT", "dns/middle", "partition/nested1",
                                      "adapter/nested1/Ethernet", "dns/nested1", "partition/nested2",
                                      "adapter/nested2/Ethernet", "dns/nested2"});
  for (const auto& a : plan.actions) CHECK(a.type == ActionType::kReplace);
  CHECK_THAT(by["partition/middle"]->reason, Catch::Contains("not running"));
  // Each one names what it is remade with, so the cause can be followed to the dead VM.
  CHECK(by["switch/middle/VmNAT"]->reason == "remade with VM 'middle' (on hv1)");
  CHECK(by["nat/middle/LocalNAT"]->reason == "remade with internal switch 'VmNAT' on 'middle'");
  CHECK(by["partition/nested1"]->reason == "started with VM 'middle' (on hv1)");
  CHECK_THAT(by["adapter/nested2/Ethernet"]->reason, Catch::StartsWith("remade with "));
  // All of it is middle's start: one restart, nothing destroyed.
  for (const auto& a : plan.actions)
    if (a.resource.key != "partition/middle") CHECK(a.within == "partition/middle");
  CHECK(plan.Summary() == "Plan: 0 to add, 0 to change, 1 to restart, 0 to destroy.");
  // The host, its switch and the network are left alone.
  CHECK_FALSE(by.count("partition/hv1"));
  CHECK_FALSE(by.count("switch/hv1/External"));
}

TEST_CASE("Planner deletes a VM removed from the file, and what is in it, dependents first", "[engine]") {
  auto before = Desired(LoadLab("nested-nat"), kUid);
  auto text = NestedNatWithout("          nested2:\n", "checks:");
  text = ReplaceOnce(text, "  - {from: nested1, ping: 192.168.100.3}", "");
  auto after = Desired(ParseLab(text), kUid);
  Plan plan = ComputePlan(after, Recorded(before), {});

  std::vector<std::string> deletes;
  for (const auto& a : plan.actions)
    if (a.type == ActionType::kDelete) {
      deletes.push_back(a.resource.key);
      CHECK(a.reason == "not in the lab file");
    }
  REQUIRE(deletes.size() == 3);
  std::set<std::string> deleted(deletes.begin(), deletes.end());
  CHECK(deleted == std::set<std::string>{"partition/nested2", "adapter/nested2/Ethernet", "dns/nested2"});
  CHECK(deletes.back() == "partition/nested2");
  // The stand-in no longer resolves nested2.
  auto by = ByKey(plan);
  REQUIRE(by.count("standin/lan"));
  CHECK(by["standin/lan"]->type == ActionType::kUpdate);
  CHECK(plan.actions.size() == 4);
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 3 to destroy.");
}

TEST_CASE("Planner deletes a whole subtree in reverse dependency order", "[engine]") {
  auto rs = Desired(LoadLab("two-hosts"), kUid);
  Plan plan = ComputePlan({}, Recorded(rs), {});
  REQUIRE(plan.actions.size() == rs.size());
  std::map<std::string, size_t> pos;
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    CHECK(plan.actions[i].type == ActionType::kDelete);
    pos[plan.actions[i].resource.key] = i;
  }
  for (const auto& r : rs)
    for (const auto& d : r.deps) {
      INFO(r.key << " depends on " << d);
      CHECK(pos.at(r.key) < pos.at(d));
    }
  CHECK(plan.Summary() == "Plan: 0 to add, 0 to change, " + std::to_string(rs.size()) + " to destroy.");
}

TEST_CASE("Planner gives the same plan for the same inputs", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  auto changed = Desired(ParseLab(ReplaceOnce(LabText("nested-nat"), "192.168.100.2/24", "192.168.100.4/24")), kUid);
  auto recorded = Recorded(rs);
  recorded.resources.erase("dns/hv1");
  auto render = [](const Plan& p) {
    std::string out;
    for (const auto& a : p.actions) out += std::string(ToString(a.type)) + " " + a.resource.key + " " + a.reason + "\n";
    return out + p.Summary();
  };
  Plan one = ComputePlan(changed, recorded, {"partition/nested2"});
  Plan two = ComputePlan(changed, recorded, {"partition/nested2"});
  CHECK(render(one) == render(two));
  CHECK(Desired(LoadLab("nested-nat"), kUid)[5].Hash() == rs[5].Hash());
}

TEST_CASE("A resource survives the round trip through its record", "[engine]") {
  for (const auto& r : Desired(LoadLab("two-hosts"), kUid)) {
    auto back = Resource::FromRecordJson(r.key, r.ToRecordJson());
    REQUIRE(back);
    CHECK(back->kind == r.kind);
    CHECK(back->deps == r.deps);
    CHECK(back->display == r.display);
    CHECK(back->Hash() == r.Hash());
  }
  CHECK_FALSE(Resource::FromRecordJson("x", "not json"));
  CHECK_FALSE(Resource::FromRecordJson("x", R"({"kind":"teapot"})"));
}

TEST_CASE("Planner deletes a middle VM removed from the file with its nested VMs, innermost first", "[engine]") {
  auto before = Desired(LoadLab("nested-nat"), kUid);
  std::string text = NestedNatWithout("    vms:\n      middle:\n", "checks:");
  text = text.substr(0, text.find("checks:"));  // the checks name machines that are gone
  auto after = Desired(ParseLab(text), kUid);
  Plan plan = ComputePlan(after, Recorded(before), {});
  std::map<std::string, size_t> pos;
  for (size_t i = 0; i < plan.actions.size(); ++i)
    if (plan.actions[i].type == ActionType::kDelete) pos[plan.actions[i].resource.key] = i;
  CHECK(pos.size() == 11);
  for (const auto& r : before)
    if (pos.count(r.key))
      for (const auto& d : r.deps)
        if (pos.count(d)) {
          INFO(r.key << " depends on " << d);
          CHECK(pos[r.key] < pos[d]);
        }
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 11 to destroy.");
}

TEST_CASE("Changing a running VM's static memory plans a restart with the reason, which --no-restart refuses", "[engine]") {
  auto before = lab::schema::Parse(lab::ReadFile(lab::testing::Src("labs/nested-nat.yaml")).value(), "a.yaml");
  REQUIRE(before.ok());
  auto recorded = lab::testing::Recorded(Desired(*before.lab, "0123456789ab"));
  std::string text = lab::ReadFile(lab::testing::Src("labs/nested-nat.yaml")).value();
  auto pos = text.find("memory: {startup: 2GiB");
  REQUIRE(pos != std::string::npos);
  text.replace(pos, std::string("memory: {startup: 2GiB").size(), "memory: {startup: 3GiB");
  auto after = lab::schema::Parse(text, "b.yaml");
  REQUIRE(after.ok());
  auto plan = ComputePlan(Desired(*after.lab, "0123456789ab"), recorded, {});
  auto restarts = lab::engine::Restarts(plan);
  // middle, and the two VMs running inside it, which go down and come back with it.
  REQUIRE(restarts.size() == 3);
  CHECK(restarts[0].find("VM 'middle'") == 0);
  CHECK(restarts[0].find("memory.startup 2GiB -> 3GiB") != std::string::npos);
  CHECK(restarts[0].find("stop, set, start") != std::string::npos);
  CHECK(restarts[1].find("stopped and started with VM 'middle' (on hv1)") != std::string::npos);
  // A VM that is merely found off is started, which is not a restart.
  CHECK(lab::engine::Restarts(ComputePlan(Desired(*before.lab, "0123456789ab"), recorded, {"partition/middle"})).empty());
}

namespace {

/// The nested-nat lab recorded as made, and the plan for `text` against it.
Plan PlanAgainstNestedNat(const std::string& text, const lab::engine::Observed& broken = {},
                          lab::hv::model::Profile profile = lab::hv::model::Profile::kV8) {
  auto recorded = Recorded(Desired(LoadLab("nested-nat"), kUid));
  lab::engine::PlanOptions options;
  options.profile = profile;
  return ComputePlan(Desired(ParseLab(text), kUid), recorded, broken, options);
}

}  // namespace

TEST_CASE("A nested VM's static memory changes in place while it runs (Set-VMMemory)", "[engine]") {
  // nested1 runs no hypervisor: runtime resize is allowed (nesting-alone-has-no-effect).
  auto text = ReplaceOnce(LabText("nested-nat"), "nested1:\n            memory: {startup: 512MiB}",
                          "nested1:\n            memory: {startup: 768MiB}");
  Plan plan = PlanAgainstNestedNat(text);
  REQUIRE(plan.actions.size() == 1);
  const Action& a = plan.actions[0];
  CHECK(a.resource.key == "partition/nested1");
  CHECK(a.type == ActionType::kUpdate);
  CHECK_THAT(a.reason, Catch::Contains("memory.startup 512MiB -> 768MiB") && Catch::Contains("in place"));
  CHECK(lab::engine::Restarts(plan).empty());
  CHECK(plan.refusals.empty());
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 0 to destroy.");
}

TEST_CASE("The middle VM's memory changes in place only when no hypervisor runs inside it", "[engine]") {
  auto text = ReplaceOnce(LabText("nested-nat"), "startup: 2GiB", "startup: 3GiB");
  SECTION("nested VMs run in it: runtime resize is refused, so stop, set, start") {
    Plan plan = PlanAgainstNestedNat(text);
    auto by = ByKey(plan);
    REQUIRE(by.count("partition/middle"));
    CHECK(by["partition/middle"]->type == ActionType::kReplace);
    CHECK_THAT(by["partition/middle"]->reason, Catch::Contains("a hypervisor runs inside") &&
                                                  Catch::Contains("stop, set, start"));
    CHECK(lab::engine::Restarts(plan).size() == 3);  // middle, nested1, nested2
  }
  SECTION("its nested VMs are off: the hypervisor inside is idle, the resize is in place") {
    Plan plan = PlanAgainstNestedNat(text, {"partition/nested1", "partition/nested2"});
    auto by = ByKey(plan);
    REQUIRE(by.count("partition/middle"));
    CHECK(by["partition/middle"]->type == ActionType::kUpdate);
    CHECK_THAT(by["partition/middle"]->reason, Catch::Contains("in place"));
    // The nested VMs found off are started, which is not a restart of anything running.
    CHECK(lab::engine::Restarts(plan).empty());
  }
}

TEST_CASE("Exposing a running VM's virtualization extensions plans stop, set, start with the seeds' reason", "[engine]") {
  auto text = ReplaceOnce(LabText("nested-nat"), "nested1:\n            memory: {startup: 512MiB}",
                          "nested1:\n            processor: {expose_virtualization_extensions: true}\n"
                          "            memory: {startup: 512MiB}");
  Plan plan = PlanAgainstNestedNat(text);
  auto by = ByKey(plan);
  REQUIRE(by.count("partition/nested1"));
  const Action& a = *by["partition/nested1"];
  CHECK(a.type == ActionType::kReplace);
  CHECK_THAT(a.reason, Catch::Contains("expose_virtualization_extensions can only change while the VM is off") &&
                           Catch::Contains("its disk is kept"));
  auto restarts = lab::engine::Restarts(plan);
  REQUIRE(restarts.size() == 1);
  CHECK(restarts[0].find("VM 'nested1'") == 0);
}

TEST_CASE("A VM on an image carries its key and layers, and a changed image restarts it on the new one",
          "[engine][images]") {
  std::string text = R"(lab: img
networks:
  lan: {subnet: 10.1.0.0/24}
images:
  web: {rootfs: ./web.tar}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.1.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      web:
        image: web
        adapters: [{switch: External, ip: 10.1.0.20/24}]
      plain:
        adapters: [{switch: External, ip: 10.1.0.21/24}]
)";
  auto lab = ParseLab(text);
  lab::engine::MachineImages v1 = {{"web", {std::string(64, 'a'), {"/cache/a/rootfs"}}}};
  lab::engine::MachineImages v2 = {{"web", {std::string(64, 'b'), {"/cache/b/rootfs"}}}};
  auto before = Desired(lab, kUid, {}, &v1);
  const auto& web = Find(before, "partition/web").spec;
  CHECK(web.value("image", "") == "web");
  CHECK(web.value("image_key", "") == std::string(64, 'a'));
  CHECK(web["image_layers"] == nlohmann::json::array({"/cache/a/rootfs"}));
  // A machine on the host's software keeps the spec it always had.
  CHECK_FALSE(Find(before, "partition/plain").spec.contains("image"));
  // The same image: nothing to do.
  CHECK(ComputePlan(Desired(lab, kUid, {}, &v1), Recorded(before), {}).actions.empty());
  // Another image: the VM restarts on it, and the plan says why.
  Plan plan = ComputePlan(Desired(lab, kUid, {}, &v2), Recorded(before), {});
  auto by = ByKey(plan);
  REQUIRE(by.count("partition/web"));
  CHECK_FALSE(by.count("partition/plain"));
  const Action& vm = *by["partition/web"];
  CHECK(vm.type == ActionType::kReplace);
  CHECK(vm.reason.find("image changed aaaaaaaaaaaa -> bbbbbbbbbbbb") != std::string::npos);
  CHECK(vm.reason.find("new image") != std::string::npos);
  // Only what lives in that VM goes with it.
  for (const auto& [key, a] : by) CHECK((key == "partition/web" || a->within == "partition/web"));
}
