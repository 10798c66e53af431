// The netlink/nftables layer against the real kernel, in throwaway network namespaces only:
// each namespace lives as long as its fd, nothing is bind-mounted, and the machine's own
// interfaces, routes and firewall are never touched.
#include "hv/kernel/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/text.h"
#include "hv/kernel/announce.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

// A fresh, empty network namespace: a helper thread unshares its own network namespace and
// hands back a handle on it, so the test's threads never leave the machine's namespace.
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
  return std::move(ns).value();
}

Netlink Connect(const NetNs& ns) {
  auto nl = Netlink::In(ns);
  REQUIRE(nl.ok());
  return std::move(nl).value();
}

LinkInfo MustFind(Netlink& nl, const std::string& name) {
  auto link = nl.FindLink(name);
  REQUIRE(link.ok());
  REQUIRE(link->has_value());
  return **link;
}

bool Has(Netlink& nl, const std::string& name) {
  auto link = nl.FindLink(name);
  REQUIRE(link.ok());
  return link->has_value();
}

// A file under /proc/thread-self (or /proc/sys/net) as seen from inside `ns`.
std::string ReadIn(const NetNs& ns, const std::string& path) {
  std::string text;
  Status st = WithNetNs(ns, [&]() -> Status {
    auto content = ReadFile(path);
    if (!content) return Status::Error("cannot read " + path);
    text = *content;
    return Status::Ok();
  });
  REQUIRE(st.ok());
  return text;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

uint16_t Checksum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len % 2) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Sends ICMP echo requests from inside `from` to `to` until a reply comes back or ~3 s pass.
bool Ping(const NetNs& from, const std::string& to) {
  int fd = -1;
  REQUIRE(WithNetNs(from, [&]() -> Status {
            fd = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
            return fd < 0 ? ErrnoStatus("raw ICMP socket") : Status::Ok();
          }).ok());
  sockaddr_in dst = {};
  dst.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, to.c_str(), &dst.sin_addr) == 1);
  const uint16_t id = static_cast<uint16_t>(::getpid() & 0xffff);
  bool replied = false;
  for (uint16_t seq = 1; seq <= 6 && !replied; ++seq) {
    unsigned char packet[sizeof(icmphdr) + 16] = {};
    auto* icmp = reinterpret_cast<icmphdr*>(packet);
    icmp->type = ICMP_ECHO;
    icmp->un.echo.id = htons(id);
    icmp->un.echo.sequence = htons(seq);
    std::memcpy(packet + sizeof(icmphdr), "lab netlink test", 16);
    icmp->checksum = Checksum(packet, sizeof packet);
    // Unreachable (no route, link down) fails right here.
    if (::sendto(fd, packet, sizeof packet, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst) < 0) break;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    while (!replied && std::chrono::steady_clock::now() < deadline) {
      pollfd p = {fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      unsigned char buf[1500];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < static_cast<ssize_t>(sizeof(iphdr))) continue;
      const auto* ip = reinterpret_cast<const iphdr*>(buf);
      size_t ihl = static_cast<size_t>(ip->ihl) * 4;
      if (static_cast<size_t>(n) < ihl + sizeof(icmphdr)) continue;
      const auto* reply = reinterpret_cast<const icmphdr*>(buf + ihl);
      replied = reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == id &&
                ip->saddr == dst.sin_addr.s_addr;
    }
  }
  ::close(fd);
  return replied;
}

}  // namespace

