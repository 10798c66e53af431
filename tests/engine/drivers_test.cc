// Labs that mix drivers: the specs say where each object lives (driver, within), a
// partition-only lab's specs are what they were, the rules judge a qemu VM by the processor this
// machine's QEMU offers (given here, never probed), and plans, status, graph and export show it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/export.h"
#include "engine/facts.h"
#include "engine/graph.h"
#include "hv/spec.h"
#include "tests/engine/engine_support.h"

using lab::engine::Desired;
using lab::engine::Engine;
using lab::engine::EngineOptions;
using lab::engine::ExecOptions;
using lab::engine::Kind;
using lab::engine::Resource;
using lab::hv::QemuHostFacts;
using lab::hv::model::Accelerator;
using lab::hv::model::ProcessorVendor;
using lab::testing::FakeHypervisor;
using lab::testing::kUid;
using lab::testing::ParseLab;
using lab::testing::StateDir;

namespace {

using Names = std::vector<std::string>;

// hv1 (host) / outer (qemu, exposed; NAT switch, DNS, run) / mid (partition, exposed; a switch,
// run) / inner (qemu) and leaf (partition); plus plain (partition) on hv1.
const char* kMixed = R"(lab: mixed
compatibility: ws2022
networks:
  lan: {subnet: 10.10.0.0/24, gateway: 10.10.0.1}
hosts:
  hv1:
    nics: {Ethernet: {network: lan, ip: 10.10.0.11/24, dns: [10.10.0.1]}}
    switches: {External: {type: external, nics: [Ethernet]}}
    run: [hostname]
    vms:
      outer:
        driver: qemu
        version: "10.0"
        processor: {count: 2, expose_virtualization_extensions: true}
        memory: {startup: 2GiB}
        adapters: [{switch: External, ip: 10.10.0.10/24, gateway: 10.10.0.1, dns: [10.10.0.1]}]
        switches:
          VmNAT: {type: internal, ip: 192.168.100.1/24, nat: {name: LocalNAT, prefix: 192.168.100.0/24}}
        run: [uname -r]
        vms:
          mid:
            processor: {expose_virtualization_extensions: true}
            adapters: [{switch: VmNAT, ip: 192.168.100.2/24, gateway: 192.168.100.1, dns: [10.10.0.1]}]
            switches: {Inner: {type: private}}
            run: [hostname]
            vms:
              inner:
                driver: qemu
                memory: {startup: 512MiB}
                adapters: [{switch: Inner}]
                run: [hostname]
              leaf:
                adapters: [{switch: Inner}]
      plain:
        adapters: [{switch: External, ip: 10.10.0.20/24}]
)";

const Resource& Get(const std::vector<Resource>& rs, const std::string& key) {
  for (const auto& r : rs)
    if (r.key == key) return r;
  FAIL("no resource " << key);
  return rs.front();
}

Names Within(const std::vector<Resource>& rs, const std::string& key) {
  return Get(rs, key).spec.value("within", Names{});
}

QemuHostFacts Tcg() { return QemuHostFacts{Accelerator::kTcg, ProcessorVendor::kIntel, 4, "test"}; }
QemuHostFacts KvmIntel() { return QemuHostFacts{Accelerator::kKvm, ProcessorVendor::kIntel, 4, "test"}; }

std::unique_ptr<Engine> OpenEngine(const StateDir& dir, FakeHypervisor& hv, const QemuHostFacts& qemu) {
  EngineOptions o;
  o.state_dir = dir.path;
  o.run_dir = dir.path + "/run";
  o.hypervisor = hv.Factory();
  o.qemu_host = qemu;
  auto e = Engine::Open(o);
  INFO(e.message());
  REQUIRE(e);
  return std::move(e).value();
}

}  // namespace

