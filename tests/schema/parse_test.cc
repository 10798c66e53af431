// Unit tests of the lab file reader: defaults, the pre-order machine list, and single rules
// checked on small inline files (the golden files cover the messages of whole broken labs).
#include <catch2/catch.hpp>

#include <string>

#include "schema/lab.h"

using lab::schema::CheckKind;
using lab::schema::MachineKind;
using lab::schema::Parse;
using lab::schema::SwitchType;

namespace {

// A small valid lab; tests append to it or replace parts of it.
const char* kMinimal = R"(lab: unit
networks:
  lan: {subnet: 10.1.0.0/24, gateway: 10.1.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.1.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      vm1:
        adapters:
          - {switch: External, ip: 10.1.0.20/24}
checks:
  - {from: vm1, ping: 10.1.0.1}
)";

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

}  // namespace

TEST_CASE("A minimal lab takes the documented defaults", "[schema]") {
  auto r = Parse(kMinimal, "unit.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  const auto& lab = *r.lab;
  CHECK(lab.format == 1);
  CHECK(lab.file == "unit.yaml");
  const auto* vm = lab.FindMachine("vm1");
  REQUIRE(vm);
  CHECK(vm->version == "9.0");
  CHECK(vm->generation == 2);
  CHECK(vm->processor.count == 1);
  CHECK_FALSE(vm->processor.expose_virtualization_extensions);
  CHECK(vm->memory.startup == (1ull << 30));
  CHECK_FALSE(vm->memory.dynamic);
  CHECK_FALSE(vm->virtualization_based_security);
  REQUIRE(vm->adapters.size() == 1);
  CHECK(vm->adapters[0].name == "Ethernet");
  CHECK(vm->adapters[0].switch_name == "External");
  CHECK_FALSE(vm->adapters[0].mac_address_spoofing);
  const auto* hv1 = lab.FindMachine("hv1");
  REQUIRE(hv1);
  CHECK(hv1->memory.startup == 0);
  const auto* sw = hv1->FindSwitch("External");
  REQUIRE(sw);
  CHECK(sw->type == SwitchType::kExternal);
  CHECK(sw->allow_management_os);
  CHECK_FALSE(sw->embedded_teaming);
  CHECK(sw->teaming_mode == "switch_independent");
  REQUIRE(lab.checks.size() == 1);
  CHECK(lab.checks[0].kind == CheckKind::kPing);
  CHECK(lab.checks[0].expect_success);
  CHECK(lab.checks[0].timeout_ms == 2000);
  CHECK(lab.checks[0].retries == 1);
  CHECK(lab.checks[0].Describe() == "vm1 ping 10.1.0.1");
}

TEST_CASE("Machines are listed in pre-order with their parent and depth", "[schema]") {
  auto r = Parse(R"(lab: tree
hosts:
  hv1:
    switches:
      Private: {type: private}
    vms:
      a:
        processor: {expose_virtualization_extensions: true}
        switches:
          In: {type: private}
        vms:
          a1:
            processor: {expose_virtualization_extensions: true}
            switches:
              Deep: {type: private}
            vms:
              a1x: {adapters: [{switch: Deep}]}
          a2: {adapters: [{switch: In}]}
      b: {adapters: [{switch: Private}]}
  hv2: {}
)",
                 "tree.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  std::vector<std::string> names, parents;
  std::vector<int> depths;
  for (const auto& m : r.lab->machines) {
    names.push_back(m.name);
    parents.push_back(m.parent);
    depths.push_back(m.depth);
  }
  CHECK(names == std::vector<std::string>{"hv1", "a", "a1", "a1x", "a2", "b", "hv2"});
  CHECK(parents == std::vector<std::string>{"", "hv1", "a", "a1", "a", "hv1", ""});
  CHECK(depths == std::vector<int>{0, 1, 2, 3, 2, 1, 0});
  CHECK(r.lab->machines[0].kind == MachineKind::kHost);
  CHECK(r.lab->machines[1].kind == MachineKind::kVm);
  CHECK(r.lab->FindMachine("a")->vms == std::vector<std::string>{"a1", "a2"});
  CHECK(r.lab->FindMachine("hv1")->vms == std::vector<std::string>{"a", "b"});
}

TEST_CASE("Sizes, durations and versions are read into their units", "[schema]") {
  auto r = Parse(R"(lab: units
hosts:
  hv1:
    vms:
      vm1:
        version: 8.0
        generation: 1
        memory: {startup: 512MiB, dynamic: true, minimum: 256MiB, maximum: 4GiB}
      vm2:
        version: "10"
        memory: {startup: 1073741824}
checks:
  - {from: vm1, resolve: hv1, expect_address: 10.0.0.1, timeout: 500ms, retries: 0}
  - {from: vm1, tcp: "hv1:22", timeout: 3s, expect: failure}
)",
                 "units.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  const auto* vm1 = r.lab->FindMachine("vm1");
  CHECK(vm1->version == "8.0");
  CHECK(vm1->generation == 1);
  CHECK(vm1->memory.startup == (512ull << 20));
  CHECK(vm1->memory.dynamic);
  CHECK(vm1->memory.minimum == (256ull << 20));
  CHECK(vm1->memory.maximum == (4ull << 30));
  CHECK(r.lab->FindMachine("vm2")->version == "10.0");
  CHECK(r.lab->FindMachine("vm2")->memory.startup == (1ull << 30));
  CHECK(r.lab->checks[0].kind == CheckKind::kResolve);
  CHECK(r.lab->checks[0].timeout_ms == 500);
  CHECK(r.lab->checks[0].retries == 0);
  CHECK(r.lab->checks[0].expect_address->ToString() == "10.0.0.1");
  CHECK(r.lab->checks[1].kind == CheckKind::kTcp);
  CHECK(r.lab->checks[1].timeout_ms == 3000);
  CHECK_FALSE(r.lab->checks[1].expect_success);
}

TEST_CASE("A YAML syntax error is a diagnostic at the error, not an exception", "[schema]") {
  auto r = Parse("lab: x\nhosts: [a, b\nchecks: []\n", "bad.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK_FALSE(r.lab.has_value());
  CHECK(r.diagnostics[0].loc.line >= 2);
  CHECK(r.diagnostics[0].ToString().rfind("bad.yaml:", 0) == 0);
  CHECK(r.diagnostics[0].message.find("YAML syntax") != std::string::npos);
}

TEST_CASE("An empty file and a file that is not a map are reported", "[schema]") {
  CHECK(Messages(Parse("", "e.yaml")) ==
        "e.yaml:1:1: error: the lab file is empty; it needs at least 'lab: NAME' and 'hosts:'\n");
  CHECK(Messages(Parse("- a\n- b\n", "l.yaml")) == "l.yaml:1:1: error: lab file: expected a map, got a list\n");
}

TEST_CASE("A missing file is a diagnostic naming the file", "[schema]") {
  auto r = lab::schema::LoadFile("/nonexistent/lab.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].file == "/nonexistent/lab.yaml");
  CHECK(r.diagnostics[0].message.find("cannot read the lab file") == 0);
}

TEST_CASE("A diagnostic without a position names only the file, never line 0", "[schema]") {
  auto r = lab::schema::LoadFile("/nonexistent/lab.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].ToString() == "/nonexistent/lab.yaml: error: cannot read the lab file: " +
                                           r.diagnostics[0].message.substr(std::string("cannot read the lab file: ").size()));
  CHECK(r.diagnostics[0].ToString().find(":0") == std::string::npos);
  using lab::schema::Diagnostic;
  CHECK(Diagnostic{"f.yaml", {}, "m"}.ToString() == "f.yaml: error: m");
  CHECK(Diagnostic{"f.yaml", {3, 7}, "m"}.ToString() == "f.yaml:3:7: error: m");
  CHECK(Diagnostic{"f.yaml", {3, 7}, "m", lab::schema::Severity::kWarning}.ToString() == "f.yaml:3:7: warning: m");
}

TEST_CASE("An empty key is reported at its value, or at its map when the value is empty too", "[schema]") {
  // `? ` alone has no text of its own: it used to be reported at 0:0.
  CHECK(Messages(Parse("lab: x\nhosts:\n  ? \n  : {}\n", "k.yaml")) ==
        "k.yaml:2:1: error: hosts: a lab needs at least one host\n"
        "k.yaml:4:5: error: hosts: expected a name as key, got nothing\n");
  CHECK(Messages(Parse("lab: x\nhosts:\n  hv1:\n    vms:\n      ? \n", "k.yaml")) ==
        "k.yaml:5:7: error: host 'hv1' vms: expected a name as key, got nothing\n");
}

TEST_CASE("An unknown key suggests the closest known key", "[schema]") {
  auto r = Parse("lab: x\nhosts:\n  hv1:\n    vms:\n      vm1: {proccesor: {count: 2}}\n", "k.yaml");
  CHECK(Messages(r) == "k.yaml:5:13: error: VM 'vm1': unknown key 'proccesor'; did you mean 'processor'?\n");
}

TEST_CASE("A key given twice in one map is reported at the second", "[schema]") {
  auto r = Parse("lab: x\nhosts:\n  hv1: {}\nlab: y\n", "d.yaml");
  CHECK(Messages(r) == "d.yaml:4:1: error: lab file: key 'lab' is given twice (first on line 1); remove one of them\n");
}

TEST_CASE("A name given twice in a map of many names is reported at the second, with the first's line",
          "[schema]") {
  // Big maps (a host's VMs) are checked through an index rather than a scan: same message.
  std::string text = "lab: x\nhosts:\n  hv1:\n    vms:\n";
  for (int i = 0; i < 40; ++i) text += "      vm" + std::to_string(i) + ": {}\n";  // vm0 on line 5
  text += "      vm7: {}\n      vm7: {}\n";                                        // lines 45 and 46
  auto r = Parse(text, "d.yaml");
  CHECK(Messages(r) ==
        "d.yaml:45:7: error: host 'hv1' vms: key 'vm7' is given twice (first on line 12); remove one of them\n"
        "d.yaml:46:7: error: host 'hv1' vms: key 'vm7' is given twice (first on line 12); remove one of them\n");
}

TEST_CASE("Hosts refuse VM settings and VMs refuse NICs", "[schema]") {
  auto r = Parse("lab: x\nhosts:\n  hv1:\n    memory: {startup: 1GiB}\n    vms:\n      vm1:\n        nics: {}\n",
                 "h.yaml");
  auto text = Messages(r);
  CHECK(text.find("h.yaml:4:5: error: host 'hv1': hosts are physical machines: 'memory' applies to VMs only") !=
        std::string::npos);
  CHECK(text.find("h.yaml:7:9: error: VM 'vm1': VMs have network adapters, not NICs") != std::string::npos);
}

TEST_CASE("Nesting under a VM without exposed extensions names the setting to change", "[schema]") {
  auto r = Parse(R"(lab: x
hosts:
  hv1:
    vms:
      middle:
        vms:
          nested1: {}
)",
                 "n.yaml");
  CHECK(Messages(r) ==
        "n.yaml:7:11: error: VM 'nested1' is nested under 'middle', whose virtualization extensions are not exposed; "
        "set vms.middle.processor.expose_virtualization_extensions: true "
        "(Set-VMProcessor -ExposeVirtualizationExtensions $true)\n");
}

TEST_CASE("Exposed extensions need version 8.0 and no VBS, and static memory with a VM inside", "[schema]") {
  auto r = Parse(R"(lab: x
hosts:
  hv1:
    vms:
      middle:
        version: "7.1"
        processor: {expose_virtualization_extensions: true}
        memory: {dynamic: true}
        security: {virtualization_based_security: true}
        vms:
          nested1: {}
)",
                 "x.yaml");
  REQUIRE(r.diagnostics.size() == 3);
  CHECK(r.diagnostics[0].loc.line == 6);
  CHECK(r.diagnostics[0].message.find("Update-VMVersion") != std::string::npos);
  CHECK(r.diagnostics[1].loc.line == 8);
  CHECK(r.diagnostics[1].message.find("memory.dynamic: false (Set-VMMemory -DynamicMemoryEnabled $false)") !=
        std::string::npos);
  CHECK(r.diagnostics[2].loc.line == 9);
  CHECK(r.diagnostics[2].message.find("virtualization-based security") != std::string::npos);
}

TEST_CASE("LACP teaming is refused with the seeds' reason", "[schema]") {
  auto r = Parse(R"(lab: x
hosts:
  hv1:
    nics: {e1: {network: lan}, e2: {network: lan}}
    switches:
      SET: {type: external, nics: [e1, e2], embedded_teaming: true, teaming_mode: lacp}
networks:
  lan: {subnet: 10.0.0.0/24}
)",
                 "t.yaml");
  CHECK(Messages(r) ==
        "t.yaml:6:83: error: switch 'SET' on 'hv1': SET (Switch Embedded Teaming) is switch independent only; "
        "LACP is not supported; remove teaming_mode: lacp\n");
}