TEST_CASE("A veth pair spans two namespaces with its MAC on the named end", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink veth test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);

  REQUIRE(in_a.CreateVeth("va", nullptr, "vb", &b, "02:00:00:00:00:0a").ok());
  LinkInfo va = MustFind(in_a, "va");
  CHECK(va.kind == "veth");
  CHECK(va.mac == "02:00:00:00:00:0a");
  CHECK(MustFind(in_b, "vb").kind == "veth");
  CHECK_FALSE(Has(in_a, "vb"));
  CHECK_FALSE(Has(in_b, "va"));

  Status again = in_a.CreateVeth("va", nullptr, "vc", &b);
  REQUIRE_FALSE(again.ok());
  CHECK(again.message() == "create veth 'va': Object exists");
  CHECK_FALSE(Has(in_b, "vc"));

  // Both ends elsewhere: the socket's namespace only sends the request.
  NetNs c = ScratchNs();
  Netlink in_c = Connect(c);
  REQUIRE(in_c.CreateVeth("w1", &a, "w2", &b, "02:00:00:00:00:0b").ok());
  CHECK(MustFind(in_a, "w1").mac == "02:00:00:00:00:0b");
  CHECK(Has(in_b, "w2"));
  auto in_c_links = in_c.Links();
  REQUIRE(in_c_links.ok());
  CHECK(in_c_links->size() == 1);  // only lo
}

TEST_CASE("A bridge takes a veth end as a port and both come up", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink bridge test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateBridge("br0").ok());
  REQUIRE(nl.CreateVeth("p0", nullptr, "p1", nullptr).ok());
  REQUIRE(nl.SetMaster("p0", "br0").ok());
  REQUIRE(nl.SetUp("br0").ok());
  REQUIRE(nl.SetUp("p0").ok());

  LinkInfo br = MustFind(nl, "br0");
  LinkInfo port = MustFind(nl, "p0");
  CHECK(br.kind == "bridge");
  CHECK(br.up);
  CHECK(port.up);
  CHECK(port.master == br.index);
  CHECK(MustFind(nl, "p1").master == 0);

  REQUIRE(nl.SetUp("p0", false).ok());
  REQUIRE(nl.ClearMaster("p0").ok());
  port = MustFind(nl, "p0");
  CHECK_FALSE(port.up);
  CHECK(port.master == 0);

  REQUIRE(nl.SetMac("br0", "02:00:00:00:00:42").ok());
  CHECK(MustFind(nl, "br0").mac == "02:00:00:00:00:42");

  Status missing = nl.SetMaster("p0", "nobridge");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("'nobridge'") != std::string::npos);
  CHECK(nl.CreateBridge("br0").message() == "create bridge 'br0': Object exists");
}

// Linux 6.3 and later answer NLM_F_ECHO on RTM_NEWLINK with the new link.
bool KernelEchoesNewLink() {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 3);
}

TEST_CASE("A new veth's ifindex comes back with it and takes an address without a lookup", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink veth index test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);
  // Another link first, so the new one's index is not the first free one by luck.
  REQUIRE(in_a.CreateVeth("x0", nullptr, "x1", nullptr).ok());
  int index = -1;
  REQUIRE(in_a.CreateVeth("eth", nullptr, "port", &b, std::nullopt, /*up=*/true, &index).ok());
  const LinkInfo eth = MustFind(in_a, "eth");
  if (KernelEchoesNewLink()) {
    REQUIRE(index == eth.index);
  } else {
    CHECK((index == 0 || index == eth.index));
  }
  // The address goes to the link with that index; the name only labels errors.
  const Cidr addr = *Cidr::Parse("10.98.0.5/24");
  REQUIRE(in_a.AddAddress("label-only", addr, eth.index).ok());
  auto addrs = in_a.Addresses();
  REQUIRE(addrs.ok());
  CHECK(std::any_of(addrs->begin(), addrs->end(), [&](const AddrInfo& x) { return x.index == eth.index && x.address == addr; }));
  // A failed create reports no index.
  index = -1;
  REQUIRE_FALSE(in_a.CreateVeth("eth", nullptr, "port2", &b, std::nullopt, false, &index).ok());
  CHECK(index == 0);
  // Made in another namespace than the socket's: its index there is not ours to report.
  index = -1;
  REQUIRE(in_b.CreateVeth("far", &a, "near", nullptr, std::nullopt, false, &index).ok());
  CHECK(index == 0);
  CHECK(Has(in_a, "far"));
}

