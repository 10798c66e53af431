// End to end: Hyper-V switch port settings with real effect.
//
// MAC address spoofing is a bridge filter inside the switch owner: flipping
// Set-VMNetworkAdapter -MacAddressSpoofing on a running lab changes what passes, in place,
// without remaking any VM. Root only; traffic stays inside the lab's own namespaces.
#include "hv/kernel/bridge_filter.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

/// name -> init pid of every machine, from `lab status --json`.
std::map<std::string, int> MachinePids(const Sandbox& sb, const std::string& lab) {
  Run st = sb.Lab("status " + lab + " --json");
  std::map<std::string, int> pids;
  auto j = nlohmann::json::parse(st.out, nullptr, false);
  if (j.is_discarded()) return pids;
  for (const auto& m : j["machines"]) pids[m.value("name", std::string())] = m.value("pid", 0);
  return pids;
}

std::string UidOf(const Sandbox& sb, const std::string& lab) {
  auto j = nlohmann::json::parse(sb.Lab("status " + lab + " --json").out, nullptr, false);
  return j.is_discarded() ? "" : j.value("uid", std::string());
}

/// Chains of the port-settings table inside a machine of the lab.
std::vector<std::string> PortChains(const Sandbox& sb, const std::string& lab, const std::string& machine,
                                    const std::string& family = "bridge") {
  std::string uid = UidOf(sb, lab);
  auto ns = lab::hv::kernel::NetNs::Open(sb.run + "/" + lab + "-" + uid + "/m/" + machine + "/ns/net");
  REQUIRE(ns.ok());
  auto chains = lab::hv::kernel::NftListChains(*ns, family, "lab_" + uid + "_ports");
  REQUIRE(chains.ok());
  return *chains;
}

/// Ports of hv1's switches the kernel filters by source MAC, with the MAC each may send from.
std::vector<std::pair<std::string, std::string>> FilteredPorts(const Sandbox& sb, const std::string& lab,
                                                               const std::string& machine) {
  std::string uid = UidOf(sb, lab);
  auto ns = lab::hv::kernel::NetNs::Open(sb.run + "/" + lab + "-" + uid + "/m/" + machine + "/ns/net");
  REQUIRE(ns.ok());
  auto ports = lab::hv::kernel::ReadPortSourceMacs(*ns, "lab_" + uid + "_ports");
  INFO(ports.message());
  REQUIRE(ports.ok());
  return *ports;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("Flipping MAC address spoofing on a running lab changes what passes the switch, without remaking a VM",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string lab = "nested-mac-spoofing";
  std::string original = lab::ReadFile(Src("labs/" + lab + ".yaml")).value_or("");
  REQUIRE_FALSE(original.empty());
  // The same lab with spoofing on for Ethernet2: n2's check now expects success.
  std::string flipped = Replace(original, "{name: Ethernet2, switch: External, mac_address_spoofing: false}",
                                "{name: Ethernet2, switch: External, mac_address_spoofing: true}");
  flipped = Replace(flipped, "{from: n2, ping: 10.40.0.1, expect: failure}", "{from: n2, ping: 10.40.0.1}");
  std::string off_file = sb.dir + "/" + lab + ".yaml";
  REQUIRE(lab::WriteFileAtomic(off_file, original));

  Run up = sb.Lab("up " + off_file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto before = MachinePids(sb, lab);
  REQUIRE(before.size() == 6);  // the network, hv1, middle, n1, n2, n3
  Run check = sb.Lab("check " + lab);
  INFO(check.out);
  CHECK(check.code == 0);
  // Only Ethernet2 (spoofing off) is filtered in hv1's switch, to its own MAC; Ethernet (on) is not.
  const auto filtered = FilteredPorts(sb, lab, "hv1");
  REQUIRE(filtered.size() == 1);
  CHECK(filtered[0].second.rfind("00:15:5d:", 0) == 0);

  for (int round = 0; round < 2; ++round) {
    bool on = round == 0;
    INFO((on ? "spoofing on" : "spoofing off again"));
    // One lab, one file: the edit is made to the file the lab is up from.
    const std::string& file = off_file;
    REQUIRE(lab::WriteFileAtomic(file, on ? flipped : original));
    Run plan = sb.Lab("plan " + file);
    INFO(plan.out);
    CHECK(plan.out.find("~    adapter 'Ethernet2' of VM 'middle'") != std::string::npos);
    CHECK(plan.out.find(std::string("mac_address_spoofing ") + (on ? "false -> true" : "true -> false")) !=
          std::string::npos);
    CHECK(plan.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);

    Run again = sb.Lab("up " + file);
    INFO(again.out);
    REQUIRE(again.code == 0);
    CHECK(MachinePids(sb, lab) == before);  // no VM remade, nested ones included
    CHECK(FilteredPorts(sb, lab, "hv1") == (on ? decltype(filtered){} : filtered));
    Run rechecked = sb.Lab("check " + lab);
    INFO(rechecked.out);
    CHECK(rechecked.code == 0);  // n2 reaches the stand-in with spoofing on, and fails with it off
    CHECK(sb.Lab("plan " + file).out.find("No changes.") != std::string::npos);
  }

  std::vector<int> pids;
  for (const auto& [name, pid] : before) pids.push_back(pid);
  TakeDownLeavingNothing(sb, lab, pids);
  fs::remove_all(sb.dir);
}

TEST_CASE("A private switch gives its owner no port: the bridge is cut off from the owner", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string lab = "switch-types";
  Run up = sb.Lab("up " + Src("labs/" + lab + ".yaml"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, lab);
  // Hooks on the bridge device itself: nothing passes up to hv1's stack or down from it.
  auto chains = PortChains(sb, lab, "hv1", "netdev");
  std::sort(chains.begin(), chains.end());
  CHECK(chains == std::vector<std::string>{"f_Private_egress", "f_Private_ingress"});
  // hv2 gave its NIC to the switch: no address of the lab network is left on hv2.
  auto j = nlohmann::json::parse(sb.Lab("status " + lab + " --json").out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  for (const auto& m : j["machines"])
    if (m.value("name", std::string()) == "hv2") CHECK(m["addresses"].empty());
  TakeDownLeavingNothing(sb, lab, pids);
  fs::remove_all(sb.dir);
}