TEST_CASE("In a lab mixing drivers each spec says the qemu VMs it lives inside, outermost first", "[engine]") {
  auto rs = Desired(ParseLab(kMixed), kUid);
  // Partitions: the qemu VMs strictly above the machine.
  CHECK(Within(rs, "partition/hv1").empty());
  CHECK(Within(rs, "partition/outer").empty());
  CHECK(Within(rs, "partition/plain").empty());
  CHECK(Within(rs, "partition/mid") == Names{"outer"});
  CHECK(Within(rs, "partition/inner") == Names{"outer"});
  CHECK(Within(rs, "partition/leaf") == Names{"outer"});
  CHECK(Get(rs, "partition/outer").spec.value("driver", "") == "qemu");
  CHECK(Get(rs, "partition/inner").spec.value("driver", "") == "qemu");
  CHECK_FALSE(Get(rs, "partition/mid").spec.contains("driver"));
  CHECK_FALSE(Get(rs, "partition/hv1").spec.contains("driver"));
  // Switches, NATs, DNS settings, run commands of machine M: M's ancestors-or-self that are qemu.
  CHECK(Within(rs, "switch/hv1/External").empty());
  CHECK(Within(rs, "switch/outer/VmNAT") == Names{"outer"});
  CHECK(Within(rs, "nat/outer/LocalNAT") == Names{"outer"});
  CHECK(Within(rs, "dns/outer") == Names{"outer"});
  CHECK(Within(rs, "run/outer") == Names{"outer"});
  CHECK(Within(rs, "switch/mid/Inner") == Names{"outer"});
  CHECK(Within(rs, "dns/mid") == Names{"outer"});
  CHECK(Within(rs, "run/mid") == Names{"outer"});
  CHECK(Within(rs, "run/inner") == Names{"outer", "inner"});
  CHECK(Within(rs, "run/hv1").empty());
  CHECK(Within(rs, "dns/hv1").empty());
  // Adapters of VM V: where the port is made, in V's parent: its ancestors-or-self that are qemu.
  CHECK(Within(rs, "adapter/outer/Ethernet").empty());  // a tap on hv1's bridge
  CHECK(Within(rs, "adapter/plain/Ethernet").empty());
  CHECK(Within(rs, "adapter/mid/Ethernet") == Names{"outer"});
  CHECK(Within(rs, "adapter/inner/Ethernet") == Names{"outer"});  // in mid, a partition inside outer
  CHECK(Within(rs, "adapter/leaf/Ethernet") == Names{"outer"});
  // And the typed specs read them back.
  auto inner = Get(rs, "partition/inner").spec.get<lab::hv::PartitionSpec>();
  CHECK(inner.driver == "qemu");
  CHECK(inner.within == Names{"outer"});
  CHECK(Get(rs, "run/inner").spec.get<lab::hv::RunSpec>().within == Names{"outer", "inner"});
  CHECK(Get(rs, "adapter/mid/Ethernet").spec.get<lab::hv::AdapterSpec>().within == Names{"outer"});
  CHECK(Get(rs, "nat/outer/LocalNAT").spec.get<lab::hv::NatSpec>().within == Names{"outer"});
  CHECK(Get(rs, "dns/outer").spec.get<lab::hv::DnsSpec>().within == Names{"outer"});
  CHECK(Get(rs, "switch/outer/VmNAT").spec.get<lab::hv::SwitchSpec>().within == Names{"outer"});
}

TEST_CASE("A partition-only lab's specs carry neither driver nor within, so their hashes stay", "[engine]") {
  for (const auto& entry : std::filesystem::directory_iterator(lab::testing::Src("labs"))) {
    if (entry.path().extension() != ".yaml") continue;
    auto r = lab::schema::LoadFile(entry.path().string());
    if (!r.ok()) continue;  // labs that are meant to fail have their own tests
    if (lab::engine::HasQemu(*r.lab)) continue;
    INFO(entry.path());
    for (const auto& res : Desired(*r.lab, kUid)) {
      INFO(res.key);
      CHECK_FALSE(res.spec.contains("driver"));
      CHECK_FALSE(res.spec.contains("within"));
    }
  }
  // The hashes of labs/nested-nat.yaml as recorded by lab before drivers existed.
  std::string got;
  for (const auto& r : Desired(lab::testing::LoadLab("nested-nat"), kUid)) got += r.key + " " + r.Hash() + "\n";
  lab::testing::CompareWithGolden(got, "spec-hashes-nested-nat.txt");
}

