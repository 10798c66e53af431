// lab export --format powershell: the lab as the seeds' Hyper-V cmdlets.
//
// tests/engine/golden/NAME.ps1 holds the exact script for labs/NAME.yaml (read as
// "labs/NAME.yaml", so the header does not depend on where the tree is). After a deliberate
// change of the script, rewrite them and read the diff before committing it:
//   LAB_UPDATE_GOLDEN=1 ./tests/test_engine "[export]"
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>
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

/// VMs on two images, one of them nested inside a middle VM on the other.
const char* kImagesLab = R"(lab: imgs
networks:
  lan: {subnet: 10.41.0.0/24}
images:
  web: {rootfs: ./web.tar}
  tools: {oci: ./tools:1.0}
  unused: {rootfs: ./unused.tar}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.41.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
    vms:
      web:
        image: web
        adapters: [{switch: External, ip: 10.41.0.20/24}]
      middle:
        image: web
        processor: {expose_virtualization_extensions: true}
        adapters: [{switch: External, ip: 10.41.0.30/24}]
        switches:
          Inner: {type: internal, ip: 192.168.41.1/24}
        vms:
          nested:
            image: tools
            adapters: [{switch: Inner, ip: 192.168.41.2/24}]
          plain:
            adapters: [{switch: Inner, ip: 192.168.41.3/24}]
)";

}  // namespace