TEST_CASE("A SET switch with two NICs is valid and keeps both", "[schema]") {
  auto r = Parse(R"(lab: x
networks:
  lan: {subnet: 10.0.0.0/24}
hosts:
  hv1:
    nics: {e1: {network: lan, ip: 10.0.0.2/24}, e2: {network: lan}}
    switches:
      SET: {type: external, nics: [e1, e2], embedded_teaming: true, teaming_mode: switch_independent}
)",
                 "s.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(r.lab->FindMachine("hv1")->FindSwitch("SET")->nics == std::vector<std::string>{"e1", "e2"});
}

TEST_CASE("MAC spoofing networking: nested VMs on a switch bound to the middle VM's adapter share the network",
          "[schema]") {
  auto r = Parse(R"(lab: spoof
networks:
  lan: {subnet: 10.5.0.0/24, gateway: 10.5.0.1}
hosts:
  hv1:
    nics: {Ethernet: {network: lan, ip: 10.5.0.11/24}}
    switches: {External: {type: external, nics: [Ethernet]}}
    vms:
      middle:
        processor: {expose_virtualization_extensions: true}
        adapters: [{switch: External, ip: 10.5.0.10/24, mac_address_spoofing: true, mac: "00:15:5D:00:00:01"}]
        switches: {Inner: {type: external, nics: [Ethernet]}}
        vms:
          n1: {adapters: [{switch: Inner, ip: 10.5.0.21/24, gateway: 10.5.0.1}]}
          n2: {adapters: [{switch: Inner, ip: 10.5.0.11/24}]}
)",
                 "spoof.yaml");
  // n2 takes hv1's address: the inner switch extends the lab network.
  CHECK(Messages(r) ==
        "spoof.yaml:15:47: error: VM 'n2' adapter 'Ethernet': address 10.5.0.11 is already used on network 'lan' "
        "by host 'hv1' NIC 'Ethernet' (line 6); give each interface its own address\n");
}

