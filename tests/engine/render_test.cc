// What the engine renders for people: plan text (golden files) and the topology graph.
//
// tests/engine/golden/NAME.plan holds exactly what `lab plan labs/NAME.yaml` prints without
// colors for a lab that is not up yet (after its "lab NAME (FILE)" header line). After a
// deliberate change, rewrite with LAB_UPDATE_GOLDEN=1 and read the diff before committing:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_engine "[golden]"
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "engine/engine.h"
#include "engine/graph.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "base/text.h"
#include "tests/engine/engine_support.h"

using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::GraphFormat;
using lab::engine::RenderGraph;
using lab::engine::RenderPlanText;
using lab::testing::CompareWithGolden;
using lab::testing::kUid;
using lab::testing::LoadLab;

TEST_CASE("The plan of nested-nat from nothing reads as its golden file", "[engine][golden]") {
  auto plan = ComputePlan(Desired(LoadLab("nested-nat"), kUid), {}, {});
  CompareWithGolden(RenderPlanText(plan), "nested-nat.plan");
}

TEST_CASE("The plan of nested-nat with a dead middle VM reads as its golden file", "[engine][golden]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  auto plan = ComputePlan(rs, lab::testing::Recorded(rs), {"partition/middle"});
  CompareWithGolden(RenderPlanText(plan), "nested-nat-dead-middle.plan");
}

TEST_CASE("Plan text shows the symbol, what, why, and the summary", "[engine]") {
  auto rs = Desired(LoadLab("nested-nat"), kUid);
  auto recorded = lab::testing::Recorded(rs);
  recorded.resources.erase("dns/hv1");
  auto plan = ComputePlan(rs, recorded, {"partition/nested2"});
  // nested2 is started with what lives in it: one line, counted as a restart.
  CHECK(RenderPlanText(plan) ==
        "  +    DNS servers of 'hv1'\n"
        "  -/+  start VM 'nested2' (on middle): start\n"
        "        not running: start it (its disk is kept)\n"
        "Plan: 1 to add, 0 to change, 1 to restart, 0 to destroy.\n");
  CHECK(RenderPlanText(ComputePlan(rs, lab::testing::Recorded(rs), {})) == "No changes.\n");
}

TEST_CASE("The graph of nested-nat names every machine, switch and network in every format", "[engine]") {
  auto lab = LoadLab("nested-nat");
  for (auto format : {GraphFormat::kTree, GraphFormat::kDot, GraphFormat::kMermaid}) {
    std::string g = RenderGraph(lab, format);
    INFO(g);
    for (const char* name : {"hv1", "middle", "nested1", "nested2", "External", "VmNAT", "lan", "10.10.0.0/24"})
      CHECK_THAT(g, Catch::Contains(name));
  }
  std::string tree = RenderGraph(lab, GraphFormat::kTree);
  CHECK_THAT(tree, Catch::StartsWith("lab nested-nat\n"));
  CHECK_THAT(tree, Catch::Contains("NAT LocalNAT 192.168.100.0/24"));
  CHECK_THAT(tree, Catch::Contains("vm nested1"));
  CHECK_THAT(RenderGraph(lab, GraphFormat::kMermaid), Catch::StartsWith("graph LR\n"));
}

TEST_CASE("The dot graph is one balanced digraph with an edge per link", "[engine]") {
  for (const char* name : {"nested-nat", "two-hosts"}) {
    auto lab = LoadLab(name);
    std::string dot = RenderGraph(lab, GraphFormat::kDot);
    INFO(dot);
    CHECK_THAT(dot, Catch::StartsWith(std::string("digraph \"") + name + "\" {\n"));
    CHECK_THAT(dot, Catch::EndsWith("}\n"));
    int depth = 0;
    bool closed_early = false;
    size_t quotes = 0;
    for (size_t i = 0; i < dot.size(); ++i) {
      if (dot[i] == '"' && (i == 0 || dot[i - 1] != '\\')) ++quotes;
      if (quotes % 2) continue;  // braces inside labels do not count
      if (dot[i] == '{') ++depth;
      if (dot[i] == '}' && --depth == 0 && i + 2 < dot.size()) closed_early = true;
    }
    CHECK(depth == 0);
    CHECK_FALSE(closed_early);
    CHECK(quotes % 2 == 0);
    // Every machine is a cluster; every NIC and adapter an edge out, and so is every NIC an
    // external switch binds and every way out of a NAT.
    size_t links = 0;
    for (const auto& m : lab.machines) {
      CHECK_THAT(dot, Catch::Contains("subgraph \"cluster:" + m.name + "\" {"));
      links += m.nics.size() + m.adapters.size();
      for (const auto& s : m.switches) {
        if (s.type == lab::schema::SwitchType::kExternal) links += s.nics.size();
        if (s.nat) {
          size_t out = 0;
          for (const auto& a : m.adapters) out += a.gateway ? 1 : 0;
          for (const auto& n : m.nics) out += n.gateway ? 1 : 0;
          links += out;
        }
      }
    }
    size_t edges = 0;
    for (size_t at = dot.find(" -> "); at != std::string::npos; at = dot.find(" -> ", at + 1)) ++edges;
    CHECK(edges == links);
  }
}