TEST_CASE("A veth made up joins a bridge and comes up in one request", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink bridge test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);
  REQUIRE(in_b.CreateBridge("sw").ok());
  REQUIRE(in_b.SetUp("sw").ok());
  // The named end is up at once; its peer cannot be before the pair exists.
  REQUIRE(in_a.CreateVeth("eth", nullptr, "port", &b, std::nullopt, /*up=*/true).ok());
  CHECK(MustFind(in_a, "eth").up);
  CHECK_FALSE(MustFind(in_b, "port").up);
  REQUIRE(in_b.AttachUp("port", "sw").ok());
  LinkInfo port = MustFind(in_b, "port");
  CHECK(port.up);
  CHECK(port.master == MustFind(in_b, "sw").index);
  CHECK(MustFind(in_a, "eth").carrier);  // both ends up: the link has carrier

  CHECK(in_b.AttachUp("port", "nosuch").message().find("'nosuch'") != std::string::npos);
  CHECK(in_b.AttachUp("nosuch", "sw").message() == "attach 'nosuch' to bridge 'sw': no such interface");
}

TEST_CASE("Alternative names are added once and find their link", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink altname test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateBridge("VmNAT").ok());
  const std::string owner = "lab.0123456789abcdef.switch.VmNAT";
  REQUIRE(nl.AddAltName("VmNAT", "vEthernet(VmNAT)").ok());
  REQUIRE(nl.AddAltName("VmNAT", owner).ok());
  REQUIRE(nl.AddAltName("VmNAT", "vEthernet(VmNAT)").ok());  // already there

  LinkInfo by_alt = MustFind(nl, "vEthernet(VmNAT)");
  CHECK(by_alt.name == "VmNAT");
  CHECK(MustFind(nl, owner).name == "VmNAT");  // longer than an interface name
  CHECK(by_alt.altnames == std::vector<std::string>{"vEthernet(VmNAT)", owner});

  auto links = nl.Links();
  REQUIRE(links.ok());
  auto it = std::find_if(links->begin(), links->end(), [](const LinkInfo& l) { return l.name == "VmNAT"; });
  REQUIRE(it != links->end());
  CHECK(it->kind == "bridge");
  CHECK(it->altnames == std::vector<std::string>{"vEthernet(VmNAT)", owner});

  Status spaced = nl.AddAltName("VmNAT", "vEthernet (VmNAT)");
  REQUIRE_FALSE(spaced.ok());
  CHECK(spaced.message().find("may not contain spaces") != std::string::npos);
  CHECK(nl.AddAltName("nosuch", "x.y").message() == "add altname 'x.y' to 'nosuch': no such interface");
  // A name another link has already is refused, not taken as this link's.
  REQUIRE(nl.CreateBridge("other").ok());
  Status taken = nl.AddAltName("other", "vEthernet(VmNAT)");
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.message().find("Object exists") != std::string::npos);
  CHECK(MustFind(nl, "other").altnames.empty());

  // Operations take an altname wherever they take a name.
  REQUIRE(nl.SetUp(owner).ok());
  CHECK(MustFind(nl, "VmNAT").up);
  REQUIRE(nl.DeleteLink(owner).ok());
  CHECK_FALSE(Has(nl, "VmNAT"));
  CHECK_FALSE(Has(nl, "vEthernet(VmNAT)"));
}

TEST_CASE("Addresses are added idempotently and deleting an absent one is fine", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink address test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateVeth("e0", nullptr, "e1", nullptr).ok());
  const Cidr addr = *Cidr::Parse("10.99.1.1/24");
  REQUIRE(nl.AddAddress("e0", addr).ok());
  REQUIRE(nl.AddAddress("e0", addr).ok());
  REQUIRE(nl.AddAddress("e1", *Cidr::Parse("10.99.1.2/24")).ok());

  const int e0 = MustFind(nl, "e0").index;
  auto addrs = nl.Addresses();
  REQUIRE(addrs.ok());
  size_t on_e0 = 0;
  for (const auto& x : *addrs) {
    if (x.index == e0) {
      ++on_e0;
      CHECK(x.address == addr);
    }
  }
  CHECK(on_e0 == 1);

  REQUIRE(nl.DeleteAddress("e0", addr).ok());
  REQUIRE(nl.DeleteAddress("e0", addr).ok());
  REQUIRE(nl.DeleteAddress("gone0", addr).ok());
  addrs = nl.Addresses();
  REQUIRE(addrs.ok());
  CHECK(std::none_of(addrs->begin(), addrs->end(), [&](const AddrInfo& x) { return x.index == e0; }));
  CHECK(addrs->size() == 1);

  Status missing = nl.AddAddress("gone0", addr);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("'gone0'") != std::string::npos);
}

