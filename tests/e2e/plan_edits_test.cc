// Edits of a running lab through the real binary do no more than Hyper-V would: an adapter's
// address, a gateway and DNS servers change on the live links (the same veth, never set down),
// a switch rename renames the bridge's Hyper-V names in place, and `lab plan` says so, with
// --detailed-exitcode and --json for scripts. Root only; traffic stays inside the lab.
#include <catch2/catch.hpp>
#include <functional>
#include <set>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;
using lab::hv::kernel::Netlink;
using lab::hv::kernel::NetNs;

namespace {

const char* kLab = "nested-nat";

/// labs/LAB.yaml with every occurrence of each `from` replaced by its `to`, written apart from
/// the lab's own file: the tests apply it with `up --force` (one lab, one file).
std::string Variant(const Sandbox& sb, const std::string& name,
                    const std::vector<std::pair<std::string, std::string>>& edits, const std::string& lab = kLab) {
  auto text = lab::ReadFile(lab::testing::Src("labs/" + lab + ".yaml"));
  REQUIRE(text);
  for (const auto& [from, to] : edits) {
    INFO("replacing " << from);
    size_t at = text->find(from);
    REQUIRE(at != std::string::npos);
    for (; at != std::string::npos; at = text->find(from, at + to.size())) text->replace(at, from.size(), to);
  }
  std::string path = sb.dir + "/" + name + ".yaml";
  REQUIRE(lab::WriteFileAtomic(path, *text));
  return path;
}

/// What one interface of a machine is now: its ifindex, whether it is up, its altnames and its
/// IPv4 addresses; and the machine's default gateway (from the kernel's route table, read in
/// the machine's namespace).
struct Interface {
  int index = 0;
  bool up = false;
  std::vector<std::string> altnames;
  std::set<std::string> addresses;
  std::string default_gateway;  // "" = no default route
};

Interface Look(const Sandbox& sb, const std::string& machine, const std::string& ifname,
               const std::string& lab = kLab) {
  std::string run = MachineRun(sb, lab, machine);
  REQUIRE(!run.empty());
  auto ns = NetNs::Open(run + "/ns/net");
  REQUIRE(ns.ok());
  auto nl = Netlink::In(*ns);
  REQUIRE(nl.ok());
  Interface out;
  auto link = nl->FindLink(ifname);
  REQUIRE(link.ok());
  REQUIRE(link->has_value());
  out.index = (*link)->index;
  out.up = (*link)->up;
  out.altnames = (*link)->altnames;
  auto addrs = nl->Addresses();
  REQUIRE(addrs.ok());
  for (const auto& a : *addrs)
    if (a.index == out.index) out.addresses.insert(a.address.ToString());
  // /proc/thread-self/net/route lists the routes of the reading thread's namespace.
  std::string routes;
  REQUIRE(lab::hv::kernel::WithNetNs(*ns, [&] {
            routes = lab::ReadFile("/proc/thread-self/net/route").value_or("");
            return lab::Status::Ok();
          }).ok());
  for (const auto& line : lab::Split(routes, '\n')) {
    auto f = lab::Split(line, '\t');
    if (f.size() < 3 || f[1] != "00000000") continue;  // destination 0.0.0.0: the default route
    uint32_t le = static_cast<uint32_t>(std::stoul(f[2], nullptr, 16));
    out.default_gateway = std::to_string(le & 0xff) + "." + std::to_string((le >> 8) & 0xff) + "." +
                          std::to_string((le >> 16) & 0xff) + "." + std::to_string(le >> 24);
  }
  return out;
}

bool Has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

TEST_CASE("An address, gateway and DNS edit is applied in place: the same links, the new address and route",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up --force " + file).code == 0);
  auto pids = InitPids(sb, kLab);
  NoteMarks(sb);
  CHECK(sb.Lab("plan --detailed-exitcode " + file).code == 0);  // no changes
  Interface nested1 = Look(sb, "nested1", "Ethernet");
  Interface nested2 = Look(sb, "nested2", "Ethernet");
  Interface vnat = Look(sb, "middle", "VmNAT");
  CHECK(nested1.addresses == std::set<std::string>{"192.168.100.2/24"});
  CHECK(nested1.default_gateway == "192.168.100.1");

  // vEthernet (VmNAT) moves to .254 and the nested VMs' gateway with it; nested1 moves to .4 and
  // gets a second DNS server. Its checks follow its new address.
  auto edited = Variant(sb, "edited",
                        {{"ip: 192.168.100.1/24 ", "ip: 192.168.100.254/24 "},
                         {"gateway: 192.168.100.1,", "gateway: 192.168.100.254,"},
                         {"{switch: VmNAT, ip: 192.168.100.2/24", "{switch: VmNAT, ip: 192.168.100.4/24"},
                         {"ping: 192.168.100.2", "ping: 192.168.100.4"},
                         {"- {switch: VmNAT, ip: 192.168.100.4/24, gateway: 192.168.100.254,\n                 dns: [10.10.0.1]}",
                          "- {switch: VmNAT, ip: 192.168.100.4/24, gateway: 192.168.100.254,\n                 dns: [10.10.0.1, 10.10.0.2]}"}});
  Run plan = sb.Lab("plan --detailed-exitcode " + edited);
  INFO(plan.out);
  CHECK(plan.code == 2);  // changes
  CHECK(plan.out.find("  ~    adapter 'Ethernet' of VM 'nested1' on switch 'VmNAT'\n"
                      "        ip 192.168.100.2/24 -> 192.168.100.4/24, gateway 192.168.100.1 -> 192.168.100.254: in place") !=
        std::string::npos);
  CHECK(plan.out.find("dns 10.10.0.1 -> 10.10.0.1, 10.10.0.2") != std::string::npos);
  CHECK(plan.out.find("-/+") == std::string::npos);
  CHECK(plan.out.find("Plan: 0 to add, 5 to change, 0 to destroy.") != std::string::npos);
  Run json = sb.Lab("plan --json " + edited);
  auto j = nlohmann::json::parse(json.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  bool found = false;
  for (const auto& a : j["actions"])
    if (a["key"] == "adapter/nested1/Ethernet") {
      CHECK(a["action"] == "update");
      CHECK(a["changes"][0] == nlohmann::json{{"key", "ip"}, {"from", "192.168.100.2/24"}, {"to", "192.168.100.4/24"}});
      found = true;
    }
  CHECK(found);
  CHECK(j["change"] == 5);

  Run up = sb.Lab("up --force " + edited);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("  removed ") == std::string::npos);
  CHECK(up.out.find("  made ") == std::string::npos);
  CHECK(InitPids(sb, kLab) == pids);  // no VM restarted

  Interface after1 = Look(sb, "nested1", "Ethernet");
  CHECK(after1.index == nested1.index);  // the same veth, never remade
  CHECK(after1.up);
  CHECK(after1.addresses == std::set<std::string>{"192.168.100.4/24"});
  CHECK(after1.default_gateway == "192.168.100.254");
  Interface after2 = Look(sb, "nested2", "Ethernet");
  CHECK(after2.index == nested2.index);
  CHECK(after2.addresses == std::set<std::string>{"192.168.100.3/24"});
  CHECK(after2.default_gateway == "192.168.100.254");
  Interface vnat_after = Look(sb, "middle", "VmNAT");
  CHECK(vnat_after.index == vnat.index);
  CHECK(vnat_after.addresses == std::set<std::string>{"192.168.100.254/24"});
  Run resolv = sb.Lab("exec " + std::string(kLab) + " nested1 -- cat /etc/resolv.conf");
  INFO(resolv.out);
  CHECK(resolv.out.find("nameserver 10.10.0.1\nnameserver 10.10.0.2\n") != std::string::npos);

  Run check = sb.Lab("check " + edited);
  INFO(check.out);
  CHECK(check.code == 0);
  Run status = sb.Lab("status " + std::string(kLab));
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(sb.Lab("plan --detailed-exitcode " + edited).code == 0);

  // Back again, in place too: the address goes, the gateway returns to .1.
  REQUIRE(sb.Lab("up --force " + file).code == 0);
  Interface back = Look(sb, "nested1", "Ethernet");
  CHECK(back.index == nested1.index);
  CHECK(back.addresses == std::set<std::string>{"192.168.100.2/24"});
  CHECK(back.default_gateway == "192.168.100.1");
  CHECK(sb.Lab("check " + file).code == 0);

  // The prefix of the whole internal network (switch, NAT, adapters): in place as well.
  auto wider = Variant(sb, "wider",
                       {{"192.168.100.1/24 ", "192.168.100.1/23 "},
                        {"192.168.100.2/24,", "192.168.100.2/23,"},
                        {"192.168.100.3/24,", "192.168.100.3/23,"},
                        {"prefix: 192.168.100.0/24", "prefix: 192.168.100.0/23"}});
  Run widen = sb.Lab("up --force " + wider);
  INFO(widen.out);
  REQUIRE(widen.code == 0);
  CHECK(widen.out.find("Plan: 0 to add, 4 to change, 0 to destroy.") != std::string::npos);
  Interface wide = Look(sb, "nested1", "Ethernet");
  CHECK(wide.index == nested1.index);
  CHECK(wide.addresses == std::set<std::string>{"192.168.100.2/23"});
  CHECK(wide.default_gateway == "192.168.100.1");
  CHECK(Look(sb, "middle", "VmNAT").addresses == std::set<std::string>{"192.168.100.1/23"});
  CHECK(sb.Lab("check " + wider).code == 0);

  REQUIRE(sb.Lab("down " + std::string(kLab)).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("A switch rename renames the switch in place; a restart plans as one line per VM", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up --force " + file).code == 0);
  auto pids = InitPids(sb, kLab);
  NoteMarks(sb);
  Interface bridge = Look(sb, "middle", "VmNAT");
  CHECK(Has(bridge.altnames, "vEthernet(VmNAT)"));

  auto renamed = Variant(sb, "renamed", {{"switch: VmNAT", "switch: NatSwitch"}, {"          VmNAT:\n", "          NatSwitch:\n"}});
  Run plan = sb.Lab("plan " + renamed);
  INFO(plan.out);
  CHECK(plan.out.find("  ~    internal switch 'NatSwitch' on 'middle'\n        name VmNAT -> NatSwitch: in place") !=
        std::string::npos);
  CHECK(plan.out.find("to destroy.") != std::string::npos);
  CHECK(plan.out.find(", 0 to destroy.") != std::string::npos);
  Run up = sb.Lab("up --force " + renamed);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(InitPids(sb, kLab) == pids);
  Interface after = Look(sb, "middle", "VmNAT");  // the kernel name of an up bridge stays
  CHECK(after.index == bridge.index);
  CHECK(Has(after.altnames, "vEthernet(NatSwitch)"));
  CHECK_FALSE(Has(after.altnames, "vEthernet(VmNAT)"));
  CHECK(after.addresses == std::set<std::string>{"192.168.100.1/24"});
  CHECK(sb.Lab("plan --detailed-exitcode " + renamed).code == 0);
  Run status = sb.Lab("status " + std::string(kLab));
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(sb.Lab("check " + renamed).code == 0);

  // middle runs a hypervisor: its memory change restarts it, shown as one line.
  auto bigger = Variant(sb, "bigger", {{"switch: VmNAT", "switch: NatSwitch"},
                                       {"          VmNAT:\n", "          NatSwitch:\n"},
                                       {"startup: 2GiB", "startup: 3GiB"}});
  Run restart = sb.Lab("plan --detailed-exitcode " + bigger);
  INFO(restart.out);
  CHECK(restart.code == 2);
  CHECK(restart.out.find("  -/+  restart VM 'middle' (on hv1) (and 2 VMs inside): stop, memory.startup 2GiB -> 3GiB, "
                         "start\n") != std::string::npos);
  CHECK(restart.out.find("Plan: 0 to add, 0 to change, 1 to restart, 0 to destroy.") != std::string::npos);
  auto j = nlohmann::json::parse(sb.Lab("plan --json " + bigger).out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  CHECK(j["restart"] == 1);
  CHECK(j["destroy"] == 0);
  for (const auto& a : j["actions"])
    if (a["key"] == "partition/middle") CHECK(a["action"] == "restart");
  Run restarted = sb.Lab("up --force " + bigger);
  INFO(restarted.out);
  REQUIRE(restarted.code == 0);
  CHECK(restarted.out.find("  stopped VM 'middle' (on hv1)") != std::string::npos);  // Stop-VM: its disk is kept
  CHECK(restarted.out.find("  started VM 'nested1' (on middle)") != std::string::npos);
  CHECK(restarted.out.find("  removed VM") == std::string::npos);
  CHECK(sb.Lab("check " + bigger).code == 0);
  auto now = InitPids(sb, kLab);  // middle and its VMs run as new processes
  pids.insert(pids.end(), now.begin(), now.end());

  REQUIRE(sb.Lab("down " + std::string(kLab)).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("A host NIC's address changes in place: the same link, reachable at its new address", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string lab = "switch-types";
  REQUIRE(sb.Lab("up --force " + lab::testing::Src("labs/switch-types.yaml")).code == 0);
  auto pids = InitPids(sb, lab);
  NoteMarks(sb);
  Interface nic = Look(sb, "hv1", "Ethernet", lab);
  CHECK(nic.addresses == std::set<std::string>{"10.50.0.11/24"});

  auto moved = Variant(sb, "moved",
                       {{"ip: 10.50.0.11/24", "ip: 10.50.0.111/24"},
                        {"checks:\n", "checks:\n  - {from: vm-ext, ping: 10.50.0.111}\n"}},
                       lab);
  Run plan = sb.Lab("plan " + moved);
  INFO(plan.out);
  CHECK(plan.out.find("  ~    NIC 'Ethernet' of host 'hv1' on network 'lan'\n"
                      "        ip 10.50.0.11/24 -> 10.50.0.111/24: in place, the link stays up") != std::string::npos);
  CHECK(plan.out.find("-/+") == std::string::npos);
  Run up = sb.Lab("up --force " + moved);
  INFO(up.out);
  REQUIRE(up.code == 0);
  Interface after = Look(sb, "hv1", "Ethernet", lab);
  CHECK(after.index == nic.index);
  CHECK(after.up);
  CHECK(after.addresses == std::set<std::string>{"10.50.0.111/24"});
  CHECK(after.default_gateway == "10.50.0.1");
  CHECK(InitPids(sb, lab) == pids);
  Run check = sb.Lab("check " + moved);
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(sb.Lab("plan --detailed-exitcode " + moved).code == 0);

  REQUIRE(sb.Lab("down " + lab).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("lab plan --detailed-exitcode exits 1 on an invalid file and on a usage error", "[e2e]") {
  Sandbox sb;
  std::string bad = sb.dir + "/bad.yaml";
  REQUIRE(lab::WriteFileAtomic(bad, "lab: bad\nhosts: {hv1: {nics: 3}}\n"));
  CHECK(sb.Lab("plan --detailed-exitcode " + bad).code == 1);
  CHECK(sb.Lab("plan --detailed-exitcode --no-such-flag " + bad).code == 1);
  CHECK(sb.Lab("plan --no-such-flag " + bad).code == 2);  // without it, usage errors stay 2
}