TEST_CASE("Export makes each image a parent disk and each VM on one a differencing disk over it",
          "[engine][export]") {
  std::string ps = ExportPowerShell(ParseLab(kImagesLab));
  INFO(ps);
  // The parent disks, one per image a machine uses (not 'unused').
  CHECK(ps.find("[hashtable] $ParentDisks = @{ 'web' = 'BASE_web.vhdx'; 'tools' = 'BASE_tools.vhdx' },") != std::string::npos);
  // A differencing disk per VM on an image, before its New-VM.
  size_t diff = Pos(ps, "New-VHD -Path (Join-Path $VhdDirectory 'web.vhdx') -ParentPath (Join-Path $VhdDirectory "
                        "$ParentDisks['web']) -Differencing");
  CHECK(diff < Pos(ps, "New-VM -Name 'web'"));
  Pos(ps, "New-VHD -Path (Join-Path $VhdDirectory 'middle.vhdx') -ParentPath (Join-Path $VhdDirectory "
          "$ParentDisks['web']) -Differencing");
  Pos(ps, "New-VHD -Path (Join-Path $VhdDirectory 'nested.vhdx') -ParentPath (Join-Path $VhdDirectory "
          "$ParentDisks['tools']) -Differencing");
  // A VM on the host's software keeps its prepared disk.
  CHECK(ps.find("New-VHD -Path (Join-Path $VhdDirectory 'plain.vhdx')") == std::string::npos);
  // The nested VM's parent is copied into the middle VM before the nested VM is made there.
  size_t copy = Pos(ps, "Copy-VMFile -Name 'middle' -SourcePath $parent -DestinationPath $parent -FileSource Host");
  CHECK(Pos(ps, "$parent = Join-Path $VhdDirectory $ParentDisks['tools']") < copy);
  CHECK(copy < Pos(ps, "New-VM -Name 'nested'"));
  CHECK(Pos(ps, "$ParentDisks = $using:ParentDisks") < Pos(ps, "New-VM -Name 'nested'"));
  // A lab without images is exported as before: no parent disks at all.
  std::string plain = ExportPowerShell(LoadLab("nested-nat"));
  CHECK(plain.find("ParentDisks") == std::string::npos);
  CHECK(plain.find("New-VHD") == std::string::npos);
}

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
    size_t install = Pos(ps, "Install-WindowsFeature -Name Hyper-V -IncludeManagementTools }");
    size_t restart = Pos(ps, "Restart-VM -Name 'middle' -Force", install);
    size_t installed = Pos(ps, "(Get-WindowsFeature -Name Hyper-V).InstallState } } catch { $null }) -eq 'Installed'");
    size_t sw = Pos(ps, "New-VMSwitch -Name 'VmNAT' -SwitchType Internal");
    size_t address = Pos(ps, "New-NetIPAddress -InterfaceAlias 'vEthernet (VmNAT)' -IPAddress '192.168.100.1' -PrefixLength 24");
    size_t nat = Pos(ps, "New-NetNat -Name 'LocalNAT' -InternalIPInterfaceAddressPrefix '192.168.100.0/24'");
    CHECK(start < install);
    CHECK(install < restart);
    CHECK(restart < installed);
    CHECK(installed < sw);
    CHECK(sw < address);
    CHECK(sw < nat);
  }

  SECTION("the nested VMs are made inside the middle VM and get their addresses from inside") {
    size_t inside_middle = Pos(ps, "Invoke-Command -VMName 'middle' -Credential $Credential -ScriptBlock {\n");
    size_t credential = Pos(ps, "$Credential = $using:Credential");
    size_t nat = Pos(ps, "New-NetNat -Name 'LocalNAT'");
    size_t created = Pos(ps, "New-VM -Name 'nested1'");
    size_t start = Pos(ps, "Start-VM -Name 'nested1'");
    size_t inside_nested = Pos(ps, "Invoke-Command -VMName 'nested1' -Credential $Credential -ScriptBlock {\n");
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
    // nested1 is configured from inside middle: its lines are indented one level deeper (and one
    // more inside the guard that keeps an existing address).
    CHECK(ps.find("\n                New-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '192.168.100.2'") !=
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
  CHECK(ps.find("Add-VMNetworkAdapter -VMName 'web' -Name 'Front'\n") != std::string::npos);
  CHECK(ps.find("Set-VMNetworkAdapter -VMName 'web' -Name 'Front' -StaticMacAddress '00155D0A0B0C'") !=
        std::string::npos);
  CHECK(ps.find("Connect-VMNetworkAdapter -VMName 'web' -Name 'Front' -SwitchName 'SETSwitch'") != std::string::npos);
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
  // host part: 4 spaces; inside l1: 8; inside l2: 12; inside l3: 16; each New-* one deeper in its guard.
  CHECK(ps.find("\n        New-VM -Name 'l1'") != std::string::npos);
  CHECK(ps.find("\n            New-VM -Name 'l2'") != std::string::npos);
  CHECK(ps.find("\n                New-VM -Name 'l3'") != std::string::npos);
  CHECK(ps.find("\n                    New-NetIPAddress -InterfaceAlias 'Ethernet' -IPAddress '192.168.2.2'") !=
        std::string::npos);
  // Each level hands the credential down to the next Invoke-Command.
  size_t handed = 0;
  for (size_t pos = 0; (pos = ps.find("$Credential = $using:Credential", pos)) != std::string::npos; ++pos) ++handed;
  CHECK(handed == 2);
  CHECK(ps.find("\n            Invoke-Command -VMName 'l2' -Credential $Credential -ScriptBlock { "
                "Install-WindowsFeature -Name Hyper-V") != std::string::npos);  // l2, from l1
  CHECK(ps.find("$WaitMinutes = $using:WaitMinutes") != std::string::npos);
  // Braces balance.
  CHECK(std::count(ps.begin(), ps.end(), '{') == std::count(ps.begin(), ps.end(), '}'));
}

// ---- Run as is, twice: the properties every lab's script must have -----------------------------

namespace {

std::vector<std::string> LabNames() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(lab::testing::Src("labs")))
    if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() >= 2);
  return names;
}

std::string Trimmed(const std::string& line) {
  size_t a = line.find_first_not_of(' ');
  return a == std::string::npos ? "" : line.substr(a);
}

size_t Indent(const std::string& line) {
  size_t a = line.find_first_not_of(' ');
  return a == std::string::npos ? 0 : a;
}

/// The code lines of a script (comments and blank lines left out), each with its line number.
std::vector<std::pair<size_t, std::string>> CodeLines(const std::string& ps) {
  std::vector<std::pair<size_t, std::string>> out;
  auto lines = lab::Split(ps, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string t = Trimmed(lines[i]);
    if (!t.empty() && t[0] != '#') out.push_back({i + 1, lines[i]});
  }
  return out;
}

