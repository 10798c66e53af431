// What the engine renders for people: plan text (golden files) and the topology graph.
//
// tests/engine/golden/NAME.plan holds exactly what `lab plan labs/NAME.yaml` prints without
// colors for a lab that is not up yet (after its "lab NAME (FILE)" header line). After a
// deliberate change, rewrite with LAB_UPDATE_GOLDEN=1 and read the diff before committing:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_engine "[golden]"
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "engine/graph.h"
#include "engine/plan.h"
#include "engine/resources.h"
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
    // Every machine is a node; every NIC and adapter an edge; every VM hangs off its parent.
    size_t links = 0, vms = 0;
    for (const auto& m : lab.machines) {
      CHECK_THAT(dot, Catch::Contains("m_" + m.name + " [shape=component"));
      links += m.nics.size() + m.adapters.size();
      if (!m.parent.empty()) ++vms;
    }
    size_t edges = 0;
    for (size_t at = dot.find(" -> "); at != std::string::npos; at = dot.find(" -> ", at + 1)) ++edges;
    CHECK(edges == links + vms);
  }
}