TEST_CASE("MACs are stored in lower case", "[schema]") {
  auto r = Parse(R"(lab: mac
hosts:
  hv1:
    switches: {P: {type: private}}
    vms:
      vm1: {adapters: [{switch: P, mac: "00:15:5D:AA:BB:01"}]}
)",
                 "m.yaml");
  INFO(Messages(r));
  REQUIRE(r.ok());
  CHECK(*r.lab->FindMachine("vm1")->adapters[0].mac == "00:15:5d:aa:bb:01");
}

TEST_CASE("A lab needs at least one host", "[schema]") {
  CHECK(Messages(Parse("lab: x\nhosts:\n", "h.yaml")) == "h.yaml:2:1: error: hosts: a lab needs at least one host\n");
  CHECK(Messages(Parse("lab: x\nhosts: {}\n", "h.yaml")) == "h.yaml:2:1: error: hosts: a lab needs at least one host\n");
}

TEST_CASE("A file with two YAML documents is refused", "[schema]") {
  auto r = Parse("lab: x\nhosts: {hv1: {}}\n---\nlab: y\n", "two.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].message == "the file holds 2 YAML documents; put one lab per file");
}

TEST_CASE("Switches inside a VM without exposed extensions are refused", "[schema]") {
  auto r = Parse(R"(lab: x
hosts:
  hv1:
    vms:
      vm1:
        switches: {S: {type: private}}
)",
                 "s.yaml");
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].loc.line == 6);
  CHECK(r.diagnostics[0].message.find("switch 'S' is inside VM 'vm1', whose virtualization extensions are not exposed") == 0);
}

