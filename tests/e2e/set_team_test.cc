// End to end: SET (Switch Embedded Teaming) and lab DNS on labs/set-team.yaml.
//
// hv1's SETswitch teams NIC1 and NIC2, both cabled to the lab network, both active: each port
// of the switch (vm1's, middle's, hv1's own vEthernet) is bound to one member (HyperVPort), and
// the packet counters of NIC1 and NIC2 show both carrying traffic. Every echo request gets
// exactly one reply, and every broadcast reaches each machine once and never comes back to its
// sender, although the network floods broadcasts to both members (with both members forwarding
// and no team rules, measured once: 20 broadcasts became 206 copies at vm1 and 207 back at the
// sender within 300 ms, a loop). `lab link` downs a member: its ports move to the other one and
// traffic keeps flowing; up again, the ports are dealt over both again. Root only; traffic stays
// inside the lab's own namespaces.
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <tuple>

#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

const std::string kLab = "set-team";

std::string UidOf(const Sandbox& sb, const std::string& lab) {
  auto j = nlohmann::json::parse(sb.Lab("status " + lab + " --json").out, nullptr, false);
  return j.is_discarded() ? "" : j.value("uid", std::string());
}

lab::hv::kernel::NetNs MachineNs(const Sandbox& sb, const std::string& machine) {
  auto ns = lab::hv::kernel::NetNs::Open(sb.run + "/" + kLab + "-" + UidOf(sb, kLab) + "/m/" + machine + "/ns/net");
  REQUIRE(ns.ok());
  return std::move(*ns);
}

struct Counters {
  uint64_t tx = 0, rx = 0;
};

/// The packet counters of hv1's team members, read by netlink inside hv1.
std::map<std::string, Counters> MemberCounters(const Sandbox& sb) {
  auto nl = lab::hv::kernel::Netlink::In(MachineNs(sb, "hv1"));
  REQUIRE(nl.ok());
  auto links = nl->Links();
  REQUIRE(links.ok());
  std::map<std::string, Counters> out;
  for (const auto& l : *links)
    if (l.name == "NIC1" || l.name == "NIC2") out[l.name] = Counters{l.tx_packets, l.rx_packets};
  return out;
}

uint16_t Checksum(const unsigned char* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

struct Echoes {
  int sent = 0;
  int answered = 0;    // requests with at least one reply
  int duplicates = 0;  // replies beyond the first for one request (ping's "DUP!")
};

/// Pings `target` from inside `machine` `count` times, 20 ms apart, and counts the replies of
/// each request (waiting 500 ms after the last one for stragglers and duplicates).
Echoes Ping(const Sandbox& sb, const std::string& machine, const std::string& target, int count) {
  auto ns = MachineNs(sb, machine);
  int fd = -1;
  // The socket belongs to the namespace it was made in, whichever thread uses it later.
  REQUIRE(lab::hv::kernel::WithNetNs(ns, [&] {
            fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
            return fd >= 0 ? lab::Status::Ok() : lab::ErrnoStatus("raw socket");
          }).ok());
  sockaddr_in to{};
  to.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, target.c_str(), &to.sin_addr) == 1);
  const uint16_t id = static_cast<uint16_t>(::getpid() * 7 + count);
  std::map<int, int> replies;
  Echoes e;
  auto receive = [&](int wait_ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (true) {
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count());
      if (left <= 0) return;
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, left) <= 0) continue;
      unsigned char buf[1500];
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      ssize_t got = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (got < static_cast<ssize_t>(sizeof(iphdr))) continue;
      size_t ihl = static_cast<size_t>(reinterpret_cast<const iphdr*>(buf)->ihl) * 4;
      if (got < static_cast<ssize_t>(ihl + sizeof(icmphdr))) continue;
      const auto* reply = reinterpret_cast<const icmphdr*>(buf + ihl);
      if (reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == id && from.sin_addr.s_addr == to.sin_addr.s_addr)
        ++replies[ntohs(reply->un.echo.sequence)];
    }
  };
  for (int seq = 1; seq <= count; ++seq) {
    unsigned char pkt[64] = {};
    auto* h = reinterpret_cast<icmphdr*>(pkt);
    h->type = ICMP_ECHO;
    h->un.echo.id = htons(id);
    h->un.echo.sequence = htons(static_cast<uint16_t>(seq));
    h->checksum = Checksum(pkt, sizeof pkt);
    if (::sendto(fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == sizeof pkt) ++e.sent;
    receive(20);
  }
  receive(500);
  ::close(fd);
  for (const auto& [seq, n] : replies) {
    if (seq < 1 || seq > count) continue;
    ++e.answered;
    e.duplicates += n - 1;
  }
  return e;
}

