// Names as Hyper-V takes them (issue 18): the name rules, uniqueness ignoring case, and the
// computer name derived from a VM's name.
#include <catch2/catch.hpp>

#include <string>

#include "schema/lab.h"
#include "schema/reader.h"

using lab::schema::ComputerNameOf;
using lab::schema::Parse;

namespace {

std::string Messages(const lab::schema::LoadResult& r) {
  std::string out;
  for (const auto& d : r.diagnostics) out += d.ToString() + "\n";
  return out;
}

// A lab named as a Hyper-V admin names one.
const char* kHyperV = R"(lab: names
networks:
  lan: {subnet: 10.1.0.0/24}
hosts:
  HV01:
    nics:
      Ethernet 2: {network: lan, ip: 10.1.0.11/24}
    switches:
      Default Switch:
        type: internal
        ip: 192.168.50.1/24
        nat: {name: Default NAT, prefix: 192.168.50.0/24}
    vms:
      "135. Nested Virtualization 2022":
        adapters:
          - {name: Network Adapter, switch: Default Switch, ip: 192.168.50.10/24}
      DC01:
        hostname: dc-one
        adapters:
          - {name: Network Adapter, switch: Default Switch, ip: 192.168.50.11/24}
)";

}  // namespace

TEST_CASE("Names with capitals, spaces and dots are taken as Hyper-V takes them", "[schema][names]") {
  auto r = Parse(kHyperV, "names.yaml");
  INFO(Messages(r));
  REQUIRE_FALSE(r.HasErrors());
  REQUIRE(r.lab->machines.size() == 3);
  CHECK(r.lab->machines[0].name == "HV01");
  CHECK(r.lab->machines[0].nics[0].name == "Ethernet 2");
  CHECK(r.lab->machines[0].switches[0].name == "Default Switch");
  CHECK(r.lab->machines[0].switches[0].nat->name == "Default NAT");
  CHECK(r.lab->machines[1].name == "135. Nested Virtualization 2022");
  CHECK(r.lab->machines[1].adapters[0].name == "Network Adapter");
}

TEST_CASE("The Hyper-V name rule refuses control characters, reserved characters and over 100 characters",
          "[schema][names]") {
  using lab::schema::CheckHyperVName;
  CHECK(CheckHyperVName("135. Nested Virtualization 2022").empty());
  CHECK(CheckHyperVName("vEthernet (Default Switch)").empty());
  CHECK(CheckHyperVName(std::string(100, 'a')).empty());
  CHECK_FALSE(CheckHyperVName("").empty());
  CHECK_FALSE(CheckHyperVName(std::string(101, 'a')).empty());
  CHECK_FALSE(CheckHyperVName("tab\there").empty());
  for (char c : std::string("/\\:*?\"<>|")) {
    INFO("character " << c);
    CHECK(CheckHyperVName(std::string("a") + c + "b").find(std::string("'") + c + "'") != std::string::npos);
  }
  // The lab name stays [a-z0-9-]: it is the ownership mark.
  CHECK_FALSE(lab::schema::CheckLabName("My Lab").empty());
  CHECK_FALSE(lab::schema::CheckInterfaceName("LO").empty());
}

TEST_CASE("A computer name is derived from the VM name, runs of other characters becoming one dash",
          "[schema][names]") {
  CHECK(ComputerNameOf("135. Nested Virtualization 2022") == "135-Nested-Virtualization-2022");
  CHECK(ComputerNameOf("DC01") == "DC01");
  CHECK(ComputerNameOf("  Nested VM 1 ") == "Nested-VM-1");
  CHECK(ComputerNameOf("...") == "");
  CHECK(ComputerNameOf(std::string(70, 'x')).size() == 63);
  // Cut to 63, then trimmed of a dash the cut leaves at the end.
  CHECK(ComputerNameOf(std::string(62, 'x') + " y") == std::string(62, 'x'));
  CHECK(lab::schema::FoldCase("DC01") == lab::schema::FoldCase("dc01"));
}

TEST_CASE("A machine's computer name is hostname: if given, else derived from its name", "[schema][names]") {
  auto r = Parse(kHyperV, "names.yaml");
  REQUIRE_FALSE(r.HasErrors());
  CHECK(r.lab->machines[0].hostname == "HV01");
  CHECK(r.lab->machines[1].hostname == "135-Nested-Virtualization-2022");
  CHECK(r.lab->machines[2].hostname == "dc-one");
}

TEST_CASE("DC01 and dc01 in one lab are refused with both positions", "[schema][names]") {
  std::string text = kHyperV;
  text += "      dc01: {}\n";
  auto r = Parse(text, "names.yaml");
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("names.yaml:21:7: error: machine name 'dc01' is already used by the VM 'DC01' at 17:7") !=
        std::string::npos);
}

TEST_CASE("Switches, NICs and adapters are unique in their scope ignoring case", "[schema][names]") {
  std::string text = kHyperV;
  text.replace(text.find("      Default Switch:"), 0, "      default switch: {type: private}\n");
  text.replace(text.find("      Ethernet 2:"), 0, "      ETHERNET 2: {network: lan}\n");
  text.replace(text.find("          - {name: Network Adapter, switch: Default Switch, ip: 192.168.50.11/24}"), 0,
               "          - {name: network adapter, switch: Default Switch}\n");
  auto r = Parse(text, "names.yaml");
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("switch name 'Default Switch' is the same as switch 'default switch' at 10:7") != std::string::npos);
  CHECK(m.find("NIC name 'Ethernet 2' is the same as NIC 'ETHERNET 2' at 7:7") != std::string::npos);
  CHECK(m.find("already has an adapter named 'network adapter'") != std::string::npos);
}

TEST_CASE("Two machines whose computer names collide ignoring case are refused with both positions",
          "[schema][names]") {
  std::string text = kHyperV;
  text += "      135 Nested virtualization 2022: {}\n";
  text += "      Other:\n        hostname: DC-ONE\n";
  auto r = Parse(text, "names.yaml");
  std::string m = Messages(r);
  INFO(m);
  CHECK(m.find("names.yaml:21:7: error: VM '135 Nested virtualization 2022': computer name "
               "'135-Nested-virtualization-2022' is also the computer name of '135. Nested Virtualization 2022' "
               "at 14:7") != std::string::npos);
  CHECK(m.find("names.yaml:23:19: error: VM 'Other': computer name 'DC-ONE' is also the computer name of 'DC01' "
               "at 18:19") != std::string::npos);
  auto bad = Parse(std::string(kHyperV) + "      Web:\n        hostname: web_1\n", "names.yaml");
  CHECK(Messages(bad).find("hostname 'web_1' is invalid") != std::string::npos);
  auto none = Parse(std::string(kHyperV) + "      \"...\": {}\n", "names.yaml");
  CHECK(Messages(none).find("no computer name can be derived") != std::string::npos);
}