TEST_CASE("A qemu VM's plan line names its driver; a partition's is as before", "[engine]") {
  auto rs = Desired(ParseLab(kMixed), kUid);
  CHECK(Get(rs, "partition/outer").display == "VM 'outer' (on hv1, qemu)");
  CHECK(Get(rs, "partition/inner").display == "VM 'inner' (on mid, qemu)");
  CHECK(Get(rs, "partition/mid").display == "VM 'mid' (on outer)");
  CHECK(Get(rs, "partition/plain").display == "VM 'plain' (on hv1)");
}

namespace {

// outer: a qemu VM exposing its extensions, under v8 unless the test changes it.
std::string QemuMiddle(const std::string& compatibility, const std::string& version, int count = 2) {
  return "lab: qemu-rules\n" + compatibility +
         "hosts:\n"
         "  hv1:\n"
         "    vms:\n"
         "      outer:\n"
         "        driver: qemu\n"
         "        version: \"" + version + "\"\n"
         "        processor: {count: " + std::to_string(count) + ", expose_virtualization_extensions: true}\n"
         "        memory: {startup: 1GiB}\n"
         "        vms:\n"
         "          nested1: {}\n";
}

}  // namespace

TEST_CASE("Plan refuses a qemu VM exposing AMD extensions under v8 and takes it under ws2022 or Intel KVM",
          "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  {
    auto engine = OpenEngine(dir, hv, Tcg());
    auto plan = engine->PlanUp(ParseLab(QemuMiddle("", "9.0")));
    REQUIRE(plan);
    REQUIRE(plan->refusals.size() == 1);
    CHECK(plan->refusals[0].find("VM 'outer': expose_virtualization_extensions needs an Intel processor") == 0);
    CHECK(plan->refusals[0].find("\"nesting is currently Intel-only\"") != std::string::npos);
    CHECK(plan->refusals[0].find("[intel-only]") != std::string::npos);
    auto ws = engine->PlanUp(ParseLab(QemuMiddle("compatibility: ws2022\n", "10.0")));
    REQUIRE(ws);
    CHECK(ws->refusals.empty());
    auto old = engine->PlanUp(ParseLab(QemuMiddle("compatibility: ws2022\n", "9.0")));
    REQUIRE(old);
    REQUIRE(old->refusals.size() == 1);
    CHECK(old->refusals[0].find("[ws2022-amd-version-10]") != std::string::npos);
  }
  auto engine = OpenEngine(dir, hv, KvmIntel());
  auto plan = engine->PlanUp(ParseLab(QemuMiddle("", "9.0")));
  REQUIRE(plan);
  CHECK(plan->refusals.empty());
  INFO(lab::engine::RenderPlanText(*plan));
  CHECK(lab::engine::RenderPlanText(*plan).find("+    VM 'outer' (on hv1, qemu)\n") != std::string::npos);
}

TEST_CASE("A qemu VM with more processors than this machine is a warning at processor.count", "[engine]") {
  auto lab = ParseLab(QemuMiddle("compatibility: ws2022\n", "10.0", 8), "q.yaml");
  auto diags = lab::engine::RuleDiagnostics(lab, Tcg());
  REQUIRE(diags.size() == 1);
  CHECK(diags[0].severity == lab::schema::Severity::kWarning);
  CHECK(diags[0].loc.line == 9);
  CHECK(diags[0].loc.col == 28);
  CHECK(diags[0].message.find("VM 'outer': processor.count 8 is more than this machine's 4 processors") == 0);
  auto report = lab::engine::CheckRules(lab, Tcg());
  CHECK(report.errors.empty());
  REQUIRE(report.warnings.size() == 1);
  // Within this machine's count, or a count not known: nothing to say.
  CHECK(lab::engine::RuleDiagnostics(ParseLab(QemuMiddle("compatibility: ws2022\n", "10.0", 4)), Tcg()).empty());
  CHECK(lab::engine::RuleDiagnostics(lab, QemuHostFacts{Accelerator::kTcg, ProcessorVendor::kIntel, 0, ""}).empty());
  // A partition's count is a CPU quota: never this warning.
  auto partition = ParseLab(lab::testing::ReplaceOnce(QemuMiddle("compatibility: ws2022\n", "10.0", 8),
                                                      "driver: qemu", "driver: partition"));
  CHECK(lab::engine::RuleDiagnostics(partition, Tcg()).empty());
}