/// A packet socket for ethertype `proto` on `ifname` inside `machine`, and that interface's MAC.
int PacketSocket(const Sandbox& sb, const std::string& machine, const std::string& ifname, uint16_t proto,
                 sockaddr_ll& where, std::string& mac) {
  auto ns = MachineNs(sb, machine);
  int fd = -1;
  REQUIRE(lab::hv::kernel::WithNetNs(ns, [&] {
            fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(proto));
            if (fd < 0) return lab::ErrnoStatus("packet socket");
            where = sockaddr_ll{};
            where.sll_family = AF_PACKET;
            where.sll_protocol = htons(proto);
            where.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
            if (where.sll_ifindex == 0) return lab::ErrnoStatus("no interface " + ifname);
            if (::bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) return lab::ErrnoStatus("bind");
            return lab::Status::Ok();
          }).ok());
  auto nl = lab::hv::kernel::Netlink::In(ns);
  REQUIRE(nl.ok());
  auto link = nl->FindLink(ifname);
  REQUIRE((link.ok() && *link));
  mac = (*link)->mac;
  return fd;
}

struct Copies {
  int sent = 0;
  int received = 0;  // copies that reached the receiver (one per frame sent, on a loop-free network)
  int echoed = 0;    // copies that came back to the sender (a loop)
};

/// Sends `count` Ethernet broadcasts (the local experimental ethertype 88B5) from `sender`'s
/// interface and counts their copies at `receiver`'s interface and back at the sender. The
/// network floods broadcasts to both team members: only a team that forwards through one member
/// delivers each frame once and never sends it back out.
Copies Broadcast(const Sandbox& sb, const std::string& sender, const std::string& sif, const std::string& receiver,
                 const std::string& rif, int count) {
  constexpr uint16_t kProto = 0x88b5;
  sockaddr_ll to{}, at{};
  std::string smac, rmac;
  int tx = PacketSocket(sb, sender, sif, kProto, to, smac);
  int rx = PacketSocket(sb, receiver, rif, kProto, at, rmac);
  std::string marker = "lab-set-team " + std::to_string(::getpid()) + " ";
  Copies c;
  c.sent = lab::testing::SendMarkedBroadcasts(tx, to, smac, kProto, marker, count);
  c.received = lab::testing::CountMarkedFrames(rx, marker);
  c.echoed = lab::testing::CountMarkedFrames(tx, marker);
  ::close(tx);
  ::close(rx);
  return c;
}

/// Traffic out of the team from each of its ports (vm1, middle, hv1's vEthernet -> stand-in)
/// and into it (hv2 -> vm1, hv2 -> hv1): every request answered exactly once; broadcasts reach
/// every machine once and never come back. Returns how many packets each member sent and
/// received meanwhile.
std::map<std::string, Counters> ExpectCleanTraffic(const Sandbox& sb, const std::string& when) {
  INFO(when);
  auto before = MemberCounters(sb);
  for (auto [from, to] : {std::pair{"vm1", "10.60.0.1"}, std::pair{"middle", "10.60.0.1"}, std::pair{"hv1", "10.60.0.1"},
                          std::pair{"hv2", "10.60.0.21"}, std::pair{"hv2", "10.60.0.11"}}) {
    INFO(std::string(from) + " -> " + to);
    Echoes e = Ping(sb, from, to, 20);
    CHECK(e.sent == 20);
    CHECK(e.answered == 20);
    CHECK(e.duplicates == 0);
  }
  auto after = MemberCounters(sb);
  // Broadcasts the network floods to both members (from hv2), and broadcasts of the team's own
  // ports (vm1; hv1's vEthernet), which the network floods back to the other member.
  for (auto [from, fif, to, tif] : {std::tuple{"hv2", "Ethernet", "vm1", "Ethernet"},
                                    std::tuple{"hv2", "Ethernet", "middle", "Ethernet"},
                                    std::tuple{"vm1", "Ethernet", "hv2", "Ethernet"},
                                    std::tuple{"vm1", "Ethernet", "middle", "Ethernet"},
                                    std::tuple{"hv1", "SETswitch", "hv2", "Ethernet"},
                                    std::tuple{"hv1", "SETswitch", "vm1", "Ethernet"}}) {
    INFO(std::string("broadcast ") + from + " -> " + to);
    Copies c = Broadcast(sb, from, fif, to, tif, 20);
    CHECK(c.sent == 20);
    CHECK(c.received == 20);
    CHECK(c.echoed == 0);
  }
  Run check = sb.Lab("check " + kLab);
  INFO(check.out);
  CHECK(check.code == 0);
  std::map<std::string, Counters> delta;
  for (const char* m : {"NIC1", "NIC2"})
    delta[m] = Counters{after[m].tx - before[m].tx, after[m].rx - before[m].rx};
  return delta;
}