TEST_CASE("An internal switch in the subnet of its owner's own adapter is refused, naming both places", "[schema]") {
  // The issue's reproduction: vEthernet (Inner) took the route of middle's network (and its
  // default route), and most checks failed.
  std::string text = kMinimal;
  text.replace(text.find("      vm1:"), 0, R"(      middle:
        processor: {expose_virtualization_extensions: true}
        adapters:
          - {switch: External, ip: 10.1.0.10/24, gateway: 10.1.0.1}
        switches:
          Inner: {type: internal, ip: 10.1.0.100/24}
)");
  auto r = Parse(text, "o.yaml");
  CHECK_FALSE(r.ok());
  CHECK(Messages(r) ==
        "o.yaml:16:39: error: VM 'middle': subnet 10.1.0.0/24 of switch 'Inner' (vEthernet (Inner) 10.1.0.100/24) "
        "overlaps subnet 10.1.0.0/24 of adapter 'Ethernet' (10.1.0.10/24) at 14:36; pick another subnet for switch "
        "'Inner' (its ip, New-NetIPAddress on vEthernet (Inner)): on one machine, overlapping subnets send the "
        "traffic of both (and the default route) through one interface\n");
}

TEST_CASE("Overlapping networks are refused at the later one, naming the earlier", "[schema]") {
  auto r = Parse("lab: unit\nnetworks:\n  a: {subnet: 10.9.0.0/24}\n  b: {subnet: 10.9.0.0/23}\n"
                 "  c: {subnet: 10.9.2.0/24}\nhosts:\n  hv1: {}\n",
                 "n.yaml");
  CHECK(Messages(r) ==
        "n.yaml:4:15: error: network 'b': subnet 10.9.0.0/23 overlaps network 'a' (10.9.0.0/24) at 3:15; pick another "
        "subnet for network 'b' (the lab's networks are separate wires, and a machine on both could not tell which "
        "one an address is on)\n");
}

