// lab export --format powershell: the lab as the seeds' Hyper-V cmdlets.
//
// tests/engine/golden/NAME.ps1 holds the exact script for labs/NAME.yaml (read as
// "labs/NAME.yaml", so the header does not depend on where the tree is). After a deliberate
// change of the script, rewrite them and read the diff before committing it:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_engine "[export]"
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "base/text.h"
#include "engine/export.h"
#include "schema/lab.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::engine::ExportPowerShell;
using lab::engine::PsQuote;

namespace {

lab::schema::Lab LoadLab(const std::string& name) {
  auto text = lab::ReadFile(lab::testing::Src("labs/" + name + ".yaml"));
  REQUIRE(text);
  auto result = lab::schema::Parse(*text, "labs/" + name + ".yaml");
  REQUIRE(result.ok());
  return *result.lab;
}

lab::schema::Lab ParseLab(const std::string& text) {
  auto result = lab::schema::Parse(text, "test.yaml");
  for (const auto& d : result.diagnostics) INFO(d.ToString());
  REQUIRE(result.ok());
  return *result.lab;
}

/// Position of `needle` in `script` at or after `from`, failing the test when it is missing.
size_t Pos(const std::string& script, const std::string& needle, size_t from = 0) {
  size_t pos = script.find(needle, from);
  INFO("looking for: " << needle);
  CHECK(pos != std::string::npos);
  return pos;
}

}  // namespace

TEST_CASE("Every lab file exports exactly the PowerShell script in its golden file", "[engine][export]") {
  const char* update = std::getenv("LAB_UPDATE_GOLDEN");
  bool rewrite = update != nullptr && std::string(update) == "1";
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(lab::testing::Src("labs")))
    if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() >= 2);
  for (const auto& name : names) {
    std::string got = ExportPowerShell(LoadLab(name));
    std::string golden = lab::testing::Src("tests/engine/golden/" + name + ".ps1");
    if (rewrite) {
      REQUIRE(lab::WriteFileAtomic(golden, got));
      continue;
    }
    auto want = lab::ReadFile(golden);
    INFO("golden file tests/engine/golden/" << name << ".ps1 (LAB_UPDATE_GOLDEN=1 rewrites it)");
    REQUIRE(want);
    CHECK(got == *want);
  }
}

TEST_CASE("The nested-nat script runs the seeds' commands in the seeds' order", "[engine][export]") {
  std::string ps = ExportPowerShell(LoadLab("nested-nat"));

  SECTION("nesting and static memory are set while the middle VM is off") {
    size_t created = Pos(ps, "New-VM -Name 'middle' -Generation 2 -MemoryStartupBytes 2GB -Version '9.0'");
    size_t expose = Pos(ps, "Set-VMProcessor -VMName 'middle' -ExposeVirtualizationExtensions $true");
    size_t memory = Pos(ps, "Set-VMMemory -VMName 'middle' -DynamicMemoryEnabled $false");
    size_t start = Pos(ps, "Start-VM -Name 'middle'");
    CHECK(created < expose);
    CHECK(created < memory);
    CHECK(expose < start);
    CHECK(memory < start);
  }

  SECTION("Hyper-V is installed inside before the NAT switch, and the NAT comes after its switch") {
    size_t start = Pos(ps, "Start-VM -Name 'middle'");
    size_t install = Pos(ps, "Install-WindowsFeature -Name Hyper-V -IncludeManagementTools -Restart");
    size_t installed = Pos(ps, "(Get-WindowsFeature -Name Hyper-V).InstallState");
    size_t sw = Pos(ps, "New-VMSwitch -Name 'VmNAT' -SwitchType Internal");
    size_t address = Pos(ps, "New-NetIPAddress -InterfaceAlias 'vEthernet (VmNAT)' -IPAddress '192.168.100.1' -PrefixLength 24");
    size_t nat = Pos(ps, "New-NetNat -Name 'LocalNAT' -InternalIPInterfaceAddressPrefix '192.168.100.0/24'");
    CHECK(start < install);
    CHECK(install < installed);
    CHECK(installed < sw);
    CHECK(sw < address);
    CHECK(sw < nat);
  }

  SECTION("the nested VMs are made inside the middle VM and get their addresses from inside") {
    size_t inside_middle = Pos(ps, "Invoke-Command -VMName 'middle' -Credential $Credential -ScriptBlock {");
    size_t credential = Pos(ps, "$Credential = $using:Credential");
    size_t nat = Pos(ps, "New-NetNat -Name 'LocalNAT'");
    size_t created = Pos(ps, "New-VM -Name 'nested1'");
    size_t start = Pos(ps, "Start-VM -Name 'nested1'");
    size_t inside_nested = Pos(ps, "Invoke-Command -VMName 'nested1' -Credential $Credential -ScriptBlock {");
    size_t address = Pos(ps, "New-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '192.168.100.2' -PrefixLength 24 "
                             "-DefaultGateway '192.168.100.1'");
    size_t dns = Pos(ps, "Set-DnsClientServerAddress -InterfaceAlias 'Ethernet' -ServerAddresses '10.10.0.1'", address);
    CHECK(inside_middle < credential);
    CHECK(credential < created);
    CHECK(nat < created);
    CHECK(created < start);
    CHECK(start < inside_nested);
    CHECK(inside_nested < address);
    CHECK(address < dns);
    // nested1 is configured from inside middle: its lines are indented one level deeper.
    CHECK(ps.find("\n            New-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '192.168.100.2'") !=
          std::string::npos);
  }

  SECTION("the host's switch and address come before its VMs") {
    size_t sw = Pos(ps, "New-VMSwitch -Name 'External' -NetAdapterName 'Ethernet' -AllowManagementOS $true");
    size_t address = Pos(ps, "New-NetIPAddress -InterfaceAlias 'vEthernet (External)' -IPAddress '10.10.0.11'");
    size_t vm = Pos(ps, "New-VM -Name 'middle'");
    CHECK(sw < address);
    CHECK(address < vm);
  }
}