TEST_CASE("The default route is set and replaced in the namespace's main table", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink route test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateVeth("r0", nullptr, "r1", nullptr).ok());
  REQUIRE(nl.AddAddress("r0", *Cidr::Parse("10.99.2.1/24")).ok());
  REQUIRE(nl.SetUp("r0").ok());
  REQUIRE(nl.SetUp("r1").ok());

  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.2.254")).ok());
  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.2.253")).ok());
  // /proc/thread-self/net follows the thread's namespace (/proc/net follows the process's).
  std::string routes = ReadIn(a, "/proc/thread-self/net/route");
  size_t defaults = 0;
  for (const auto& line : Split(routes, '\n')) {
    auto cols = Split(Trim(line), '\t');
    if (cols.size() > 2 && cols[1] == "00000000") {
      ++defaults;
      CHECK(Trim(cols[0]) == "r0");
      CHECK(cols[2] == "FD02630A");  // 10.99.2.253, little-endian hex
    }
  }
  CHECK(defaults == 1);

  Status unreachable = nl.SetDefaultRoute(*Ipv4::Parse("10.98.0.1"));
  REQUIRE_FALSE(unreachable.ok());
  // The kernel's errno and its extended-ACK explanation, not libnl's "Unspecific failure".
  CHECK(unreachable.message().find("set default route via 10.98.0.1: Network is unreachable") == 0);
}

TEST_CASE("The default routes are dumped with their gateways, and the default route deleted", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink route test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  auto none = nl.DefaultRoutes();
  REQUIRE(none.ok());
  CHECK(none->empty());
  REQUIRE(nl.CreateVeth("d0", nullptr, "d1", nullptr).ok());
  REQUIRE(nl.AddAddress("d0", *Cidr::Parse("10.99.3.1/24")).ok());
  REQUIRE(nl.SetUp("d0").ok());
  REQUIRE(nl.SetUp("d1").ok());
  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.3.254")).ok());
  auto one = nl.DefaultRoutes();
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);  // the connected route of 10.99.3.0/24 is not a default route
  CHECK((*one)[0].gateway == *Ipv4::Parse("10.99.3.254"));
  CHECK((*one)[0].oif == MustFind(nl, "d0").index);

  // Linux drops the routes through a link set down; up again, the default route stays gone.
  REQUIRE(nl.SetUp("d0", false).ok());
  REQUIRE(nl.SetUp("d0").ok());
  CHECK(nl.DefaultRoutes()->empty());
  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.3.254")).ok());
  REQUIRE(nl.DeleteDefaultRoute().ok());
  CHECK(nl.DefaultRoutes()->empty());
  CHECK(nl.DeleteDefaultRoute().ok());  // none left: fine
}

TEST_CASE("A bridge forgets a MAC it learned on a port, and keeps its own entries", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink bridge test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);
  REQUIRE(in_a.CreateBridge("fbr").ok());
  REQUIRE(in_a.SetUp("fbr").ok());
  const std::string mac = "02:11:22:33:44:55";
  REQUIRE(in_a.CreateVeth("fport", nullptr, "fvm", &b, std::nullopt).ok());
  REQUIRE(in_b.SetMac("fvm", mac).ok());
  REQUIRE(in_a.AttachUp("fport", "fbr").ok());
  REQUIRE(in_b.SetUp("fvm").ok());
  // The VM speaks: the bridge learns its MAC on the port (once the port forwards).
  int flushed = 0;
  for (int i = 0; i < 100 && flushed == 0; ++i) {
    REQUIRE(Announce(b, "fvm", mac, *Ipv4::Parse("10.99.4.2")).ok());
    auto other = in_a.FlushFdb("fbr", "02:00:00:00:00:01");  // a MAC it never saw: nothing to do
    REQUIRE(other.ok());
    CHECK(*other == 0);
    auto n = in_a.FlushFdb("fbr", mac);
    REQUIRE(n.ok());
    flushed = *n;
    if (flushed == 0) ::usleep(10000);
  }
  CHECK(flushed == 1);
  auto again = in_a.FlushFdb("fbr", mac);
  REQUIRE(again.ok());
  CHECK(*again == 0);  // already gone
  auto gone = in_a.FlushFdb("nosuchbridge", mac);
  REQUIRE(gone.ok());
  CHECK(*gone == 0);
  CHECK(MustFind(in_a, "fport").master == MustFind(in_a, "fbr").index);  // the port stays
}

