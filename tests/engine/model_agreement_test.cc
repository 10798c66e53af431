// Lab file validation (schema/) and the rules model (hv/model.h) agree: every lab mistake that
// both know is refused by both, and a good lab passes both. The engine links both layers, so the
// agreement is checked here, through the mapping the planner uses (engine/facts.h).
#include <catch2/catch.hpp>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/facts.h"
#include "hv/model.h"
#include "schema/lab.h"
#include "tests/support.h"

namespace model = lab::hv::model;
namespace schema = lab::schema;

namespace {

model::LabFacts FactsOf(const schema::Lab& lab) { return lab::engine::LabFactsOf(lab); }

std::set<std::string> Errors(const std::vector<model::Violation>& vs) {
  std::set<std::string> out;
  for (const auto& v : vs)
    if (v.severity == model::Severity::kError) out.insert(v.rule);
  return out;
}

const char* kGood = R"(lab: agree
COMPAT
networks:
  lan: {subnet: 10.10.0.0/24, gateway: 10.10.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.10.0.11/24}
      Ethernet2: {network: lan}
    switches:
      External: {type: external, nics: [Ethernet], allow_management_os: true}
    vms:
      middle:
        version: "9.0"
        processor: {expose_virtualization_extensions: true}
        memory: {dynamic: false}
        security: {virtualization_based_security: false}
        adapters:
          - {switch: External, ip: 10.10.0.10/24, gateway: 10.10.0.1}
        switches:
          VmNAT:
            type: internal
            ip: 192.168.100.1/24
            nat: {name: LocalNAT, prefix: 192.168.100.0/24}
        vms:
          nested1:
            adapters:
              - {switch: VmNAT, ip: 192.168.100.2/24, gateway: 192.168.100.1}
)";

std::string Text(const std::string& profile) {
  std::string t = kGood;
  t.replace(t.find("COMPAT"), 6, "compatibility: " + profile);
  return t;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

model::MachineFacts& M(model::LabFacts& f, const std::string& name) {
  for (auto& m : f.machines)
    if (m.name == name) return m;
  FAIL("no machine " << name);
  return f.machines.front();
}

struct Mistake {
  const char* what;
  const char* from;                                  // in the good lab file
  const char* to;                                    // the mistake
  std::function<void(model::LabFacts&)> in_facts;    // the same mistake in the facts
  std::set<std::string> rules;                       // what the model reports under v8
  bool v8_only = false;                              // and ws2022, which keeps v8's rules
};

}  // namespace

TEST_CASE("A good nested lab passes both lab file validation and the model, in every profile", "[engine]") {
  for (std::string p : {"v8", "preview-10565", "ws2022"}) {
    auto r = schema::Parse(Text(p), "agree.yaml");
    REQUIRE(r.ok());
    model::LabFacts facts = FactsOf(*r.lab);
    CHECK(facts.profile == *model::ParseProfile(p));
    CHECK(model::CheckLab(facts).empty());
  }
}

TEST_CASE("Lab file validation and the model reject the same nesting mistakes", "[engine]") {
  const std::vector<Mistake> mistakes = {
      {"a parent without exposed extensions", "processor: {expose_virtualization_extensions: true}",
       "processor: {expose_virtualization_extensions: false}",
       [](model::LabFacts& f) { M(f, "middle").expose_virtualization_extensions = false; },
       {"nested-needs-exposed-parent", "switch-needs-nesting"}},
      {"dynamic memory", "memory: {dynamic: false}", "memory: {dynamic: true}",
       [](model::LabFacts& f) { M(f, "middle").dynamic_memory = true; }, {"dynamic-memory-off-for-nesting"}},
      {"VBS", "virtualization_based_security: false", "virtualization_based_security: true",
       [](model::LabFacts& f) { M(f, "middle").vbs = true; }, {"vbs-conflicts-with-nesting"}},
      {"an old version", "version: \"9.0\"", "version: \"7.1\"",
       [](model::LabFacts& f) { M(f, "middle").version = "7.1"; }, {"version-8-for-nesting"}, true},
      {"LACP", "allow_management_os: true}", "allow_management_os: true, teaming_mode: lacp}",
       [](model::LabFacts& f) { M(f, "hv1").switches[0].lacp = true; }, {"set-switch-independent"}},
      {"two NICs without SET", "nics: [Ethernet]", "nics: [Ethernet, Ethernet2]",
       [](model::LabFacts& f) { M(f, "hv1").switches[0].binds.push_back("Ethernet2"); }, {"set-instead-of-lbfo"}},
      {"no management OS", "allow_management_os: true}", "allow_management_os: false}",
       [](model::LabFacts& f) { M(f, "hv1").switches[0].allow_management_os = false; },
       {"management-os-takes-address"}},
      {"NAT on a private switch", "type: internal\n            ip: 192.168.100.1/24\n",
       "type: private\n            ip: 192.168.100.1/24\n",
       [](model::LabFacts& f) { M(f, "middle").switches[0].kind = model::SwitchKind::kPrivate; },
       {"private-switch-isolates-owner", "nat-needs-internal-switch"}},
      {"a NAT switch address outside the prefix", "ip: 192.168.100.1/24", "ip: 192.168.60.1/24",
       [](model::LabFacts& f) { M(f, "middle").switches[0].ip = lab::Cidr::Parse("192.168.60.1/24"); },
       {"nat-adapter-address"}},
  };
  for (std::string p : {"v8", "preview-10565", "ws2022"}) {
    for (const auto& m : mistakes) {
      INFO(p << ": " << m.what);
      bool applies = !m.v8_only || p != "preview-10565";  // v8_only: v8 and what follows it
      auto bad = schema::Parse(Replace(Text(p), m.from, m.to), "agree.yaml");
      CHECK(bad.ok() == !applies);
      auto good = schema::Parse(Text(p), "agree.yaml");
      REQUIRE(good.ok());
      model::LabFacts facts = FactsOf(*good.lab);
      m.in_facts(facts);
      CHECK(Errors(model::CheckLab(facts)) == (applies ? m.rules : std::set<std::string>{}));
    }
  }
}