TEST_CASE("Status says each VM's driver", "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  auto engine = OpenEngine(dir, hv, KvmIntel());
  auto up = engine->Up(ParseLab(kMixed), nullptr, ExecOptions{2, nullptr});
  INFO(up.message());
  REQUIRE(up);
  auto st = engine->Status("mixed");
  REQUIRE(st);
  std::map<std::string, std::string> drivers;
  for (const auto& m : st->machines) drivers[m.name] = m.driver;
  CHECK(drivers == std::map<std::string, std::string>{{"lan", ""},
                                                      {"hv1", ""},
                                                      {"outer", "qemu"},
                                                      {"mid", "partition"},
                                                      {"inner", "qemu"},
                                                      {"leaf", "partition"},
                                                      {"plain", "partition"}});
}

TEST_CASE("The graph marks qemu VMs; the PowerShell export makes them as any VM", "[engine]") {
  auto mixed = ParseLab(kMixed);
  std::string tree = lab::engine::RenderGraph(mixed, lab::engine::GraphFormat::kTree);
  CHECK(tree.find("vm outer (qemu, 2 vCPU, 2GiB, v10.0, nested virtualization)") != std::string::npos);
  CHECK(tree.find("vm mid (1 vCPU, 1GiB, v10.0, nested virtualization)") != std::string::npos);
  std::string dot = lab::engine::RenderGraph(mixed, lab::engine::GraphFormat::kDot);
  CHECK(dot.find("label=\"VM outer (qemu)\"") != std::string::npos);
  CHECK(dot.find("label=\"VM mid\"") != std::string::npos);

  // The same lab with every VM a partition exports to the same script, but for one comment
  // line per qemu VM.
  std::string partitions = kMixed;
  for (int i = 0; i < 2; ++i) partitions.replace(partitions.find("driver: qemu"), 12, "driver: partition");
  std::string a = lab::engine::ExportPowerShell(mixed), b = lab::engine::ExportPowerShell(ParseLab(partitions));
  auto lines = [](const std::string& s) { return lab::Split(s, '\n'); };
  auto la = lines(a), lb = lines(b);
  REQUIRE(la.size() == lb.size());
  std::vector<std::string> differ;
  for (size_t i = 0; i < la.size(); ++i)
    if (la[i] != lb[i]) differ.push_back(la[i]);
  REQUIRE(differ.size() == 2);
  for (const auto& d : differ) {
    CHECK(d.find("# VM '") != std::string::npos);
    CHECK(d.find("(driver: qemu in the lab, a hardware VM as every Hyper-V VM)") != std::string::npos);
  }
}

TEST_CASE("Changing a VM's driver remakes it, and the plan says driver partition -> qemu", "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  auto engine = OpenEngine(dir, hv, KvmIntel());
  std::string partitions = QemuMiddle("", "9.0");
  partitions.replace(partitions.find("driver: qemu"), 12, "driver: partition");
  auto up = engine->Up(ParseLab(partitions), nullptr, ExecOptions{2, nullptr});
  INFO(up.message());
  REQUIRE(up);
  auto plan = engine->PlanUp(ParseLab(QemuMiddle("", "9.0")));
  REQUIRE(plan);
  std::string text = lab::engine::RenderPlanText(*plan);
  INFO(text);
  CHECK(plan->refusals.empty());
  CHECK(text.find("-/+  restart VM 'outer' (on hv1, qemu) (and 1 VM inside)") != std::string::npos);
  // The nested VM now lives inside a guest: it goes with it.
  CHECK(text.find("VM 'nested1' (on outer): within (none) -> outer") != std::string::npos);
  CHECK(text.find("driver partition -> qemu") != std::string::npos);
  CHECK(text.find("remake with the new driver: stop, remove, make") != std::string::npos);
  CHECK(text.find("Plan: 0 to add, 0 to change, 0 to destroy.") == std::string::npos);
}