TEST_CASE("A gratuitous ARP announces the sender's address from its MAC; without an address, a RARP", "[hv]") {
  std::string f = AnnouncementFrame("02:aa:bb:cc:dd:01", *Ipv4::Parse("10.1.2.3"));
  REQUIRE(f.size() == 60);  // padded to the Ethernet minimum
  auto byte = [&](size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(f[i])); };
  for (size_t i = 0; i < 6; ++i) CHECK(byte(i) == 0xff);  // broadcast
  CHECK(byte(6) == 0x02);
  CHECK(byte(11) == 0x01);
  CHECK((byte(12) << 8 | byte(13)) == 0x0806);  // ARP
  CHECK((byte(20) << 8 | byte(21)) == 1);       // request
  // Sender and target protocol addresses: both the machine's own.
  CHECK(f.substr(28, 4) == std::string("\x0a\x01\x02\x03", 4));
  CHECK(f.substr(38, 4) == std::string("\x0a\x01\x02\x03", 4));
  CHECK(f.substr(22, 6) == f.substr(6, 6));

  std::string r = AnnouncementFrame("02:aa:bb:cc:dd:01", std::nullopt);
  CHECK((static_cast<unsigned char>(r[12]) << 8 | static_cast<unsigned char>(r[13])) == 0x8035);  // RARP
  CHECK(static_cast<unsigned char>(r[21]) == 3);                                                   // request reverse
  CHECK(r.substr(32, 6) == r.substr(6, 6));  // asks about its own MAC
}

TEST_CASE("An announcement leaves the machine's interface and reaches its peer", "[root][hv]") {
  LAB_REQUIRE_ROOT("packet socket test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  REQUIRE(in_a.CreateVeth("an0", nullptr, "an1", &b, std::string("02:aa:bb:cc:dd:02"), /*up=*/true).ok());
  Netlink in_b = Connect(b);
  REQUIRE(in_b.SetUp("an1").ok());
  int fd = -1;
  REQUIRE(WithNetNs(b, [&]() -> Status {
            fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP));
            return fd < 0 ? ErrnoStatus("packet socket") : Status::Ok();
          }).ok());
  REQUIRE(Announce(a, "an0", "02:aa:bb:cc:dd:02", *Ipv4::Parse("10.99.5.1")).ok());
  pollfd p = {fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 2000) == 1);
  unsigned char buf[1500];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ::close(fd);
  REQUIRE(n >= 42);
  CHECK(std::string(reinterpret_cast<char*>(buf), 42) ==
        AnnouncementFrame("02:aa:bb:cc:dd:02", *Ipv4::Parse("10.99.5.1")).substr(0, 42));
  CHECK_FALSE(Announce(a, "nosuch", "02:aa:bb:cc:dd:02", std::nullopt).ok());
}

TEST_CASE("An alternative name is removed from its link only, and removing an absent one is fine", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink altname test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateBridge("VmNAT").ok());
  REQUIRE(nl.SetUp("VmNAT").ok());
  REQUIRE(nl.AddAltName("VmNAT", "vEthernet(VmNAT)").ok());
  REQUIRE(nl.AddAltName("VmNAT", "vEthernet(NatSwitch)").ok());  // Rename-VMSwitch: the new name first
  REQUIRE(nl.DeleteAltName("VmNAT", "vEthernet(VmNAT)").ok());
  REQUIRE(nl.DeleteAltName("VmNAT", "vEthernet(VmNAT)").ok());  // already gone
  LinkInfo link = MustFind(nl, "vEthernet(NatSwitch)");
  CHECK(link.name == "VmNAT");
  CHECK(link.up);  // an up bridge keeps forwarding while its names change
  CHECK(link.altnames == std::vector<std::string>{"vEthernet(NatSwitch)"});
  CHECK_FALSE(Has(nl, "vEthernet(VmNAT)"));
  CHECK_FALSE(nl.DeleteAltName("nosuch", "x.y").ok());
}