TEST_CASE("PsQuote makes inert single-quoted PowerShell strings", "[engine][export]") {
  CHECK(PsQuote("middle") == "'middle'");
  CHECK(PsQuote("") == "''");
  CHECK(PsQuote("O'Brien") == "'O''Brien'");
  CHECK(PsQuote("$(rm -rf /)") == "'$(rm -rf /)'");
  CHECK(PsQuote("a`b") == "'a`b'");
  CHECK(PsQuote("'; Remove-Item C:\\ -Recurse; '") == "'''; Remove-Item C:\\ -Recurse; '''");
  // PowerShell reads the typographic quotes U+2018..U+201B as ' too: they are doubled as well.
  CHECK(PsQuote("a\xe2\x80\x99" "b") == "'a\xe2\x80\x99\xe2\x80\x99" "b'");
  CHECK(PsQuote("\xe2\x80\x98x\xe2\x80\x9b") == "'\xe2\x80\x98\xe2\x80\x98x\xe2\x80\x9b\xe2\x80\x9b'");
  // Other three-byte characters pass through untouched.
  CHECK(PsQuote("\xe2\x80\x9c") == "'\xe2\x80\x9c'");
}

TEST_CASE("A line break in the file name cannot turn a comment of the script into code", "[engine][export]") {
  auto lab = LoadLab("nested-nat");
  lab.file = "evil\nRemove-Item -Recurse C:\\\r\n\xe2\x80\xa8Stop-Computer.yaml";
  std::string ps = ExportPowerShell(lab);
  for (const auto& line : lab::Split(ps, '\n')) {
    CHECK(line.rfind("Remove-Item", 0) != 0);
    CHECK(line.rfind("Stop-Computer", 0) != 0);
  }
  CHECK(ps.find('\r') == std::string::npos);
  CHECK(ps.rfind("# Generated by lab from evil Remove-Item", 0) == 0);
}

