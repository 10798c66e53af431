// Bridge filters with real frames, in throwaway network namespaces only. SET teams: the
// HyperVPort affinity (hv/team.h, pure), and the team in the kernel (hv/kernel/team.h): a
// "switch" namespace with a bridge teaming two veths whose peers are ports of a "wire" bridge,
// two VMs on the switch and an "outside" machine on the wire. MAC address spoofing off: ports'
// source MAC filters (hv/kernel/bridge_filter.h) on a switch with three VMs.
#include "hv/kernel/team.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "hv/kernel/bridge_filter.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

NetNs ScratchNs() {
  Result<NetNs> ns = Status::Error("not created");
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      ns = ErrnoStatus("unshare(CLONE_NEWNET)");
      return;
    }
    ns = NetNs::Current();
  }).join();
  REQUIRE(ns.ok());
  // No IPv6 chatter (router solicitations, MLD): the counters below count only our frames.
  REQUIRE(WriteNetSysctl(*ns, "ipv6/conf/all/disable_ipv6", "1").ok());
  REQUIRE(WriteNetSysctl(*ns, "ipv6/conf/default/disable_ipv6", "1").ok());
  return std::move(ns).value();
}

constexpr const char* kTable = "lab_0123456789ab_ports";
constexpr uint16_t kProto = 0x88b5;  // the local experimental ethertype

/// A packet socket for kProto bound to `ifname` in `ns`.
int PacketSocket(const NetNs& ns, const std::string& ifname, sockaddr_ll& where) {
  int fd = -1;
  REQUIRE(WithNetNs(ns, [&] {
            fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(kProto));
            if (fd < 0) return ErrnoStatus("packet socket");
            where = sockaddr_ll{};
            where.sll_family = AF_PACKET;
            where.sll_protocol = htons(kProto);
            where.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
            if (where.sll_ifindex == 0) return ErrnoStatus("no interface " + ifname);
            if (::bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) return ErrnoStatus("bind");
            return Status::Ok();
          }).ok());
  return fd;
}

struct Machine {
  const NetNs* ns;
  std::string ifname;
};

/// Sends `count` Ethernet broadcasts from `from` and counts the copies at each of `at` and back
/// at the sender (a loop or a reflection).
/// `src_mac`: the frames' source MAC; "" = the sender's own.
std::vector<int> Broadcast(const Machine& from, const std::vector<Machine>& at, int count, int& echoed,
                           std::string src_mac = "") {
  static int round = 0;
  std::string marker = "team-test " + std::to_string(::getpid()) + "." + std::to_string(++round) + " ";
  sockaddr_ll to{};
  int tx = PacketSocket(*from.ns, from.ifname, to);
  std::vector<int> rx;
  for (const auto& m : at) {
    sockaddr_ll where{};
    rx.push_back(PacketSocket(*m.ns, m.ifname, where));
  }
  auto nl = Netlink::In(*from.ns);
  REQUIRE(nl.ok());
  auto link = nl->FindLink(from.ifname);
  REQUIRE((link.ok() && *link));
  if (src_mac.empty()) src_mac = (*link)->mac;
  REQUIRE(lab::testing::SendMarkedBroadcasts(tx, to, src_mac, kProto, marker, count) == count);
  std::vector<int> copies;
  for (int fd : rx) {
    copies.push_back(lab::testing::CountMarkedFrames(fd, marker));
    ::close(fd);
  }
  echoed = lab::testing::CountMarkedFrames(tx, marker);
  ::close(tx);
  return copies;
}

std::map<std::string, uint64_t> TxPackets(Netlink& nl) {
  auto links = nl.Links();
  REQUIRE(links.ok());
  std::map<std::string, uint64_t> tx;
  for (const auto& l : *links) tx[l.name] = l.tx_packets;
  return tx;
}

}  // namespace