TEST_CASE("A NAT prefix overlapping another subnet of its owner is one error, with the NAT's fix", "[schema]") {
  std::string text = kMinimal;
  text.replace(text.find("      vm1:"), 0, R"(      middle:
        processor: {expose_virtualization_extensions: true}
        adapters:
          - {switch: External, ip: 10.1.0.10/24}
        switches:
          VmNAT: {type: internal, ip: 10.1.0.129/25, nat: {name: LocalNAT, prefix: 10.1.0.128/25}}
)");
  auto r = Parse(text, "n.yaml");
  INFO(Messages(r));
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].loc.line == 16);
  CHECK(r.diagnostics[0].message ==
        "VM 'middle': prefix 10.1.0.128/25 of NAT 'LocalNAT' (switch 'VmNAT') overlaps subnet 10.1.0.0/24 of adapter "
        "'Ethernet' (10.1.0.10/24) at 14:36; pick another prefix for NAT 'LocalNAT' and an address inside it for "
        "switch 'VmNAT' (Hyper-V's New-NetNat refuses an internal prefix that overlaps another)");
}

TEST_CASE("Subnets that only look alike are not overlaps", "[schema]") {
  // An external switch's vEthernet shares its NIC's subnet; a NAT's prefix holds its own switch's
  // subnet; the same subnet on two machines is two routing tables; a private switch has none.
  std::string text = kMinimal;
  text.replace(text.find("      vm1:"), 0, R"(      middle:
        processor: {expose_virtualization_extensions: true}
        adapters:
          - {switch: External, ip: 10.1.0.10/24, mac_address_spoofing: true}
        switches:
          NestedExt: {type: external, nics: [Ethernet]}
          VmNAT: {type: internal, ip: 192.168.0.1/24, nat: {name: LocalNAT, prefix: 192.168.0.0/16}}
          Private: {type: private}
        vms:
          n1:
            adapters:
              - {switch: NestedExt, ip: 10.1.0.21/24}
              - {name: Ethernet2, switch: Private, ip: 172.16.0.2/24}
          n2:
            adapters:
              - {switch: VmNAT, ip: 192.168.0.2/24, gateway: 192.168.0.1}
              - {name: Ethernet2, switch: Private, ip: 172.16.0.3/24}
)");
  auto r = Parse(text, "ok.yaml");
  INFO(Messages(r));
  CHECK(r.ok());
  CHECK(r.diagnostics.empty());
}

TEST_CASE("Each of many overlapping subnets on one machine is reported, once", "[schema]") {
  // Nested prefixes: each is reported against the innermost one holding it.
  std::string text = "lab: unit\nhosts:\n  hv1:\n    switches:\n";
  for (int p = 8; p <= 24; ++p)
    text += "      S" + std::to_string(p) + ": {type: internal, ip: 10.0.0." + std::to_string(p) + "/" +
            std::to_string(p) + "}\n";
  auto r = Parse(text, "m.yaml");
  CHECK(r.diagnostics.size() == 16);
  for (const auto& d : r.diagnostics) CHECK(d.message.find(" overlaps subnet ") != std::string::npos);
}

TEST_CASE("A check target nothing in the lab answers for is a warning, and the lab still loads", "[schema]") {
  std::string text = std::string(kMinimal) + "  - {from: vm1, ping: vm2}\n  - {from: vm1, tcp: \"hv1:22\"}\n";
  auto r = Parse(text, "w.yaml");
  REQUIRE(r.ok());
  REQUIRE(r.diagnostics.size() == 1);
  CHECK(r.diagnostics[0].severity == lab::schema::Severity::kWarning);
  CHECK(r.diagnostics[0].ToString() ==
        "w.yaml:16:23: warning: check 2: ping target 'vm2' is neither a machine of this lab, a dns_records name nor an "
        "address, so nothing in the lab answers for it; did you mean 'vm1'?");
}