TEST_CASE("The default route through one link is deleted, one through another link stays", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink route test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.CreateVeth("d0", nullptr, "d1", nullptr).ok());
  REQUIRE(nl.CreateVeth("o0", nullptr, "o1", nullptr).ok());
  REQUIRE(nl.AddAddress("d0", *Cidr::Parse("10.99.3.1/24")).ok());
  REQUIRE(nl.AddAddress("o0", *Cidr::Parse("10.99.4.1/24")).ok());
  for (const char* l : {"d0", "d1", "o0", "o1"}) REQUIRE(nl.SetUp(l).ok());
  auto defaults = [&] {
    std::vector<std::string> out;
    for (const auto& line : Split(ReadIn(a, "/proc/thread-self/net/route"), '\n')) {
      auto cols = Split(Trim(line), '\t');
      if (cols.size() > 2 && cols[1] == "00000000") out.push_back(Trim(cols[0]));
    }
    return out;
  };
  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.4.254")).ok());  // through o0
  REQUIRE(nl.DeleteDefaultRoute(MustFind(nl, "d0").index).ok());  // none through d0: fine
  CHECK(defaults() == std::vector<std::string>{"o0"});
  REQUIRE(nl.SetDefaultRoute(*Ipv4::Parse("10.99.3.254")).ok());  // replaced: through d0
  CHECK(defaults() == std::vector<std::string>{"d0"});
  REQUIRE(nl.DeleteDefaultRoute(MustFind(nl, "o0").index).ok());
  CHECK(defaults() == std::vector<std::string>{"d0"});
  REQUIRE(nl.DeleteDefaultRoute(MustFind(nl, "d0").index).ok());
  CHECK(defaults().empty());
}

TEST_CASE("Deleting a missing link is success and deleting one veth end removes both", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink delete test");
  NetNs a = ScratchNs();
  Netlink nl = Connect(a);
  REQUIRE(nl.DeleteLink("nosuch0").ok());
  REQUIRE(nl.CreateVeth("d0", nullptr, "d1", nullptr).ok());
  REQUIRE(nl.DeleteLink("d0").ok());
  CHECK_FALSE(Has(nl, "d0"));
  CHECK_FALSE(Has(nl, "d1"));
  REQUIRE(nl.DeleteLink("d1").ok());
  auto none = nl.FindLink("d1");
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("A link moves into another namespace under a new name", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink move test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);
  REQUIRE(in_a.CreateVeth("m0", nullptr, "m1", nullptr, "02:00:00:00:00:11").ok());
  REQUIRE(in_a.MoveLink("m0", b, "eth0").ok());
  CHECK_FALSE(Has(in_a, "m0"));
  LinkInfo moved = MustFind(in_b, "eth0");
  CHECK(moved.mac == "02:00:00:00:00:11");
  CHECK(moved.kind == "veth");

  REQUIRE(in_a.MoveLink("m1", b).ok());
  CHECK(Has(in_b, "m1"));

  REQUIRE(in_a.CreateVeth("n0", nullptr, "n1", nullptr).ok());
  Status taken = in_a.MoveLink("n0", b, "eth0");
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.message().find("move link 'n0' as 'eth0'") == 0);
  CHECK(Has(in_a, "n0"));  // nothing moved
}