TEST_CASE("HyperVPort affinity deals the ports sorted by label over the members up, and rebalances", "[hv]") {
  const std::vector<std::string> members = {"NIC1", "NIC2", "NIC3"};
  // The order ports are given in does not matter: the label decides.
  const std::vector<TeamPort> ports = {{"web/Ethernet", "p3"}, {kOwnerPortLabel, ""}, {"db/Ethernet", "p1"},
                                       {"app/Ethernet", "p2"}};
  auto all = AssignTeam(members, {true, true, true}, ports);
  CHECK(DescribeTeam(all) == "NIC1 up (app/Ethernet, web/Ethernet), NIC2 up (db/Ethernet), NIC3 up (vEthernet)");
  CHECK(all[0].primary);
  CHECK_FALSE(all[1].primary);

  // NIC1 down: its ports go to the survivors; the first member up is the primary.
  auto one_down = AssignTeam(members, {false, true, true}, ports);
  CHECK(DescribeTeam(one_down) == "NIC1 down, NIC2 up (app/Ethernet, vEthernet), NIC3 up (db/Ethernet, web/Ethernet)");
  CHECK(one_down[1].primary);
  CHECK_FALSE(one_down[0].primary);

  // Back: the same bindings as before the failure.
  CHECK(DescribeTeam(AssignTeam(members, {true, true, true}, ports)) == DescribeTeam(all));

  // One member up carries everything; none up binds nothing and has no primary.
  CHECK(DescribeTeam(AssignTeam(members, {false, false, true}, ports)) ==
        "NIC1 down, NIC2 down, NIC3 up (app/Ethernet, db/Ethernet, vEthernet, web/Ethernet)");
  auto none = AssignTeam(members, {false, false, false}, ports);
  CHECK(DescribeTeam(none) == "NIC1 down, NIC2 down, NIC3 down");
  for (const auto& m : none) CHECK_FALSE(m.primary);
  // A member with no port says so.
  CHECK(DescribeTeam(AssignTeam({"NIC1", "NIC2"}, {true, true}, {{"vm/Ethernet", "p"}})) ==
        "NIC1 up (vm/Ethernet), NIC2 up (no ports)");
}