/// The first verb-noun command `Verb-Noun` on a code line outside quotes, or "".
std::vector<std::string> Commands(const std::string& line, const std::string& verb) {
  std::vector<std::string> out;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\'') quoted = !quoted;
    if (quoted || line.compare(i, verb.size() + 1, verb + "-") != 0) continue;
    if (i > 0 && (std::isalnum(static_cast<unsigned char>(line[i - 1])) || line[i - 1] == '-')) continue;
    size_t end = i + verb.size() + 1;
    while (end < line.size() && std::isalnum(static_cast<unsigned char>(line[end]))) ++end;
    out.push_back(line.substr(i + verb.size() + 1, end - i - verb.size() - 1));
  }
  return out;
}

/// Checks (), {} and [] balance outside strings and comments; returns "" or what is wrong.
std::string Unbalanced(const std::string& ps) {
  std::string stack;
  size_t line = 1;
  for (size_t i = 0; i < ps.size(); ++i) {
    char c = ps[i];
    if (c == '\n') ++line;
    if (c == '#') {  // a comment runs to the end of the line
      while (i + 1 < ps.size() && ps[i + 1] != '\n') ++i;
      continue;
    }
    if (c == '\'') {  // '' is a quote inside a single-quoted string
      for (++i; i < ps.size(); ++i) {
        if (ps[i] == '\n') return "line " + std::to_string(line) + ": a single-quoted string runs past the line";
        if (ps[i] == '\'' && !(i + 1 < ps.size() && ps[i + 1] == '\'')) break;
        if (ps[i] == '\'') ++i;
      }
      continue;
    }
    if (c == '"') {  // a double-quoted string; its $( ) subexpressions hold no quotes here
      for (++i; i < ps.size() && ps[i] != '"'; ++i)
        if (ps[i] == '\n') return "line " + std::to_string(line) + ": a double-quoted string runs past the line";
      continue;
    }
    if (c == '(' || c == '{' || c == '[') stack += c;
    if (c == ')' || c == '}' || c == ']') {
      char open = c == ')' ? '(' : c == '}' ? '{' : '[';
      if (stack.empty() || stack.back() != open) return "line " + std::to_string(line) + ": unexpected " + c;
      stack.pop_back();
    }
  }
  return stack.empty() ? "" : "unclosed " + stack;
}

}  // namespace

TEST_CASE("Every New-* and Add-* of every lab's script runs only where the Get-* of its object finds nothing",
          "[engine][export]") {
  for (const auto& name : LabNames()) {
    std::string ps = ExportPowerShell(LoadLab(name));
    auto code = CodeLines(ps);
    size_t made = 0;
    for (size_t i = 0; i < code.size(); ++i) {
      for (const std::string& verb : {"New", "Add"}) {
        for (const std::string& noun : Commands(code[i].second, verb)) {
          INFO(name << ".ps1:" << code[i].first << ": " << code[i].second);
          ++made;
          REQUIRE(i > 0);
          std::string guard = Trimmed(code[i - 1].second);
          INFO("guard: " << guard);
          CHECK(guard.rfind("if (", 0) == 0);
          // A disk is a file: its guard is Test-Path of the same path (there is no Get-VHD of a
          // path that does not exist yet without an error).
          if (noun == "VHD")
            CHECK(guard.find("Test-Path") != std::string::npos);
          else
            CHECK(guard.find("Get-" + noun + " ") != std::string::npos);
          CHECK(guard.ends_with("{"));
          CHECK(Indent(code[i].second) == Indent(code[i - 1].second) + 4);
        }
      }
    }
    INFO(name);
    CHECK(made >= 3);  // switches, VMs, addresses at least
  }
}