TEST_CASE("Export covers SET teams, private switches, dynamic memory, MACs and MAC spoofing", "[engine][export]") {
  auto lab = ParseLab(R"(lab: teamed
networks:
  lan: {subnet: 10.30.0.0/24, gateway: 10.30.0.1}
hosts:
  hv1:
    nics:
      NIC1: {network: lan, ip: 10.30.0.11/24, gateway: 10.30.0.1}
      NIC2: {network: lan}
    switches:
      SETSwitch: {type: external, nics: [NIC1, NIC2], embedded_teaming: true, allow_management_os: true}
      Lab: {type: private}
    vms:
      web:
        generation: 2
        memory: {startup: 1GiB, dynamic: true, minimum: 512MiB, maximum: 4GiB}
        adapters:
          - {name: Front, switch: SETSwitch, mac: "00:15:5d:0a:0b:0c", mac_address_spoofing: true,
             ip: 10.30.0.20/24, gateway: 10.30.0.1}
          - {name: Back, switch: Lab, ip: 172.16.0.2/24}
)");
  std::string ps = ExportPowerShell(lab);
  INFO(ps);
  CHECK(ps.find("New-VMSwitch -Name 'SETSwitch' -NetAdapterName 'NIC1', 'NIC2' -EnableEmbeddedTeaming $true "
                "-AllowManagementOS $true") != std::string::npos);
  CHECK(ps.find("New-VMSwitch -Name 'Lab' -SwitchType Private") != std::string::npos);
  CHECK(ps.find("New-NetIPAddress -InterfaceAlias 'vEthernet (SETSwitch)' -IPAddress '10.30.0.11'") != std::string::npos);
  CHECK(ps.find("Set-VMMemory -VMName 'web' -DynamicMemoryEnabled $true -MinimumBytes 512MB -StartupBytes 1GB "
                "-MaximumBytes 4GB") != std::string::npos);
  CHECK(ps.find("Add-VMNetworkAdapter -VMName 'web' -Name 'Front' -SwitchName 'SETSwitch' -StaticMacAddress "
                "'00155D0A0B0C'") != std::string::npos);
  CHECK(ps.find("Set-VMNetworkAdapter -VMName 'web' -Name 'Front' -MacAddressSpoofing On") != std::string::npos);
  CHECK(ps.find("Set-VMNetworkAdapter -VMName 'web' -Name 'Back' -DeviceNaming On") != std::string::npos);
  CHECK(ps.find("Rename-NetAdapter") != std::string::npos);
  CHECK(ps.find("Install-WindowsFeature") == std::string::npos);  // no nesting here
  CHECK(ps.find("-ExposeVirtualizationExtensions") == std::string::npos);
}

TEST_CASE("Export nests PowerShell Direct one level per level of nesting", "[engine][export]") {
  auto lab = ParseLab(R"(lab: deep
networks:
  lan: {subnet: 10.40.0.0/24, gateway: 10.40.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.40.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      l1:
        processor: {expose_virtualization_extensions: true}
        adapters: [{switch: External, ip: 10.40.0.20/24}]
        switches:
          In1: {type: internal, ip: 192.168.1.1/24, nat: {name: Nat1, prefix: 192.168.1.0/24}}
        vms:
          l2:
            processor: {expose_virtualization_extensions: true}
            adapters: [{switch: In1, ip: 192.168.1.2/24, gateway: 192.168.1.1}]
            switches:
              In2: {type: internal, ip: 192.168.2.1/24, nat: {name: Nat2, prefix: 192.168.2.0/24}}
            vms:
              l3:
                adapters: [{switch: In2, ip: 192.168.2.2/24, gateway: 192.168.2.1}]
)");
  std::string ps = ExportPowerShell(lab);
  INFO(ps);
  // host part: 4 spaces; inside l1: 8; inside l2: 12; inside l3: 16.
  CHECK(ps.find("\n    New-VM -Name 'l1'") != std::string::npos);
  CHECK(ps.find("\n        New-VM -Name 'l2'") != std::string::npos);
  CHECK(ps.find("\n            New-VM -Name 'l3'") != std::string::npos);
  CHECK(ps.find("\n                New-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '192.168.2.2'") !=
        std::string::npos);
  // Each level hands the credential down to the next Invoke-Command.
  size_t handed = 0;
  for (size_t pos = 0; (pos = ps.find("$Credential = $using:Credential", pos)) != std::string::npos; ++pos) ++handed;
  CHECK(handed == 2);
  CHECK(ps.find("\n            Install-WindowsFeature -Name Hyper-V") != std::string::npos);  // l2, from l1
  // Braces balance.
  CHECK(std::count(ps.begin(), ps.end(), '{') == std::count(ps.begin(), ps.end(), '}'));
}