Run Link(const Sandbox& sb, const std::string& nic, const std::string& state) {
  Run r = sb.Lab("link " + kLab + " hv1 " + nic + " " + state);
  INFO(r.out);
  CHECK(r.code == 0);
  return r;
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

}  // namespace

TEST_CASE("A SET switch forwards through both members, moves a downed member's ports to the other and deals "
          "them over both again when it is back",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Run up = sb.Lab("up " + Src("labs/" + kLab + ".yaml"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);
  const std::string both = "NIC1 up (middle/Ethernet, vm1/Ethernet), NIC2 up (vEthernet)";

  // Both members up: each carries its ports' traffic (60 echo requests out of NIC1 from vm1
  // and middle, 20 out of NIC2 from hv1, and their replies back on the same member).
  Run status = sb.Lab("status " + kLab);
  INFO(status.out);
  CHECK(status.out.find("SET switch 'SETswitch' on hv1: " + both) != std::string::npos);
  auto d = ExpectCleanTraffic(sb, "both members up");
  CHECK(d["NIC1"].tx >= 40);
  CHECK(d["NIC1"].rx >= 40);
  CHECK(d["NIC2"].tx >= 20);
  CHECK(d["NIC2"].rx >= 20);

  Run down1 = Link(sb, "NIC1", "down");
  CHECK(down1.out.find("NIC 'NIC1' of host 'hv1': link down") != std::string::npos);
  CHECK(down1.out.find("switch 'SETswitch' (SET, switch independent): NIC1 down, NIC2 up (middle/Ethernet, "
                       "vEthernet, vm1/Ethernet)") != std::string::npos);
  d = ExpectCleanTraffic(sb, "NIC1 down: NIC2 carries every port");
  CHECK(d["NIC1"].tx == 0);
  CHECK(d["NIC2"].tx >= 60);
  CHECK(d["NIC2"].rx >= 60);

  Run up1 = Link(sb, "NIC1", "up");
  CHECK(up1.out.find(both) != std::string::npos);
  status = sb.Lab("status " + kLab + " --json");
  auto j = nlohmann::json::parse(status.out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j["teams"].size() == 1);
  CHECK(j["teams"][0]["members"][0]["ports"] == nlohmann::json::array({"middle/Ethernet", "vm1/Ethernet"}));
  CHECK(j["teams"][0]["members"][0]["primary"] == true);
  CHECK(j["teams"][0]["members"][1]["ports"] == nlohmann::json::array({"vEthernet"}));
  CHECK(j["drift"].empty());
  d = ExpectCleanTraffic(sb, "NIC1 back: both members carry traffic again");
  CHECK(d["NIC1"].tx >= 40);
  CHECK(d["NIC1"].rx >= 40);
  CHECK(d["NIC2"].tx >= 20);
  CHECK(d["NIC2"].rx >= 20);

  // The other member fails in turn: NIC1 carries every port.
  Run down2 = Link(sb, "NIC2", "down");
  CHECK(down2.out.find("NIC1 up (middle/Ethernet, vEthernet, vm1/Ethernet), NIC2 down") != std::string::npos);
  d = ExpectCleanTraffic(sb, "NIC2 down: NIC1 carries every port");
  CHECK(d["NIC2"].tx == 0);
  CHECK(d["NIC1"].tx >= 60);
  CHECK(Link(sb, "NIC2", "up").out.find(both) != std::string::npos);

  // Both down: nothing passes; the first one back carries every port.
  Link(sb, "NIC1", "down");
  Run none = Link(sb, "NIC2", "down");
  CHECK(none.out.find("NIC1 down, NIC2 down") != std::string::npos);
  CHECK(Ping(sb, "vm1", "10.60.0.1", 5).answered == 0);
  Run back = Link(sb, "NIC2", "up");
  CHECK(back.out.find("NIC1 down, NIC2 up (middle/Ethernet, vEthernet, vm1/Ethernet)") != std::string::npos);
  CHECK(Link(sb, "NIC1", "up").out.find(both) != std::string::npos);
  ExpectCleanTraffic(sb, "both back");

  // Bad requests change nothing and say what exists.
  Run bad = sb.Lab("link " + kLab + " hv1 NIC3 down");
  CHECK(bad.code == 1);
  CHECK(bad.out.find("host 'hv1' has no NIC or adapter 'NIC3' (it has: NIC1, NIC2)") != std::string::npos);
  CHECK(sb.Lab("link " + kLab + " hv1 NIC1 sideways").code == 2);

  CHECK(sb.Lab("up " + Src("labs/" + kLab + ".yaml")).out.find("No changes.") != std::string::npos);
  TakeDownLeavingNothing(sb, kLab, pids);
  fs::remove_all(sb.dir);
}

TEST_CASE("Lab names resolve from nested VMs through the DNS servers the file gives them, and only through them",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string original = lab::ReadFile(Src("labs/" + kLab + ".yaml")).value_or("");
  REQUIRE_FALSE(original.empty());
  REQUIRE(lab::WriteFileAtomic(sb.dir + "/set-team.yaml", original));
  Run up = sb.Lab("up " + sb.dir + "/set-team.yaml");
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);

  // Each nested VM's resolv.conf holds exactly the servers of its adapter in the file.
  auto resolv = [&](const std::string& vm) { return sb.Lab("exec " + kLab + " " + vm + " -- cat /etc/resolv.conf").out; };
  CHECK(resolv("n1").find("nameserver 10.60.0.1\n") != std::string::npos);
  CHECK(resolv("n2").find("nameserver 192.168.60.1\n") != std::string::npos);  // the NAT's DNS proxy
  CHECK(resolv("n2").find("10.60.0.1") == std::string::npos);
  CHECK(resolv("n3").find("nameserver") == std::string::npos);
  // A machine's own hosts file names only itself: other names can only come from DNS.
  CHECK(sb.Lab("exec " + kLab + " n2 -- cat /etc/hosts").out.find("vm1") == std::string::npos);
  Run check = sb.Lab("check " + kLab);
  INFO(check.out);
  CHECK(check.code == 0);  // n1 (stand-in) and n2 (proxy) resolve vm1; n3 (no server) does not

  // n2 given a server that serves no DNS (hv2): in place, and lab names stop resolving there.
  std::string moved = Replace(original, "dns: [192.168.60.1]", "dns: [10.60.0.12]");
  moved = Replace(moved, "{from: n2, resolve: vm1, expect_address: 10.60.0.21}", "{from: n2, resolve: vm1, expect: failure}");
  moved = Replace(moved, "{from: n2, resolve: www.example.test, expect_address: 10.60.0.1}",
                  "{from: n2, resolve: www.example.test, expect: failure}");
  moved = Replace(moved, "{from: n2, http: \"http://www.example.test/\"", "{from: n2, http: \"http://10.60.0.1/\"");
  REQUIRE(lab::WriteFileAtomic(sb.dir + "/set-team.yaml", moved));
  Run plan = sb.Lab("plan " + sb.dir + "/set-team.yaml");
  INFO(plan.out);
  CHECK(plan.out.find("DNS servers of 'n2'") != std::string::npos);
  CHECK(plan.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);
  REQUIRE(sb.Lab("up " + sb.dir + "/set-team.yaml").code == 0);
  CHECK(resolv("n2").find("nameserver 10.60.0.12\n") != std::string::npos);
  Run moved_check = sb.Lab("check " + kLab);
  INFO(moved_check.out);
  CHECK(moved_check.code == 0);

  // And back: the proxy answers again.
  REQUIRE(lab::WriteFileAtomic(sb.dir + "/set-team.yaml", original));
  REQUIRE(sb.Lab("up " + sb.dir + "/set-team.yaml").code == 0);
  Run back = sb.Lab("check " + kLab);
  INFO(back.out);
  CHECK(back.code == 0);

  TakeDownLeavingNothing(sb, kLab, pids);
  fs::remove_all(sb.dir);
}
