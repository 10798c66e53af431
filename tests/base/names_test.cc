// Kernel-facing names derived from Hyper-V names (base/text.h): interface names, altnames and
// directory/cgroup names, each the name itself when the kernel takes it.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "base/text.h"

using lab::KernelAltname;
using lab::KernelIfname;
using lab::KernelPathName;

namespace {

bool KernelTakesIfname(const std::string& s) {
  if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
  for (char c : s)
    if (c == '/' || c == ':' || c == ' ' || (c >= '\t' && c <= '\r')) return false;
  return true;
}

}  // namespace

TEST_CASE("Interface names the kernel takes stay as they are", "[base][names]") {
  CHECK(KernelIfname("Ethernet") == "Ethernet");
  CHECK(KernelIfname("eth0.100") == "eth0.100");
  CHECK(KernelIfname("NIC-") == "NIC-");
}

TEST_CASE("Hyper-V interface names map to kernel names predictably", "[base][names]") {
  CHECK(KernelIfname("Ethernet 2") == "Ethernet-2");
  CHECK(KernelIfname("Network Adapter") == "Network-Adapter");
  std::string a = KernelIfname("Network Adapter 2");
  std::string b = KernelIfname("Network Adapter 3");
  CHECK(a.rfind("Network-Ad-", 0) == 0);
  CHECK(a.size() == 15);
  CHECK(a != b);
  CHECK(a == KernelIfname("Network Adapter 2"));  // the same every time
  for (const std::string& name : std::vector<std::string>{"Ethernet 2", "a b c d e f g h i j", "...", "  x  ", "vEthernet (Default Switch)",
                                 std::string(100, 'n')}) {
    INFO(name);
    CHECK(KernelTakesIfname(KernelIfname(name)));
  }
}

TEST_CASE("Altnames keep a Hyper-V name whole but for whitespace, up to 127 bytes", "[base][names]") {
  CHECK(KernelAltname("vEthernet(Default Switch)") == "vEthernet(Default-Switch)");
  CHECK(KernelAltname("lab.abc.nic.HV01.Ethernet") == "lab.abc.nic.HV01.Ethernet");
  std::string longer = "lab.0123456789abcdef.port." + std::string(100, 'v') + "." + std::string(100, 'a');
  CHECK(KernelAltname(longer).size() == 127);
  CHECK(KernelAltname(longer) != KernelAltname(longer + "b"));
  CHECK(KernelAltname("a\tb c").find_first_of(" \t") == std::string::npos);
}

TEST_CASE("Directory and cgroup names are safe for any Hyper-V name", "[base][names]") {
  CHECK(KernelPathName("nested1") == "nested1");
  CHECK(KernelPathName("DC01") == "DC01");
  std::string d = KernelPathName("135. Nested Virtualization 2022");
  CHECK(d.rfind("135-Nested-Virtualization-2022-", 0) == 0);
  CHECK(d.find(' ') == std::string::npos);
  for (const std::string& name : std::vector<std::string>{".", "..", "cgroup.procs", ".hidden", "a b", std::string(100, 'x')}) {
    INFO(name);
    std::string p = KernelPathName(name);
    CHECK(p != "." );
    CHECK(p != "..");
    CHECK(p.rfind("cgroup.", 0) != 0);
    CHECK(p.front() != '.');
    CHECK(p.size() <= 64);
    CHECK(p.find_first_of(" /") == std::string::npos);
  }
}

TEST_CASE("A lower layer's message about a kernel name is told with the name as written", "[base][names]") {
  CHECK(lab::ReplaceQuoted("link of 'Ethernet-2' on 'HV01': set 'Ethernet-2' up: no such interface", "Ethernet-2",
                           "Ethernet 2") == "link of 'Ethernet 2' on 'HV01': set 'Ethernet 2' up: no such interface");
  // Only the quoted name: a longer name that starts with it, or the bare word, stay as they are.
  CHECK(lab::ReplaceQuoted("'Ethernet-20' and Ethernet-2", "Ethernet-2", "Ethernet 2") == "'Ethernet-20' and Ethernet-2");
  CHECK(lab::ReplaceQuoted("", "a", "b").empty());
}