TEST_CASE("A SET team forwards through every member, each port through its own, without loops, duplicates or "
          "reflections, and rebinds ports when a member fails and returns",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("network namespaces");
  NetNs sw = ScratchNs(), wire = ScratchNs(), out = ScratchNs(), vm_a = ScratchNs(), vm_b = ScratchNs();
  auto nl = Netlink::In(sw);
  REQUIRE(nl.ok());
  auto wl = Netlink::In(wire);
  REQUIRE(wl.ok());
  const std::vector<std::string> members = {"NIC1", "NIC2"};
  const std::vector<TeamPort> ports = {{"a/eth", "pA"}, {"b/eth", "pB"}};

  REQUIRE(wl->CreateBridge("W").ok());
  REQUIRE(wl->CreateVeth("wOut", nullptr, "eth", &out).ok());
  REQUIRE(nl->CreateBridge("SET").ok());
  for (const auto& m : members) REQUIRE(nl->CreateVeth(m, nullptr, "w" + m, &wire).ok());
  REQUIRE(nl->CreateVeth("pA", nullptr, "eth", &vm_a).ok());
  REQUIRE(nl->CreateVeth("pB", nullptr, "eth", &vm_b).ok());
  // The rules before any member joins: never a loop, not even for an instant.
  auto team = ReconcileTeam(sw, kTable, "test team", "SET", members, ports);
  REQUIRE(team.ok());
  for (const char* p : {"wNIC1", "wNIC2", "wOut"}) {
    REQUIRE(wl->SetMaster(p, "W").ok());
    REQUIRE(wl->SetUp(p).ok());
  }
  REQUIRE(wl->SetUp("W").ok());
  for (const char* p : {"NIC1", "NIC2", "pA", "pB"}) {
    REQUIRE(nl->SetMaster(p, "SET").ok());
    REQUIRE(nl->SetUp(p).ok());
  }
  for (const auto& m : members) REQUIRE(nl->SetPortLearning(m, false).ok());
  REQUIRE(nl->SetUp("SET").ok());
  for (const NetNs* ns : {&out, &vm_a, &vm_b}) {
    auto l = Netlink::In(*ns);
    REQUIRE(l.ok());
    REQUIRE(l->SetUp("eth").ok());
  }
  team = ReconcileTeam(sw, kTable, "test team", "SET", members, ports);
  REQUIRE(team.ok());
  CHECK(DescribeTeam(*team) == "NIC1 up (a/eth), NIC2 up (b/eth)");
  auto seen = ObserveTeam(sw, kTable, "SET", members, ports);
  REQUIRE(seen.ok());
  CHECK(DescribeTeam(*seen) == DescribeTeam(*team));

  const Machine a{&vm_a, "eth"}, b{&vm_b, "eth"}, o{&out, "eth"};
  int echoed = -1;
  // b) a's frames leave through NIC1 only, b's through NIC2 only: the outside gets each once.
  // d) the wire floods each back to the other member; it never reaches its sender again.
  // The bound member counts our frames (and the odd frame of the switch owner itself, which
  // leaves through the primary); the other member none of them (under 5: not the 20 sent).
  auto before = TxPackets(*nl);
  CHECK(Broadcast(a, {o, b}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(echoed == 0);
  auto after = TxPackets(*nl);
  CHECK(after["NIC1"] - before["NIC1"] >= 20);
  CHECK(after["NIC2"] - before["NIC2"] < 5);
  before = after;
  CHECK(Broadcast(b, {o, a}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(echoed == 0);  // reflected onto NIC1, the primary: only d) stops it
  after = TxPackets(*nl);
  CHECK(after["NIC1"] - before["NIC1"] < 5);
  CHECK(after["NIC2"] - before["NIC2"] >= 20);
  // a) c) the wire floods the outside's broadcasts to both members: each VM gets one copy and
  // nothing goes back out to the wire.
  CHECK(Broadcast(o, {a, b}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(echoed == 0);

  // NIC1's cable pulled on the far side: no carrier; its port moves to NIC2, frames still flow.
  REQUIRE(wl->SetUp("wNIC1", false).ok());
  team = ReconcileTeam(sw, kTable, "test team", "SET", members, ports);
  REQUIRE(team.ok());
  CHECK(DescribeTeam(*team) == "NIC1 down, NIC2 up (a/eth, b/eth)");
  before = TxPackets(*nl);
  CHECK(Broadcast(a, {o, b}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(echoed == 0);
  after = TxPackets(*nl);
  CHECK(after["NIC2"] - before["NIC2"] >= 20);
  CHECK(Broadcast(o, {a, b}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(echoed == 0);

  // Back: rebalanced as before; reconciling again changes nothing.
  REQUIRE(wl->SetUp("wNIC1").ok());
  for (int i = 0; i < 2; ++i) {
    team = ReconcileTeam(sw, kTable, "test team", "SET", members, ports);
    REQUIRE(team.ok());
    CHECK(DescribeTeam(*team) == "NIC1 up (a/eth), NIC2 up (b/eth)");
  }
  before = TxPackets(*nl);
  CHECK(Broadcast(a, {o, b}, 20, echoed) == std::vector<int>{20, 20});
  CHECK(Broadcast(b, {o, a}, 20, echoed) == std::vector<int>{20, 20});
  after = TxPackets(*nl);
  CHECK(after["NIC1"] - before["NIC1"] >= 20);
  CHECK(after["NIC2"] - before["NIC2"] >= 20);

  // Every member down: nothing leaves; the switch still connects its own ports.
  for (const auto& m : members) REQUIRE(nl->SetUp(m, false).ok());
  team = ReconcileTeam(sw, kTable, "test team", "SET", members, ports);
  REQUIRE(team.ok());
  CHECK(DescribeTeam(*team) == "NIC1 down, NIC2 down");
  CHECK(Broadcast(a, {o, b}, 5, echoed) == std::vector<int>{0, 5});

  // The switch going away: no filter, no set and no table left.
  REQUIRE(RemoveBridgeFilter(sw, kTable, "SET").ok());
  auto tables = NftListTables(sw);
  REQUIRE(tables.ok());
  CHECK(tables->empty());
}


TEST_CASE("MAC spoofing off drops a port's frames from any other source MAC, towards other ports and the owner; "
          "on again lets them pass",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("network namespaces");
  NetNs sw = ScratchNs(), vm_a = ScratchNs(), vm_b = ScratchNs(), vm_c = ScratchNs();
  auto nl = Netlink::In(sw);
  REQUIRE(nl.ok());
  REQUIRE(nl->CreateBridge("SW").ok());
  std::map<std::string, std::string> mac;  // port -> its VM's MAC
  const std::vector<std::pair<std::string, const NetNs*>> vms = {{"pA", &vm_a}, {"pB", &vm_b}, {"pC", &vm_c}};
  for (const auto& [port, ns] : vms) {
    REQUIRE(nl->CreateVeth(port, nullptr, "eth", ns).ok());
    auto l = Netlink::In(*ns);
    REQUIRE(l.ok());
    REQUIRE(l->SetUp("eth").ok());
    auto link = l->FindLink("eth");
    REQUIRE((link.ok() && *link));
    mac[port] = (*link)->mac;
  }
  // A table of another kind already there (a private switch's): the port filters join it.
  REQUIRE(nl->CreateBridge("Other").ok());
  REQUIRE(IsolateBridgeFromOwner(sw, kTable, "test switch", "Other").ok());
  // Spoofing off for pA and pB before they join, as ConnectAdapter does; twice changes nothing.
  for (int i = 0; i < 2; ++i)
    for (const char* p : {"pA", "pB"}) REQUIRE(FilterPortSourceMac(sw, kTable, "test switch", p, mac[p]).ok());
  auto filtered = ReadPortSourceMacs(sw, kTable);
  REQUIRE(filtered.ok());
  CHECK(*filtered == std::vector<std::pair<std::string, std::string>>{{"pA", mac["pA"]}, {"pB", mac["pB"]}});
  for (const auto& [port, ns] : vms) {
    REQUIRE(nl->SetMaster(port, "SW").ok());
    REQUIRE(nl->SetUp(port).ok());
  }
  REQUIRE(nl->SetUp("SW").ok());

  const Machine a{&vm_a, "eth"}, b{&vm_b, "eth"}, c{&vm_c, "eth"}, owner{&sw, "SW"};
  const std::string spoofed = "02:00:00:00:00:99";
  int echoed = -1;
  // Own MAC: everyone gets every frame, the owner's own stack too.
  CHECK(Broadcast(a, {b, c, owner}, 10, echoed) == std::vector<int>{10, 10, 10});
  // Another MAC through a filtered port: dropped, forwarded and delivered alike.
  CHECK(Broadcast(a, {b, c, owner}, 10, echoed, spoofed) == std::vector<int>{0, 0, 0});
  CHECK(Broadcast(b, {a, c, owner}, 10, echoed, spoofed) == std::vector<int>{0, 0, 0});
  // pC has spoofing on: any source MAC passes.
  CHECK(Broadcast(c, {a, b, owner}, 10, echoed, spoofed) == std::vector<int>{10, 10, 10});
  // One port's MAC is not another's: pB may not send as pA.
  CHECK(Broadcast(b, {a, c}, 10, echoed, mac["pA"]) == std::vector<int>{0, 0});

  // Spoofing on for pA: its frames pass whatever their source; pB is still filtered. Twice is fine.
  for (int i = 0; i < 2; ++i) REQUIRE(UnfilterPortSourceMac(sw, kTable, "pA", mac["pA"]).ok());
  filtered = ReadPortSourceMacs(sw, kTable);
  REQUIRE(filtered.ok());
  CHECK(*filtered == std::vector<std::pair<std::string, std::string>>{{"pB", mac["pB"]}});
  CHECK(Broadcast(a, {b, c, owner}, 10, echoed, spoofed) == std::vector<int>{10, 10, 10});
  CHECK(Broadcast(b, {a, c, owner}, 10, echoed, spoofed) == std::vector<int>{0, 0, 0});

  // A namespace with no table: nothing to remove, nothing made.
  REQUIRE(UnfilterPortSourceMac(vm_a, kTable, "pA", mac["pA"]).ok());
  auto tables = NftListTables(vm_a);
  REQUIRE(tables.ok());
  CHECK(tables->empty());
  // Names and MACs that could smuggle nft text in are refused.
  CHECK_FALSE(FilterPortSourceMac(sw, kTable, "test switch", "p\"; flush ruleset", mac["pA"]).ok());
  CHECK_FALSE(FilterPortSourceMac(sw, kTable, "test switch", "pA", "00:15:5d:00:00:01 }; flush ruleset").ok());
}

}  // namespace lab::hv::kernel