TEST_CASE("A net sysctl changes only inside its namespace", "[root][hv]") {
  LAB_REQUIRE_ROOT("sysctl test");
  const std::string key = "/proc/sys/net/ipv4/ip_forward";
  auto machine_before = ReadFile(key);
  REQUIRE(machine_before);
  // A new namespace may inherit the machine's value: write the opposite to see the change.
  const std::string wanted = Trim(*machine_before) == "1" ? "0" : "1";
  NetNs a = ScratchNs();
  REQUIRE(WriteNetSysctl(a, "ipv4/ip_forward", wanted).ok());
  CHECK(Trim(ReadIn(a, key)) == wanted);
  CHECK(ReadFile(key) == machine_before);
  CHECK_FALSE(WriteNetSysctl(a, "ipv4/no_such_key", "1").ok());
  CHECK_FALSE(WriteNetSysctl(a, "../kernel/hostname", "x").ok());
}

TEST_CASE("An nftables table is applied, listed and deleted inside one namespace only", "[root][hv]") {
  LAB_REQUIRE_ROOT("nftables test");
  NetNs a = ScratchNs();
  auto machine = NetNs::Current();
  REQUIRE(machine.ok());
  const std::string ruleset =
      "table ip lab_test {\n"
      "  chain post {\n"
      "    type nat hook postrouting priority srcnat;\n"
      "    ip saddr 192.168.100.0/24 masquerade\n"
      "  }\n"
      "}\n";
  REQUIRE(NftApply(a, ruleset).ok());
  auto tables = NftListTables(a);
  REQUIRE(tables.ok());
  CHECK(*tables == std::vector<std::string>{"ip lab_test"});
  // Only listed, never changed: the machine's own firewall must not hold the table.
  auto machine_tables = NftListTables(*machine);
  REQUIRE(machine_tables.ok());
  CHECK_FALSE(Contains(*machine_tables, "ip lab_test"));

  REQUIRE(NftDeleteTable(a, "ip", "lab_test").ok());
  tables = NftListTables(a);
  REQUIRE(tables.ok());
  CHECK(tables->empty());
  REQUIRE(NftDeleteTable(a, "ip", "lab_test").ok());
  CHECK_FALSE(NftDeleteTable(a, "ip", "x; flush ruleset").ok());

  REQUIRE(NftApply(a, "table bridge lab_filter {\n chain forward_filter { type filter hook forward priority 0; }\n}").ok());
  tables = NftListTables(a);
  REQUIRE(tables.ok());
  CHECK(*tables == std::vector<std::string>{"bridge lab_filter"});
}

TEST_CASE("A bad nftables ruleset fails with nft's message and changes nothing", "[root][hv]") {
  LAB_REQUIRE_ROOT("nftables error test");
  NetNs a = ScratchNs();
  Status syntax = NftApply(a, "table ip lab_bad {\n chain c { type nat hook nowhere priority 0; }\n}");
  REQUIRE_FALSE(syntax.ok());
  CHECK(syntax.message().find("Error: unknown chain hook") != std::string::npos);

  // Refused by the kernel, not the parser: the whole batch is dropped, the good table too.
  Status kernel = NftApply(a, "add table ip lab_ok\nadd chain ip lab_missing c\n");
  REQUIRE_FALSE(kernel.ok());
  CHECK(kernel.message().find("No such file or directory") != std::string::npos);
  auto tables = NftListTables(a);
  REQUIRE(tables.ok());
  CHECK(tables->empty());
}

TEST_CASE("A ping crosses a veth between two namespaces", "[root][hv]") {
  LAB_REQUIRE_ROOT("netlink traffic test");
  NetNs a = ScratchNs();
  NetNs b = ScratchNs();
  Netlink in_a = Connect(a);
  Netlink in_b = Connect(b);
  REQUIRE(in_a.CreateVeth("ping0", nullptr, "ping1", &b).ok());
  REQUIRE(in_a.AddAddress("ping0", *Cidr::Parse("10.99.0.1/24")).ok());
  REQUIRE(in_b.AddAddress("ping1", *Cidr::Parse("10.99.0.2/24")).ok());
  CHECK_FALSE(Ping(a, "10.99.0.2"));  // both ends down: no way across
  REQUIRE(in_a.SetUp("ping0").ok());
  REQUIRE(in_b.SetUp("ping1").ok());
  CHECK(Ping(a, "10.99.0.2"));
}

}  // namespace lab::hv::kernel