TEST_CASE("Every wait of every lab's script gives up after -WaitMinutes and says what it waits for",
          "[engine][export]") {
  for (const auto& name : LabNames()) {
    std::string ps = ExportPowerShell(LoadLab(name));
    CHECK(ps.find("    [int] $WaitMinutes = 20\n") != std::string::npos);
    auto code = CodeLines(ps);
    size_t waits = 0;
    for (size_t i = 0; i < code.size(); ++i) {
      std::string t = Trimmed(code[i].second);
      if (t.rfind("while", 0) != 0 && t.find(" while ") == std::string::npos && t.rfind("do ", 0) != 0) continue;
      INFO(name << ".ps1:" << code[i].first << ": " << t);
      ++waits;
      REQUIRE(i > 0);
      REQUIRE(i + 4 < code.size());
      CHECK(Trimmed(code[i - 1].second) == "$deadline = (Get-Date).AddMinutes($WaitMinutes)");
      CHECK(Trimmed(code[i + 1].second) == "if ((Get-Date) -gt $deadline) {");
      CHECK(Trimmed(code[i + 2].second).rfind("throw ('Gave up after ' + $WaitMinutes + ' minutes waiting for ", 0) == 0);
      CHECK(Trimmed(code[i + 4].second).rfind("Write-Host 'Waiting for ", 0) == 0);
      // What it waits for is a guest's answer, which a failed call turns into $null, not an error.
      CHECK(t.find("$(try { Invoke-Command -VMName ") != std::string::npos);
      CHECK(t.find("} catch { $null })") != std::string::npos);
    }
    INFO(name);
    CHECK(waits >= 2);  // every lab has a VM to boot and rename
  }
}

TEST_CASE("Without -VhdDirectory each host's part stops with a message once its VMs are made, before starting one",
          "[engine][export]") {
  for (const auto& name : LabNames()) {
    auto lab = LoadLab(name);
    std::string ps = ExportPowerShell(lab);
    for (const auto& host : lab.machines) {
      if (host.kind != lab::schema::MachineKind::kHost || host.vms.empty()) continue;
      INFO(name << " host " << host.name);
      size_t begin = Pos(ps, "\nif ($LabHost -eq " + PsQuote(host.name) + ") {\n");
      size_t end = ps.find("\n}\n", begin);
      REQUIRE(end != std::string::npos);
      std::string part = ps.substr(begin, end - begin);
      size_t gate = Pos(part, "\n    if (-not $VhdDirectory) {\n        Write-Warning 'The VMs of host ");
      size_t stop = Pos(part, "\n        return\n    }\n", gate);
      CHECK(part.find("PowerShell Direct can configure a guest only once an operating system runs in it",
                      gate) < stop);
      for (const auto& vm : host.vms) {
        CHECK(Pos(part, "New-VM -Name " + PsQuote(vm) + " ") < gate);
        CHECK(Pos(part, "Start-VM -Name " + PsQuote(vm) + "\n") > stop);
        CHECK(part.find(vm + ".vhdx", gate) < stop);  // the message names the disk to prepare
      }
      CHECK(part.find("Start-VM") > stop);
    }
  }
}

TEST_CASE("-Version is written only where the lab file gives version:", "[engine][export]") {
  size_t with = 0, without = 0;
  for (const auto& name : LabNames()) {
    auto lab = LoadLab(name);
    std::string ps = ExportPowerShell(lab);
    for (const auto& m : lab.machines) {
      if (m.kind != lab::schema::MachineKind::kVm) continue;
      INFO(name << " VM " << m.name);
      size_t at = Pos(ps, "New-VM -Name " + PsQuote(m.name) + " ");
      std::string line = ps.substr(at, ps.find('\n', at) - at);
      if (m.version_given) {
        ++with;
        CHECK(line.find(" -Version " + PsQuote(m.version) + " ") != std::string::npos);
      } else {
        ++without;
        CHECK(line.find("-Version") == std::string::npos);
      }
    }
  }
  CHECK(with > 0);
  CHECK(without > 0);
}

TEST_CASE("Every guest of every lab is renamed to its computer name and waited for under it", "[engine][export]") {
  for (const auto& name : LabNames()) {
    auto lab = LoadLab(name);
    std::string ps = ExportPowerShell(lab);
    for (const auto& m : lab.machines) {
      if (m.kind != lab::schema::MachineKind::kVm) continue;
      INFO(name << " VM " << m.name);
      size_t start = Pos(ps, "Start-VM -Name " + PsQuote(m.name) + "\n");
      // The computer name: hostname: or derived from the VM's name (docs/names.md).
      const std::string computer = m.hostname.empty() ? m.name : m.hostname;
      size_t rename = Pos(ps, "-ScriptBlock { Rename-Computer -NewName " + PsQuote(computer) + " -Force }", start);
      size_t restart = Pos(ps, "Restart-VM -Name " + PsQuote(m.name) + " -Force", rename);
      size_t wait = Pos(ps, "[System.Net.Dns]::GetHostName() } } catch { $null }) -eq " + PsQuote(computer) + ")) {",
                        restart);
      CHECK(start < rename);
      CHECK(rename < restart);
      CHECK(restart < wait);
    }
    CHECK(ps.find("Rename-Computer") != std::string::npos);
  }
}