namespace {

using lab::engine::Topology;
using lab::engine::TopologyEdge;

const TopologyEdge* EdgeOf(const Topology& t, const std::string& from, const std::string& to) {
  for (const auto& e : t.edges)
    if (e.from == from && e.to == to) return &e;
  return nullptr;
}

/// Whether the edges lead from `from` to `to`.
bool Reaches(const Topology& t, const std::string& from, const std::string& to) {
  std::set<std::string> seen{from};
  std::vector<std::string> todo{from};
  while (!todo.empty()) {
    std::string at = todo.back();
    todo.pop_back();
    if (at == to) return true;
    for (const auto& e : t.edges)
      if (e.from == at && seen.insert(e.to).second) todo.push_back(e.to);
  }
  return false;
}

std::string ParentCluster(const Topology& t, const std::string& machine) {
  for (const auto& c : t.clusters)
    if (c.machine == machine) return c.parent;
  return "(no cluster)";
}

}  // namespace

TEST_CASE("The graph of a SET lab leads from a nested VM through its NAT, the team and both NICs to the network",
          "[engine]") {
  auto t = lab::engine::BuildTopology(LoadLab("set-team"));
  // Nested VMs are drawn inside their middle VM, which is inside its host.
  CHECK(ParentCluster(t, "n1") == "middle");
  CHECK(ParentCluster(t, "middle") == "hv1");
  CHECK(ParentCluster(t, "hv1") == "");
  // adapter -> switch, with the address it carries.
  const TopologyEdge* in = EdgeOf(t, "adapter:n1/Ethernet", "switch:middle/VmNAT");
  REQUIRE(in);
  CHECK(in->label == "192.168.60.2/24");
  CHECK_FALSE(in->dashed);
  // The NAT's way out is middle's adapter, routed (dashed), not bridged.
  const TopologyEdge* nat = EdgeOf(t, "switch:middle/VmNAT", "adapter:middle/Ethernet");
  REQUIRE(nat);
  CHECK(nat->dashed);
  CHECK(nat->label == "NAT LocalNAT");
  REQUIRE(EdgeOf(t, "adapter:middle/Ethernet", "switch:hv1/SETswitch"));
  CHECK(EdgeOf(t, "adapter:middle/Ethernet", "switch:hv1/SETswitch")->label == "10.60.0.10/24");
  // The SET switch has an edge to each member of its team, and each NIC one to the network.
  for (const char* nic : {"NIC1", "NIC2"}) {
    INFO(nic);
    const TopologyEdge* member = EdgeOf(t, "switch:hv1/SETswitch", std::string("nic:hv1/") + nic);
    REQUIRE(member);
    CHECK(member->label == "SET member");
    REQUIRE(EdgeOf(t, std::string("nic:hv1/") + nic, "net:lan"));
  }
  CHECK(EdgeOf(t, "nic:hv1/NIC1", "net:lan")->label == "10.60.0.11/24");
  CHECK(EdgeOf(t, "nic:hv1/NIC2", "net:lan")->label == "");
  for (const char* vm : {"n1", "n2", "n3", "vm1", "middle"}) {
    INFO(vm);
    CHECK(Reaches(t, std::string("adapter:") + vm + "/Ethernet", "net:lan"));
  }
  // The marks: SET and NAT on the switches.
  for (const auto& n : t.nodes) {
    if (n.id == "switch:hv1/SETswitch") CHECK(lab::Join(n.label, " | ") == "switch SETswitch | external | SET (switch independent) | management OS shares it");
    if (n.id == "switch:middle/VmNAT")
      CHECK(lab::Join(n.label, " | ") ==
            "switch VmNAT | internal | vEthernet (VmNAT) 192.168.60.1/24 | NAT LocalNAT 192.168.60.0/24");
  }
}

