#include "hv/kernel/announce.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lab::hv::kernel {
namespace {

constexpr uint16_t kEtherArp = 0x0806;
constexpr uint16_t kEtherRarp = 0x8035;
constexpr uint16_t kArpRequest = 1;
constexpr uint16_t kRarpRequest = 3;
constexpr int kRunningWaitMs = 2000;
constexpr useconds_t kSpacingUs = 20000;

void Put16(std::string& f, uint16_t v) {
  f.push_back(static_cast<char>(v >> 8));
  f.push_back(static_cast<char>(v & 0xff));
}
void Put32(std::string& f, uint32_t v) {
  Put16(f, static_cast<uint16_t>(v >> 16));
  Put16(f, static_cast<uint16_t>(v & 0xffff));
}
std::string MacBytes(const std::string& mac) {
  std::string b;
  for (size_t i = 0; i < 6; ++i) b.push_back(static_cast<char>(std::stoul(mac.substr(i * 3, 2), nullptr, 16)));
  return b;
}

}  // namespace

std::string AnnouncementFrame(const std::string& mac, const std::optional<Ipv4>& address) {
  const std::string own = MacBytes(mac);
  std::string f(6, '\xff');  // to everyone
  f += own;
  Put16(f, address ? kEtherArp : kEtherRarp);
  Put16(f, 1);       // Ethernet
  Put16(f, 0x0800);  // IPv4
  f.push_back(6);
  f.push_back(4);
  Put16(f, address ? kArpRequest : kRarpRequest);
  const uint32_t ip = address ? address->value : 0;
  // Sender and target are both the machine: a gratuitous ARP asks for its own address (RARP
  // for its own MAC), which no one answers and everyone learns from.
  f += own;
  Put32(f, ip);
  f += address ? std::string(6, '\0') : own;
  Put32(f, ip);
  f.resize(std::max<size_t>(f.size(), 60), '\0');  // the Ethernet minimum, padded
  return f;
}

Status Announce(const NetNs& ns, const std::string& ifname, const std::string& mac,
                const std::optional<Ipv4>& address, int count) {
  const std::string what = "announce " + mac + " from '" + ifname + "'";
  if (!IsValidMac(mac)) return Status::Error(what + ": not a MAC address");
  const std::string frame = AnnouncementFrame(mac, address);
  // A link just made is up before its queue is: until the kernel's link watch activates it
  // (IFF_RUNNING), frames sent are dropped. Wait for that, briefly.
  auto nl = Netlink::In(ns);
  if (!nl) return nl.status().Prefixed(what);
  unsigned index = 0;
  for (int waited_ms = 0;; waited_ms += 5) {
    auto link = nl->FindLink(ifname);
    if (!link) return link.status().Prefixed(what);
    if (!*link) return Status::Error(what + ": no such interface");
    index = static_cast<unsigned>((*link)->index);
    if ((*link)->running) break;
    if (!(*link)->up) return Status::Error(what + ": the link is down");
    if (waited_ms >= kRunningWaitMs) return Status::Error(what + ": the link does not come up (no carrier)");
    ::usleep(5000);
  }
  // The socket lives in the namespace it is made in.
  return WithNetNs(ns, [&]() -> Status {
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::Error(what + ": packet socket: " + std::strerror(errno));
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(index);
    to.sll_halen = 6;
    std::memset(to.sll_addr, 0xff, 6);
    Status st = Status::Ok();
    // Several, a little apart, as a migrated VM's announcements go: one lost frame loses nothing.
    for (int i = 0; i < count && st.ok(); ++i) {
      if (i > 0) ::usleep(kSpacingUs);
      if (::sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
        st = Status::Error(what + ": " + std::strerror(errno));
    }
    ::close(fd);
    return st;
  });
}

}  // namespace lab::hv::kernel