TEST_CASE("The rules' notes on a lab file are warnings at the adapter they are about", "[engine]") {
  // What `lab validate` prints besides the file's own diagnostics (engine::RuleDiagnostics).
  auto r = schema::Parse(Replace(Text("v8"), "gateway: 192.168.100.1}", "gateway: 192.168.100.254}"), "agree.yaml");
  REQUIRE(r.ok());
  auto ds = lab::engine::RuleDiagnostics(*r.lab);
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].severity == schema::Severity::kWarning);
  CHECK(ds[0].ToString().rfind("agree.yaml:28:17: warning: VM 'nested1' adapter 'Ethernet': a nested VM behind NAT", 0) ==
        0);
  CHECK(ds[0].message.ends_with("[nat-gateway-for-nested-vms]"));

  // The seeds' MAC spoofing option, with spoofing off on the adapter of the second inner switch.
  auto spoof = schema::LoadFile(lab::testing::Src("labs/nested-mac-spoofing.yaml"));
  REQUIRE(spoof.ok());
  ds = lab::engine::RuleDiagnostics(*spoof.lab);
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].severity == schema::Severity::kWarning);
  CHECK(ds[0].loc.line == 53);  // n2's adapter on NestedExt2
  CHECK(ds[0].loc.col == 17);
  CHECK(ds[0].message.find("'middle''s adapter 'Ethernet2'") != std::string::npos);
  CHECK(ds[0].message.ends_with("[mac-spoofing-for-nested-traffic]"));

  // A good lab has nothing to say.
  auto good = schema::Parse(Text("v8"), "agree.yaml");
  REQUIRE(good.ok());
  CHECK(lab::engine::RuleDiagnostics(*good.lab).empty());
}

TEST_CASE("Lab file validation and the model agree on the processor rules of each profile", "[engine]") {
  const std::string amd_host = "  hv1:\n    processor: {vendor: amd}\n";
  for (std::string p : {"v8", "preview-10565", "ws2022"}) {
    for (std::string version : {"9.0", "10.0"}) {
      INFO(p << " on AMD, version " << version);
      std::string text = Replace(Replace(Text(p), "  hv1:\n", amd_host), "version: \"9.0\"", "version: \"" + version + "\"");
      std::set<std::string> expected;
      if (p != "ws2022") expected = {"intel-only"};
      else if (version == "9.0") expected = {"ws2022-amd-version-10"};
      auto r = schema::Parse(text, "agree.yaml");
      CHECK(r.ok() == expected.empty());
      // The same lab as facts: the host's vendor, read through the planner's mapping.
      auto good = schema::Parse(Text(p), "agree.yaml");
      REQUIRE(good.ok());
      model::LabFacts facts = FactsOf(*good.lab);
      CHECK(M(facts, "hv1").vendor == model::ProcessorVendor::kIntel);
      M(facts, "hv1").vendor = model::ProcessorVendor::kAmd;
      M(facts, "middle").version = version;
      CHECK(Errors(model::CheckLab(facts)) == expected);
    }
  }
}

TEST_CASE("Dynamic memory on an exposed VM with nothing inside: validation accepts it and the model notes it", "[engine]") {
  for (std::string p : {"v8", "ws2022"}) {
    INFO(p);
    std::string text = "lab: agree\ncompatibility: " + p +
                       "\nhosts:\n  hv1:\n    vms:\n      builder:\n"
                       "        processor: {expose_virtualization_extensions: true}\n"
                       "        memory: {dynamic: true}\n";
    auto r = schema::Parse(text, "agree.yaml");
    REQUIRE(r.ok());
    auto report = lab::engine::CheckRules(*r.lab);
    CHECK(report.errors.empty());
    REQUIRE(report.warnings.size() == 1);
    CHECK(report.warnings[0].find("will not fluctuate") != std::string::npos);
    CHECK(report.warnings[0].find("[dynamic-memory-static-while-hypervisor-runs]") != std::string::npos);
  }
}