TEST_CASE("A NAT that proxies DNS becomes the DNS Server role in its owner, forwarding to the owner's DNS servers",
          "[engine][export]") {
  std::string ps = ExportPowerShell(LoadLab("set-team"));
  size_t inside_middle = Pos(ps, "Invoke-Command -VMName 'middle' -Credential $Credential -ScriptBlock {\n");
  size_t nat = Pos(ps, "New-NetNat -Name 'LocalNAT'", inside_middle);
  size_t role = Pos(ps, "\n            Install-WindowsFeature -Name DNS -IncludeManagementTools\n", nat);
  size_t forwarder = Pos(ps, "\n        Set-DnsServerForwarder -IPAddress '10.60.0.1'\n", role);
  size_t nested = Pos(ps, "New-VM -Name 'n1'", inside_middle);
  CHECK(nat < role);
  CHECK(role < forwarder);
  CHECK(forwarder < nested);  // the nested VMs find it there when they come up
  CHECK(ps.find("(Get-WindowsFeature -Name DNS).Installed") < role);
  // A lab without dns_proxy gets no DNS Server role.
  CHECK(ExportPowerShell(LoadLab("nested-nat")).find("Install-WindowsFeature -Name DNS") == std::string::npos);
}

TEST_CASE("A generation 1 VM names its adapters by MAC address in the guest before their addresses are set",
          "[engine][export]") {
  auto lab = ParseLab(R"(lab: gen1
networks:
  lan: {subnet: 10.50.0.0/24, gateway: 10.50.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.50.0.11/24}
    switches:
      External: {type: external, nics: [Ethernet]}
      Lab: {type: private}
    vms:
      old:
        generation: 1
        adapters:
          - {name: Front, switch: External, ip: 10.50.0.20/24, gateway: 10.50.0.1}
          - {name: Back, switch: Lab, ip: 172.16.0.2/24}
)");
  std::string ps = ExportPowerShell(lab);
  INFO(ps);
  size_t macs = Pos(ps, "foreach ($adapter in Get-VMNetworkAdapter -VMName 'old') {\n");
  size_t inside = Pos(ps, "Invoke-Command -VMName 'old' -Credential $Credential -ScriptBlock {\n", macs);
  size_t handed = Pos(ps, "$macs = $using:macs", inside);
  size_t rename = Pos(ps, "Rename-NetAdapter -Name $nic.Name -NewName $name", handed);
  size_t front = Pos(ps, "New-NetIPAddress -InterfaceAlias 'Front' -IPAddress '10.50.0.20'", rename);
  size_t back = Pos(ps, "New-NetIPAddress -InterfaceAlias 'Back' -IPAddress '172.16.0.2'", rename);
  CHECK(macs < inside);
  CHECK(rename < front);
  CHECK(rename < back);
  CHECK(ps.find("($_.MacAddress -replace '-', '') -eq $macs[$name]") < rename);
  // Generation 1 has no device naming.
  CHECK(ps.find("-DeviceNaming") == std::string::npos);
  CHECK(ps.find("Get-NetAdapterAdvancedProperty") == std::string::npos);
}