TEST_CASE("The graph of a MAC spoofing lab leads through the middle VM's own external switch and marks spoofing",
          "[engine]") {
  auto lab = LoadLab("nested-mac-spoofing");
  auto t = lab::engine::BuildTopology(lab);
  // Every adapter of every VM reaches a network: there is no internal switch without NAT here.
  for (const auto& m : lab.machines)
    for (const auto& a : m.adapters) {
      INFO(m.name << "/" << a.name);
      bool reaches = false;
      for (const auto& n : lab.networks) reaches = reaches || Reaches(t, "adapter:" + m.name + "/" + a.name, "net:" + n.name);
      CHECK(reaches);
    }
  bool spoofing_marked = false;
  for (const auto& n : t.nodes)
    for (const auto& line : n.label) spoofing_marked = spoofing_marked || line == "MAC spoofing on";
  CHECK(spoofing_marked);
}

TEST_CASE("A private switch is marked private and leads nowhere", "[engine]") {
  auto lab = LoadLab("switch-types");
  auto t = lab::engine::BuildTopology(lab);
  bool found = false;
  for (const auto& m : lab.machines)
    for (const auto& s : m.switches)
      if (s.type == lab::schema::SwitchType::kPrivate) {
        found = true;
        std::string id = "switch:" + m.name + "/" + s.name;
        for (const auto& n : t.nodes)
          if (n.id == id) CHECK(n.label.at(1) == "private");
        for (const auto& e : t.edges) CHECK(e.from != id);
      }
  CHECK(found);
}

TEST_CASE("Status machines are listed as a tree: networks, then each host with its VMs below it, depth first",
          "[engine]") {
  lab::engine::LabStatus st;
  auto add = [&st](const std::string& name, const std::string& kind, const std::string& parent) {
    lab::engine::MachineStatus m;
    m.name = name;
    m.kind = kind;
    m.parent = parent;
    st.machines.push_back(m);
  };
  // As the records list them: by resource key.
  add("a-nested", "vm", "middle");
  add("hv1", "host", "");
  add("hv2", "host", "");
  add("lan", "network", "");
  add("middle", "vm", "hv1");
  add("moved", "vm", "hv2");
  add("z-vm", "vm", "hv1");
  add("orphan", "vm", "gone");
  std::vector<std::string> rows;
  for (const auto& [m, depth] : lab::engine::MachineTree(st)) rows.push_back(std::to_string(depth) + " " + m->name);
  CHECK(rows == std::vector<std::string>{"0 lan", "0 hv1", "1 middle", "2 a-nested", "1 z-vm", "0 hv2", "1 moved",
                                         "0 orphan"});
}

TEST_CASE("The mermaid graph nests each VM's subgraph inside its parent's, for every lab", "[engine]") {
  for (const char* name : {"nested-nat", "three-levels", "hyperv-names", "set-team"}) {
    auto lab = LoadLab(name);
    std::string mm = RenderGraph(lab, GraphFormat::kMermaid);
    INFO(mm);
    // `subgraph cN ["host hv1"]` ... `end`: the enclosing subgraph's title when each opens.
    std::map<std::string, std::string> parent_of;
    std::vector<std::string> open;
    for (const auto& raw : lab::Split(mm, '\n')) {
      std::string line = lab::Trim(raw);
      if (line.rfind("subgraph ", 0) == 0) {
        size_t q = line.find("[\"");
        REQUIRE(q != std::string::npos);
        std::string title = line.substr(q + 2, line.size() - q - 4);
        std::string machine = title.substr(title.find(' ') + 1);  // after "host " / "VM "
        parent_of[machine] = open.empty() ? "" : open.back();
        open.push_back(machine);
      } else if (line == "end") {
        REQUIRE_FALSE(open.empty());
        open.pop_back();
      }
    }
    CHECK(open.empty());
    for (const auto& m : lab.machines) {
      INFO(m.name);
      REQUIRE(parent_of.count(m.name));
      CHECK(parent_of[m.name] == m.parent);
    }
  }
}