TEST_CASE("Settings that need the VM off are applied only while it is off, so a second run keeps a running VM",
          "[engine][export]") {
  std::string ps = ExportPowerShell(LoadLab("nested-nat"));
  size_t off = Pos(ps, "if ((Get-VM -Name 'middle').State -eq 'Off') {\n");
  size_t expose = Pos(ps, "Set-VMProcessor -VMName 'middle' -ExposeVirtualizationExtensions $true", off);
  size_t memory = Pos(ps, "Set-VMMemory -VMName 'middle' -DynamicMemoryEnabled $false", off);
  size_t close = Pos(ps, "\n    }\n", off);
  CHECK(expose < close);
  CHECK(memory < close);
  CHECK(Pos(ps, "if ((Get-VM -Name 'middle').State -ne 'Running') {\n        Start-VM -Name 'middle'\n") > close);
  // The default adapter is removed only if it is still there.
  CHECK(ps.find("Get-VMNetworkAdapter -VMName 'middle' -Name 'Network Adapter' -ErrorAction SilentlyContinue | "
                "Remove-VMNetworkAdapter") != std::string::npos);
}

TEST_CASE("Every lab's script has balanced brackets and no string running past its line", "[engine][export]") {
  for (const auto& name : LabNames()) {
    INFO(name);
    CHECK(Unbalanced(ExportPowerShell(LoadLab(name))) == "");
  }
  CHECK(Unbalanced("if ($a) { 'x' }\n") == "");
  CHECK(Unbalanced("if ($a) { '}' \n") == "unclosed {");
  CHECK(Unbalanced("'it''s' (\n") == "unclosed (");
  CHECK_FALSE(Unbalanced("'open\n").empty());
}

TEST_CASE("Every lab's script parses as PowerShell, by tree-sitter's PowerShell grammar", "[engine][export]") {
  const std::string modules = LAB_BINARY_DIR "/ps-grammar/node_modules";
  const std::string checker = lab::testing::Src("tests/tools/ps_grammar.mjs");
  if (::access((modules + "/tree-sitter-powershell/tree-sitter-powershell.wasm").c_str(), R_OK) != 0 ||
      std::system("command -v node >/dev/null 2>&1") != 0) {
    WARN("SKIP: the PowerShell grammar check is not installed here (bash scripts/ps-grammar.sh)");
    return;
  }
  std::string dir = lab::testing::TempDir("lab-ps-grammar-");
  auto check = [&](const std::vector<std::string>& files) {
    std::string cmd = "node '" + checker + "' '" + modules + "'";
    for (const auto& f : files) cmd += " '" + f + "'";
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p);
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    int st = ::pclose(p);
    return std::pair{WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
  };
  std::vector<std::string> files;
  for (const auto& name : LabNames()) {
    files.push_back(dir + "/" + name + ".ps1");
    REQUIRE(lab::WriteFileAtomic(files.back(), ExportPowerShell(LoadLab(name))));
  }
  // And a lab on images (parent disks, differencing disks, Copy-VMFile).
  files.push_back(dir + "/images.ps1");
  REQUIRE(lab::WriteFileAtomic(files.back(), ExportPowerShell(ParseLab(kImagesLab))));
  auto [code, out] = check(files);
  INFO(out);
  CHECK(code == 0);
  // The check can fail: a script with a brace left open is reported with its position.
  REQUIRE(lab::WriteFileAtomic(dir + "/broken.ps1", "if ($LabHost -eq 'hv1') {\n    New-VM -Name 'x'\n"));
  auto [broken_code, broken_out] = check({dir + "/broken.ps1"});
  INFO(broken_out);
  CHECK(broken_code == 1);
  CHECK(broken_out.find("broken.ps1:") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("No VM's differencing disk has the file name of a parent disk, even when a VM is named as its image",
          "[engine][export]") {
  const std::regex parent(R"('([^']+\.vhdx)')"), child(R"(New-VHD -Path \(Join-Path \$VhdDirectory '([^']+)'\))");
  for (const auto& name : LabNames()) {
    std::string ps = ExportPowerShell(LoadLab(name));
    std::set<std::string> parents;
    if (auto at = ps.find("$ParentDisks = @{"); at != std::string::npos) {
      std::string line = ps.substr(at, ps.find('\n', at) - at);
      for (std::sregex_iterator it(line.begin(), line.end(), parent), end; it != end; ++it) parents.insert((*it)[1]);
    }
    for (std::sregex_iterator it(ps.begin(), ps.end(), child), end; it != end; ++it) {
      INFO(name << ": New-VHD " << (*it)[1]);
      CHECK(parents.count((*it)[1]) == 0);
    }
  }
}
