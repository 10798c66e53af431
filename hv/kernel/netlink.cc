// Namespace handles, the route socket and /proc/sys/net writes (see netlink.h).
//
// libnl-route-3 builds the link/address/route requests. Where libnl 3.7 has no API (altnames)
// or drops what the kernel reports (altnames in a dump), raw messages are built and parsed
// with libnl's message helpers, on the same socket.
//
// A Netlink is not safe for concurrent use from several threads: libnl sockets keep one
// sequence counter and one receive buffer. One Netlink per thread is the intended use.

#include "hv/kernel/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace lab::hv::kernel {
namespace {

// Generous socket buffers: a dump of a busy namespace must not overflow the receive queue.
constexpr int kSocketBufferBytes = 4 << 20;
// A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is simply asked for again.
constexpr int kDumpAttempts = 5;
// Longest alternative name the kernel accepts (ALTIFNAMSIZ - 1).
constexpr size_t kMaxAltNameLength = 127;
constexpr size_t kMaxIfNameLength = IFNAMSIZ - 1;

// ---- RAII for libnl objects ----

struct LinkDeleter {
  void operator()(rtnl_link* p) const { rtnl_link_put(p); }
};
struct AddrDeleter {
  void operator()(rtnl_addr* p) const { rtnl_addr_put(p); }
};
struct RouteDeleter {
  void operator()(rtnl_route* p) const { rtnl_route_put(p); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* p) const { nl_addr_put(p); }
};
struct MsgDeleter {
  void operator()(nl_msg* p) const { nlmsg_free(p); }
};
struct CbDeleter {
  void operator()(nl_cb* p) const { nl_cb_put(p); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using RoutePtr = std::unique_ptr<rtnl_route, RouteDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using MsgPtr = std::unique_ptr<nl_msg, MsgDeleter>;
using CbPtr = std::unique_ptr<nl_cb, CbDeleter>;

// Closes an fd on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The kernel's own answer to the last failed request on this thread. libnl folds errnos into
// a few codes (ENETUNREACH becomes "Unspecific failure") and drops the extended ACK text, so
// the error callback keeps both. Per thread, as a Netlink is used by one thread at a time.
struct KernelError {
  int errnum = 0;       // positive errno
  std::string detail;   // NLMSGERR_ATTR_MSG, e.g. "Nexthop has invalid gateway"
};
thread_local KernelError last_kernel_error;

int RecordKernelError(sockaddr_nl*, nlmsgerr* e, void*) {
  last_kernel_error = KernelError{-e->error, ""};
  // libnl hands over the payload of the NLMSG_ERROR message: its header sits just before.
  const auto* hdr = reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(e) - NLMSG_HDRLEN);
  if (hdr->nlmsg_flags & NLM_F_ACK_TLVS) {
    // The TLVs follow the echoed request, of which only the header is left when capped.
    size_t offset = NLMSG_HDRLEN + sizeof(nlmsgerr);
    if (!(hdr->nlmsg_flags & NLM_F_CAPPED)) offset += e->msg.nlmsg_len - NLMSG_HDRLEN;
    if (hdr->nlmsg_len > offset) {
      auto* attrs = reinterpret_cast<nlattr*>(const_cast<char*>(reinterpret_cast<const char*>(hdr)) + offset);
      nlattr* tb[NLMSGERR_ATTR_MAX + 1] = {};
      if (nla_parse(tb, NLMSGERR_ATTR_MAX, attrs, static_cast<int>(hdr->nlmsg_len - offset), nullptr) == 0 &&
          tb[NLMSGERR_ATTR_MSG]) {
        last_kernel_error.detail = nla_get_string(tb[NLMSGERR_ATTR_MSG]);
      }
    }
  }
  return NL_STOP;  // libnl then returns the usual code for e->error
}

// Text for a libnl error code, with the kernel's explanation when `err` came from the kernel.
std::string ErrorText(int err) {
  KernelError k = std::move(last_kernel_error);
  last_kernel_error = KernelError{};
  if (k.errnum == 0 || -nl_syserr2nlerr(k.errnum) != err) return nl_geterror(err);
  // libnl's words where they say as much ("Object exists"), the errno where they do not.
  std::string text = err == -NLE_FAILURE ? ErrnoText(k.errnum) : nl_geterror(err);
  if (!k.detail.empty()) text += " (" + k.detail + ")";
  return text;
}

// "WHAT 'NAME': the kernel's message".
Status NlError(const std::string& what, const std::string& name, int err) {
  return Status::Error(what + " '" + name + "': " + ErrorText(err));
}

bool IsNotFound(int err) { return err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV; }

std::string FormatMac(const unsigned char* bytes, size_t len) {
  std::string out;
  char part[4];
  for (size_t i = 0; i < len; ++i) {
    std::snprintf(part, sizeof part, i == 0 ? "%02x" : ":%02x", bytes[i]);
    out += part;
  }
  return out;
}

Result<NlAddrPtr> ParseMac(const std::string& mac) {
  if (!IsValidMac(mac)) return Status::Error("'" + mac + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  unsigned char bytes[6];
  for (int i = 0; i < 6; ++i) {
    bytes[i] = static_cast<unsigned char>(std::stoul(mac.substr(static_cast<size_t>(i) * 3, 2), nullptr, 16));
  }
  NlAddrPtr addr(nl_addr_build(AF_LLC, bytes, sizeof bytes));
  if (!addr) return Status::Error("out of memory building MAC " + mac);
  return addr;
}

NlAddrPtr Ipv4Addr(Ipv4 ip, int prefix) {
  uint32_t be = htonl(ip.value);
  NlAddrPtr addr(nl_addr_build(AF_INET, &be, sizeof be));
  if (addr) nl_addr_set_prefixlen(addr.get(), prefix);
  return addr;
}

Status CheckIfName(const std::string& name) {
  if (name.empty() || name.size() > kMaxIfNameLength) {
    return Status::Error("interface name '" + name + "' must have 1 to 15 characters");
  }
  return Status::Ok();
}

// The kernel's dev_valid_name(), with a message that says which rule was broken.
Status CheckAltName(const std::string& altname) {
  if (altname.empty() || altname.size() > kMaxAltNameLength) {
    return Status::Error("altname '" + altname + "' must have 1 to 127 characters");
  }
  if (altname == "." || altname == "..") return Status::Error("altname '" + altname + "' is not a valid name");
  for (char c : altname) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c))) {
      return Status::Error("altname '" + altname + "' may not contain spaces, '/' or ':'");
    }
  }
  return Status::Ok();
}

// Turns one RTM_NEWLINK message into a LinkInfo.
LinkInfo ParseLink(nlmsghdr* nlh) {
  LinkInfo info;
  auto* ifi = static_cast<ifinfomsg*>(nlmsg_data(nlh));
  info.index = ifi->ifi_index;
  info.up = (ifi->ifi_flags & IFF_UP) != 0;
  info.carrier = (ifi->ifi_flags & IFF_LOWER_UP) != 0;
  info.running = (ifi->ifi_flags & IFF_RUNNING) != 0;
  nlattr* tb[IFLA_MAX + 1] = {};
  if (nlmsg_parse(nlh, sizeof(ifinfomsg), tb, IFLA_MAX, nullptr) < 0) return info;
  if (tb[IFLA_IFNAME]) info.name = nla_get_string(tb[IFLA_IFNAME]);
  if (tb[IFLA_MASTER]) info.master = static_cast<int>(nla_get_u32(tb[IFLA_MASTER]));
  if (tb[IFLA_ADDRESS]) {
    info.mac = FormatMac(static_cast<const unsigned char*>(nla_data(tb[IFLA_ADDRESS])),
                         static_cast<size_t>(nla_len(tb[IFLA_ADDRESS])));
  }
  if (tb[IFLA_STATS64] && nla_len(tb[IFLA_STATS64]) >= static_cast<int>(sizeof(rtnl_link_stats64))) {
    rtnl_link_stats64 stats;
    std::memcpy(&stats, nla_data(tb[IFLA_STATS64]), sizeof stats);
    info.rx_packets = stats.rx_packets;
    info.tx_packets = stats.tx_packets;
  }
  if (tb[IFLA_LINKINFO]) {
    nlattr* li[IFLA_INFO_MAX + 1] = {};
    if (nla_parse_nested(li, IFLA_INFO_MAX, tb[IFLA_LINKINFO], nullptr) == 0 && li[IFLA_INFO_KIND]) {
      std::string kind = nla_get_string(li[IFLA_INFO_KIND]);
      if (kind == "veth" || kind == "bridge") info.kind = kind;
    }
  }
  if (tb[IFLA_PROP_LIST]) {
    nlattr* prop;
    int rem;
    nla_for_each_nested(prop, tb[IFLA_PROP_LIST], rem) {
      if (nla_type(prop) == IFLA_ALT_IFNAME) info.altnames.emplace_back(nla_get_string(prop));
    }
  }
  return info;
}

Result<AddrInfo> ParseAddr(nlmsghdr* nlh) {
  auto* ifa = static_cast<ifaddrmsg*>(nlmsg_data(nlh));
  nlattr* tb[IFA_MAX + 1] = {};
  if (nlmsg_parse(nlh, sizeof(ifaddrmsg), tb, IFA_MAX, nullptr) < 0) return Status::Error("bad message");
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
  // point-to-point links, where it is the peer.
  nlattr* a = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
  if (!a || nla_len(a) != 4) return Status::Error("no address");
  uint32_t be;
  std::memcpy(&be, nla_data(a), sizeof be);
  AddrInfo info;
  info.index = static_cast<int>(ifa->ifa_index);
  info.address = Cidr{Ipv4{ntohl(be)}, ifa->ifa_prefixlen};
  return info;
}

// A clone of the socket's callbacks that passes every valid message to `on_message`.
CbPtr MessageCallbacks(nl_sock* sock, const std::function<void(nlmsghdr*)>& on_message) {
  CbPtr cb(nl_cb_clone(nl_socket_get_cb(sock)));
  if (!cb) return cb;
  auto trampoline = [](nl_msg* m, void* arg) -> int {
    (*static_cast<const std::function<void(nlmsghdr*)>*>(arg))(nlmsg_hdr(m));
    return NL_OK;
  };
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, trampoline,
            const_cast<std::function<void(nlmsghdr*)>*>(&on_message));
  return cb;
}

// Sends `msg` (already holding its request) and feeds every reply to `on_message` until the
// dump ends or the kernel's ACK arrives. Returns a libnl error code (0 on success).
int Exchange(nl_sock* sock, nl_msg* msg, const std::function<void(nlmsghdr*)>& on_message) {
  CbPtr cb = MessageCallbacks(sock, on_message);
  if (!cb) return -NLE_NOMEM;
  int err = nl_send_auto(sock, msg);
  if (err < 0) return err;
  return nl_recvmsgs(sock, cb.get());
}

// Sends `msg` (which asks for an ACK) and reads until the kernel's ACK, passing each other message
// to `on_message`: replies such as an NLM_F_ECHO may come in a read of their own before the ACK.
int ExchangeAcked(nl_sock* sock, nl_msg* msg, const std::function<void(nlmsghdr*)>& on_message) {
  CbPtr cb = MessageCallbacks(sock, on_message);
  if (!cb) return -NLE_NOMEM;
  bool acked = false;
  nl_cb_set(
      cb.get(), NL_CB_ACK, NL_CB_CUSTOM,
      [](nl_msg*, void* arg) -> int {
        *static_cast<bool*>(arg) = true;
        return NL_STOP;
      },
      &acked);
  int err = nl_send_auto(sock, msg);
  if (err < 0) return err;
  while (!acked) {
    err = nl_recvmsgs(sock, cb.get());
    if (err < 0) return err;
  }
  return 0;
}

// Dumps RTM_GETLINK (all families), RTM_GETADDR or RTM_GETROUTE (IPv4) or RTM_GETNEIGH (the
// bridges' forwarding databases), asking again when a concurrent
// change interrupted the dump; `reset` forgets what a previous attempt collected.
int Dump(nl_sock* sock, int type, const std::function<void(nlmsghdr*)>& on_message,
         const std::function<void()>& reset) {
  int err = 0;
  for (int attempt = 0; attempt < kDumpAttempts; ++attempt) {
    reset();
    MsgPtr msg(nlmsg_alloc_simple(type, NLM_F_DUMP));
    if (!msg) return -NLE_NOMEM;
    if (type == RTM_GETLINK) {
      ifinfomsg ifi = {};
      ifi.ifi_family = AF_UNSPEC;
      if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0) return -NLE_NOMEM;
    } else if (type == RTM_GETROUTE) {
      rtmsg rtm = {};
      rtm.rtm_family = AF_INET;
      if (nlmsg_append(msg.get(), &rtm, sizeof rtm, NLMSG_ALIGNTO) < 0) return -NLE_NOMEM;
    } else if (type == RTM_GETNEIGH) {
      ndmsg ndm = {};
      ndm.ndm_family = AF_BRIDGE;
      if (nlmsg_append(msg.get(), &ndm, sizeof ndm, NLMSG_ALIGNTO) < 0) return -NLE_NOMEM;
    } else {
      ifaddrmsg ifa = {};
      ifa.ifa_family = AF_INET;
      if (nlmsg_append(msg.get(), &ifa, sizeof ifa, NLMSG_ALIGNTO) < 0) return -NLE_NOMEM;
    }
    err = Exchange(sock, msg.get(), on_message);
    if (err != -NLE_DUMP_INTR) return err;
  }
  return err;
}

// The ifindex of `name` or an error naming `what` failed on it.
Result<int> IndexOf(Netlink& nl, const std::string& what, const std::string& name) {
  auto link = nl.FindLink(name);
  if (!link.ok()) return link.status();
  if (!*link) return Status::Error(what + " '" + name + "': no such interface");
  return (*link)->index;
}

// An rtnl_link carrying only the ifindex: the "orig" of rtnl_link_change().
Result<LinkPtr> LinkByIndex(int index) {
  LinkPtr link(rtnl_link_alloc());
  if (!link) return Status::Error("out of memory");
  rtnl_link_set_ifindex(link.get(), index);
  return link;
}

}  // namespace

// ---- NetNs ----

NetNs& NetNs::operator=(NetNs&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

NetNs::~NetNs() {
  if (fd_ >= 0) ::close(fd_);
}

Result<NetNs> NetNs::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open network namespace '" + path + "'");
  return NetNs(fd);
}

Result<NetNs> NetNs::Current() { return Open("/proc/thread-self/ns/net"); }

Status WithNetNs(const NetNs& ns, const std::function<Status()>& fn) {
  if (!ns.valid()) return Status::Error("enter network namespace: invalid handle");
  auto original = NetNs::Current();
  if (!original.ok()) return original.status();
  if (::setns(ns.fd(), CLONE_NEWNET) != 0) return ErrnoStatus("enter network namespace");
  // Switch back even when fn throws: a thread left in a lab's namespace would make every later
  // request act in the wrong place.
  struct Restore {
    int fd;
    bool& ok;
    ~Restore() { ok = ::setns(fd, CLONE_NEWNET) == 0; }
  };
  bool restored = false;
  Status result;
  {
    Restore restore{original->fd(), restored};
    result = fn();
  }
  if (!restored) {
    return Status::Error("leave network namespace: " + ErrnoText(errno) +
                         (result.ok() ? std::string() : " (after: " + result.message() + ")"));
  }
  return result;
}

// ---- Netlink ----

Netlink::Netlink(Netlink&& o) noexcept : sock_(o.sock_) { o.sock_ = nullptr; }

Netlink& Netlink::operator=(Netlink&& o) noexcept {
  if (this != &o) {
    if (sock_) nl_socket_free(sock_);
    sock_ = o.sock_;
    o.sock_ = nullptr;
  }
  return *this;
}

Netlink::~Netlink() {
  if (sock_) nl_socket_free(sock_);
}

Result<Netlink> Netlink::In(const NetNs& ns) {
  nl_sock* sock = nl_socket_alloc();
  if (!sock) return Status::Error("netlink: out of memory");
  Netlink nl(sock);  // owns the socket from here on
  // A socket belongs to the namespace it was created in for its whole life, whatever the
  // thread does afterwards.
  Status st = WithNetNs(ns, [&]() -> Status {
    int err = nl_connect(sock, NETLINK_ROUTE);
    if (err < 0) return Status::Error(std::string("netlink connect: ") + nl_geterror(err));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  nl_socket_set_buffer_size(sock, kSocketBufferBytes, kSocketBufferBytes);
  // The kernel explains most refusals in an extended ACK; a capped ACK does not echo the request.
  int on = 1;
  ::setsockopt(nl_socket_get_fd(sock), SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on);
  ::setsockopt(nl_socket_get_fd(sock), SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);
  nl_socket_modify_err_cb(sock, NL_CB_CUSTOM, RecordKernelError, nullptr);
  nl_socket_enable_msg_peek(sock);  // a dump message larger than a page is read whole
  return nl;
}

Status Netlink::CreateVeth(const std::string& name, const NetNs* name_ns, const std::string& peer,
                           const NetNs* peer_ns, const std::optional<std::string>& mac, bool up, int* index) {
  if (index) *index = 0;
  LAB_RETURN_IF_ERROR(CheckIfName(name).Prefixed("create veth"));
  LAB_RETURN_IF_ERROR(CheckIfName(peer).Prefixed("create veth '" + name + "'"));
  LinkPtr link(rtnl_link_veth_alloc());
  if (!link) return Status::Error("create veth '" + name + "': out of memory");
  LinkPtr peer_link(rtnl_link_veth_get_peer(link.get()));  // a reference of its own
  rtnl_link_set_name(link.get(), name.c_str());
  rtnl_link_set_name(peer_link.get(), peer.c_str());
  // One queue each way, said explicitly: left to the kernel, each end is made with a queue per
  // CPU and then cut to one, and that cut waits for an RCU grace period while holding the RTNL
  // lock (veth_init_queues), twice per pair, stalling every other netlink request meanwhile.
  for (rtnl_link* end : {link.get(), peer_link.get()}) {
    rtnl_link_set_num_tx_queues(end, 1);
    rtnl_link_set_num_rx_queues(end, 1);
  }
  // Only `name` can be made up in the same request: the kernel opens the peer before the two are
  // paired, and a veth without its peer refuses to open (ENOTCONN).
  if (up) rtnl_link_set_flags(link.get(), IFF_UP);
  if (name_ns) rtnl_link_set_ns_fd(link.get(), name_ns->fd());
  if (peer_ns) rtnl_link_set_ns_fd(peer_link.get(), peer_ns->fd());
  if (mac) {
    auto addr = ParseMac(*mac);
    if (!addr.ok()) return addr.status().Prefixed("create veth '" + name + "'");
    rtnl_link_set_addr(link.get(), addr->get());
  }
  // One message creates both ends in their namespaces, so nothing is left half-made on error.
  // NLM_F_ECHO: the kernel sends back `name`'s new link (its peer is configured without echo).
  nl_msg* raw = nullptr;
  int err = rtnl_link_build_add_request(link.get(), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, &raw);
  if (err < 0) return NlError("create veth", name, err);
  MsgPtr msg(raw);
  int echoed = 0;
  err = ExchangeAcked(sock_, msg.get(), [&](nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWLINK) return;
    LinkInfo l = ParseLink(nlh);
    if (l.name == name) echoed = l.index;
  });
  if (err < 0) return NlError("create veth", name, err);
  if (index && !name_ns) *index = echoed;
  return Status::Ok();
}

Status Netlink::CreateBridge(const std::string& name) {
  LAB_RETURN_IF_ERROR(CheckIfName(name).Prefixed("create bridge"));
  LinkPtr link(rtnl_link_bridge_alloc());
  if (!link) return Status::Error("create bridge '" + name + "': out of memory");
  rtnl_link_set_name(link.get(), name.c_str());
  int err = rtnl_link_add(sock_, link.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err < 0) return NlError("create bridge", name, err);
  return Status::Ok();
}

Status Netlink::SetMaster(const std::string& port, const std::string& bridge) {
  auto port_index = IndexOf(*this, "attach port", port);
  if (!port_index.ok()) return port_index.status();
  auto bridge_index = IndexOf(*this, "attach '" + port + "' to bridge", bridge);
  if (!bridge_index.ok()) return bridge_index.status();
  auto orig = LinkByIndex(*port_index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  rtnl_link_set_master(changes.get(), *bridge_index);
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) return Status::Error("attach '" + port + "' to bridge '" + bridge + "': " + ErrorText(err));
  return Status::Ok();
}

Status Netlink::AttachUp(const std::string& port, const std::string& bridge) {
  const std::string what = "attach '" + port + "' to bridge '" + bridge + "'";
  if (port.empty() || port.size() > kMaxIfNameLength) return Status::Error(what + ": no such interface");
  auto bridge_index = IndexOf(*this, "attach '" + port + "' to bridge", bridge);
  if (!bridge_index.ok()) return bridge_index.status();
  // RTM_SETLINK naming the port (the kernel looks it up by name): master and IFF_UP together.
  MsgPtr msg(nlmsg_alloc_simple(RTM_SETLINK, 0));
  if (!msg) return Status::Error(what + ": out of memory");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      nla_put_string(msg.get(), IFLA_IFNAME, port.c_str()) < 0 ||
      nla_put_u32(msg.get(), IFLA_MASTER, static_cast<uint32_t>(*bridge_index)) < 0)
    return Status::Error(what + ": message too big");
  int err = nl_send_auto(sock_, msg.get());
  if (err >= 0) err = nl_wait_for_ack(sock_);
  if (IsNotFound(err)) return Status::Error(what + ": no such interface");
  if (err < 0) return Status::Error(what + ": " + ErrorText(err));
  return Status::Ok();
}

Status Netlink::ClearMaster(const std::string& port) {
  auto index = IndexOf(*this, "detach port", port);
  if (!index.ok()) return index.status();
  auto orig = LinkByIndex(*index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  rtnl_link_set_master(changes.get(), 0);
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) return NlError("detach port", port, err);
  return Status::Ok();
}

Status Netlink::SetUp(const std::string& name, bool up) {
  const char* what = up ? "set up" : "set down";
  auto index = IndexOf(*this, what, name);
  if (!index.ok()) return index.status();
  auto orig = LinkByIndex(*index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  if (up) {
    rtnl_link_set_flags(changes.get(), IFF_UP);
  } else {
    rtnl_link_unset_flags(changes.get(), IFF_UP);
  }
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) return NlError(what, name, err);
  return Status::Ok();
}

Status Netlink::SetPortLearning(const std::string& port, bool on) {
  const char* what = on ? "turn on learning of bridge port" : "turn off learning of bridge port";
  auto index = IndexOf(*this, what, port);
  if (!index.ok()) return index.status();
  // RTM_SETLINK for the bridge (AF_BRIDGE) with IFLA_PROTINFO { IFLA_BRPORT_LEARNING }.
  nl_msg* msg = nlmsg_alloc_simple(RTM_SETLINK, 0);
  if (!msg) return Status::Error(std::string(what) + " '" + port + "': out of memory");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_BRIDGE;
  ifi.ifi_index = *index;
  nlattr* info = nullptr;
  if (nlmsg_append(msg, &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      !(info = nla_nest_start(msg, IFLA_PROTINFO | NLA_F_NESTED)) ||
      nla_put_u8(msg, IFLA_BRPORT_LEARNING, on ? 1 : 0) < 0) {
    nlmsg_free(msg);
    return Status::Error(std::string(what) + " '" + port + "': message too big");
  }
  nla_nest_end(msg, info);
  int err = nl_send_sync(sock_, msg);  // frees msg
  if (err < 0) return NlError(what, port, err);
  return Status::Ok();
}

Status Netlink::SetMac(const std::string& name, const std::string& mac) {
  auto addr = ParseMac(mac);
  if (!addr.ok()) return addr.status().Prefixed("set MAC of '" + name + "'");
  auto index = IndexOf(*this, "set MAC of", name);
  if (!index.ok()) return index.status();
  auto orig = LinkByIndex(*index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  rtnl_link_set_addr(changes.get(), addr->get());
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) return NlError("set MAC " + mac + " of", name, err);
  return Status::Ok();
}

Status Netlink::AddAltName(const std::string& name, const std::string& altname) {
  LAB_RETURN_IF_ERROR(CheckAltName(altname).Prefixed("add altname to '" + name + "'"));
  if (name.empty() || name.size() > kMaxAltNameLength)
    return Status::Error("add altname '" + altname + "' to '" + name + "': no such interface");
  // libnl 3.7 has no altname API: RTM_NEWLINKPROP { ifinfomsg, IFLA_PROP_LIST { IFLA_ALT_IFNAME } },
  // the link named in the request itself (the kernel looks it up by name), so no lookup first.
  MsgPtr msg(nlmsg_alloc_simple(RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL | NLM_F_APPEND));
  if (!msg) return Status::Error("add altname: out of memory");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      nla_put_string(msg.get(), name.size() <= kMaxIfNameLength ? IFLA_IFNAME : IFLA_ALT_IFNAME, name.c_str()) < 0)
    return Status::Error("add altname: message too big");
  nlattr* props = nla_nest_start(msg.get(), IFLA_PROP_LIST);
  if (!props || nla_put_string(msg.get(), IFLA_ALT_IFNAME, altname.c_str()) < 0) {
    return Status::Error("add altname: message too big");
  }
  nla_nest_end(msg.get(), props);
  int err = nl_send_auto(sock_, msg.get());
  if (err >= 0) err = nl_wait_for_ack(sock_);
  if (IsNotFound(err)) return Status::Error("add altname '" + altname + "' to '" + name + "': no such interface");
  if (err == -NLE_EXIST) {
    // Already this link's (added before, or concurrently), or another link's name: ask which.
    auto link = FindLink(name);
    if (!link.ok()) return link.status();
    if (*link)
      for (const auto& existing : (*link)->altnames)
        if (existing == altname) return Status::Ok();
  }
  if (err < 0) return NlError("add altname '" + altname + "' to", name, err);
  return Status::Ok();
}

Status Netlink::DeleteAltName(const std::string& name, const std::string& altname) {
  LAB_RETURN_IF_ERROR(CheckAltName(altname).Prefixed("remove altname from '" + name + "'"));
  auto index = IndexOf(*this, "remove altname '" + altname + "' from", name);
  if (!index.ok()) return index.status();
  // RTM_DELLINKPROP { ifinfomsg (the link by index), IFLA_PROP_LIST { IFLA_ALT_IFNAME } }.
  MsgPtr msg(nlmsg_alloc_simple(RTM_DELLINKPROP, 0));
  if (!msg) return Status::Error("remove altname: out of memory");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = *index;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0) return Status::Error("remove altname: message too big");
  nlattr* props = nla_nest_start(msg.get(), IFLA_PROP_LIST);
  if (!props || nla_put_string(msg.get(), IFLA_ALT_IFNAME, altname.c_str()) < 0)
    return Status::Error("remove altname: message too big");
  nla_nest_end(msg.get(), props);
  int err = nl_send_auto(sock_, msg.get());
  if (err >= 0) err = nl_wait_for_ack(sock_);
  // The kernel answers ENOENT for a name the link does not have: already gone.
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NOATTR || (err < 0 && last_kernel_error.errnum == ENOENT)) {
    last_kernel_error = KernelError{};
    return Status::Ok();
  }
  if (err < 0) return NlError("remove altname '" + altname + "' from", name, err);
  return Status::Ok();
}

Status Netlink::AddAddress(const std::string& name, const Cidr& address, int known_index) {
  const std::string what = "add address " + address.ToString() + " to";
  auto index = known_index > 0 ? Result<int>(known_index) : IndexOf(*this, what, name);
  if (!index.ok()) return index.status();
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = Ipv4Addr(address.addr, address.prefix);
  if (!addr || !local) return Status::Error(what + " '" + name + "': out of memory");
  rtnl_addr_set_ifindex(addr.get(), *index);
  rtnl_addr_set_family(addr.get(), AF_INET);
  int err = rtnl_addr_set_local(addr.get(), local.get());
  if (err >= 0) {
    rtnl_addr_set_prefixlen(addr.get(), address.prefix);
    err = rtnl_addr_add(sock_, addr.get(), NLM_F_CREATE | NLM_F_EXCL);
  }
  if (err == -NLE_EXIST) return Status::Ok();
  if (err < 0) return NlError(what, name, err);
  return Status::Ok();
}

Status Netlink::DeleteAddress(const std::string& name, const Cidr& address) {
  const std::string what = "delete address " + address.ToString() + " from";
  auto link = FindLink(name);
  if (!link.ok()) return link.status();
  if (!*link) return Status::Ok();  // the interface is gone, and its addresses with it
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = Ipv4Addr(address.addr, address.prefix);
  if (!addr || !local) return Status::Error(what + " '" + name + "': out of memory");
  rtnl_addr_set_ifindex(addr.get(), (*link)->index);
  rtnl_addr_set_family(addr.get(), AF_INET);
  int err = rtnl_addr_set_local(addr.get(), local.get());
  if (err >= 0) {
    rtnl_addr_set_prefixlen(addr.get(), address.prefix);
    err = rtnl_addr_delete(sock_, addr.get(), 0);
  }
  if (err == -NLE_NOADDR || IsNotFound(err)) return Status::Ok();
  if (err < 0) return NlError(what, name, err);
  return Status::Ok();
}

Status Netlink::SetDefaultRoute(Ipv4 gateway) {
  const std::string what = "set default route via " + gateway.ToString();
  RoutePtr route(rtnl_route_alloc());
  NlAddrPtr dst = Ipv4Addr(Ipv4{0}, 0);
  NlAddrPtr gw = Ipv4Addr(gateway, 32);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!route || !dst || !gw || !nh) {
    if (nh) rtnl_route_nh_free(nh);
    return Status::Error(what + ": out of memory");
  }
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  int err = rtnl_route_set_dst(route.get(), dst.get());
  if (err < 0) {
    rtnl_route_nh_free(nh);
    return Status::Error(what + ": " + ErrorText(err));
  }
  rtnl_route_nh_set_gateway(nh, gw.get());
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here on
  err = rtnl_route_add(sock_, route.get(), NLM_F_REPLACE | NLM_F_CREATE);
  if (err < 0) return Status::Error(what + ": " + ErrorText(err));
  return Status::Ok();
}

Status Netlink::DeleteDefaultRoute() {
  // A raw request: libnl fills in a protocol the kernel would then match, and any default route
  // is meant here, whoever made it (protocol 0 and scope "nowhere" match every one).
  MsgPtr msg(nlmsg_alloc_simple(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK));
  if (!msg) return Status::Error("delete the default route: out of memory");
  rtmsg rtm = {};
  rtm.rtm_family = AF_INET;
  rtm.rtm_table = RT_TABLE_MAIN;
  rtm.rtm_scope = RT_SCOPE_NOWHERE;
  if (nlmsg_append(msg.get(), &rtm, sizeof rtm, NLMSG_ALIGNTO) < 0 || nla_put_u32(msg.get(), RTA_TABLE, RT_TABLE_MAIN) < 0)
    return Status::Error("delete the default route: message too big");
  int err = ExchangeAcked(sock_, msg.get(), [](nlmsghdr*) {});
  if (err == -NLE_OBJ_NOTFOUND || IsNotFound(err)) return Status::Ok();
  if (err < 0) return Status::Error("delete the default route: " + ErrorText(err));
  return Status::Ok();
}

Status Netlink::DeleteDefaultRoute(int index) {
  const std::string what = "delete the default route through link " + std::to_string(index);
  RoutePtr route(rtnl_route_alloc());
  NlAddrPtr dst = Ipv4Addr(Ipv4{0}, 0);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!route || !dst || !nh) {
    if (nh) rtnl_route_nh_free(nh);
    return Status::Error(what + ": out of memory");
  }
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  // Any scope, any protocol (libnl's default protocol is "static", which a route set by
  // SetDefaultRoute is not).
  rtnl_route_set_scope(route.get(), RT_SCOPE_NOWHERE);
  rtnl_route_set_protocol(route.get(), RTPROT_UNSPEC);
  int err = rtnl_route_set_dst(route.get(), dst.get());
  if (err < 0) {
    rtnl_route_nh_free(nh);
    return Status::Error(what + ": " + ErrorText(err));
  }
  // The kernel deletes only a default route whose next hop leaves through this link.
  rtnl_route_nh_set_ifindex(nh, index);
  rtnl_route_add_nexthop(route.get(), nh);
  err = rtnl_route_delete(sock_, route.get(), 0);
  if (err == -NLE_OBJ_NOTFOUND || (err < 0 && last_kernel_error.errnum == ESRCH)) {
    last_kernel_error = KernelError{};
    return Status::Ok();
  }
  if (err < 0) return Status::Error(what + ": " + ErrorText(err));
  return Status::Ok();
}

Status Netlink::DeleteLink(const std::string& name) {
  auto link = FindLink(name);
  if (!link.ok()) return link.status();
  if (!*link) return Status::Ok();
  auto orig = LinkByIndex((*link)->index);
  if (!orig.ok()) return orig.status();
  int err = rtnl_link_delete(sock_, orig->get());
  if (IsNotFound(err)) return Status::Ok();  // deleted meanwhile (e.g. its veth peer went)
  if (err < 0) return NlError("delete link", name, err);
  return Status::Ok();
}

Status Netlink::MoveLink(const std::string& name, const NetNs& target, const std::string& new_name) {
  if (!new_name.empty()) LAB_RETURN_IF_ERROR(CheckIfName(new_name).Prefixed("move link '" + name + "'"));
  auto index = IndexOf(*this, "move link", name);
  if (!index.ok()) return index.status();
  // The kernel moves first and renames after, so a name taken in the target would leave the
  // link moved under its old name: refuse before anything moves.
  if (!new_name.empty()) {
    auto there = Netlink::In(target);
    if (!there.ok()) return there.status().Prefixed("move link '" + name + "'");
    auto taken = there->FindLink(new_name);
    if (!taken.ok()) return taken.status().Prefixed("move link '" + name + "'");
    if (*taken) {
      return Status::Error("move link '" + name + "' as '" + new_name +
                           "': the name is taken in the target namespace");
    }
  }
  auto orig = LinkByIndex(*index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  rtnl_link_set_ns_fd(changes.get(), target.fd());
  if (!new_name.empty()) rtnl_link_set_name(changes.get(), new_name.c_str());
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) {
    return Status::Error("move link '" + name + "'" + (new_name.empty() ? "" : " as '" + new_name + "'") +
                         ": " + ErrorText(err));
  }
  return Status::Ok();
}

Status Netlink::Rename(const std::string& name, const std::string& new_name) {
  auto index = IndexOf(*this, "rename link", name);
  if (!index.ok()) return index.status();
  auto orig = LinkByIndex(*index);
  if (!orig.ok()) return orig.status();
  LinkPtr changes(rtnl_link_alloc());
  rtnl_link_set_name(changes.get(), new_name.c_str());
  int err = rtnl_link_change(sock_, orig->get(), changes.get(), 0);
  if (err < 0) return Status::Error("rename link '" + name + "' to '" + new_name + "': " + ErrorText(err));
  return Status::Ok();
}

Result<std::vector<LinkInfo>> Netlink::Links() {
  std::vector<LinkInfo> links;
  int err = Dump(
      sock_, RTM_GETLINK,
      [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type == RTM_NEWLINK) links.push_back(ParseLink(nlh));
      },
      [&] { links.clear(); });
  if (err < 0) return Status::Error(std::string("list links: ") + ErrorText(err));
  return links;
}

Result<std::vector<AddrInfo>> Netlink::Addresses() {
  std::vector<AddrInfo> addrs;
  int err = Dump(
      sock_, RTM_GETADDR,
      [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWADDR) return;
        if (static_cast<ifaddrmsg*>(nlmsg_data(nlh))->ifa_family != AF_INET) return;
        auto a = ParseAddr(nlh);
        if (a.ok()) addrs.push_back(*a);
      },
      [&] { addrs.clear(); });
  if (err < 0) return Status::Error(std::string("list addresses: ") + ErrorText(err));
  return addrs;
}

Result<std::vector<RouteInfo>> Netlink::DefaultRoutes() {
  std::vector<RouteInfo> routes;
  int err = Dump(
      sock_, RTM_GETROUTE,
      [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWROUTE) return;
        auto* rtm = static_cast<rtmsg*>(nlmsg_data(nlh));
        if (rtm->rtm_family != AF_INET || rtm->rtm_dst_len != 0 || rtm->rtm_type != RTN_UNICAST) return;
        nlattr* tb[RTA_MAX + 1] = {};
        if (nlmsg_parse(nlh, sizeof(rtmsg), tb, RTA_MAX, nullptr) < 0) return;
        uint32_t table = tb[RTA_TABLE] ? nla_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
        if (table != RT_TABLE_MAIN) return;
        RouteInfo r;
        if (tb[RTA_GATEWAY] && nla_len(tb[RTA_GATEWAY]) == 4) {
          uint32_t be;
          std::memcpy(&be, nla_data(tb[RTA_GATEWAY]), sizeof be);
          r.gateway = Ipv4{ntohl(be)};
        }
        if (tb[RTA_OIF]) r.oif = static_cast<int>(nla_get_u32(tb[RTA_OIF]));
        routes.push_back(r);
      },
      [&] { routes.clear(); });
  if (err < 0) return Status::Error(std::string("list routes: ") + ErrorText(err));
  return routes;
}

Result<int> Netlink::FlushFdb(const std::string& bridge, const std::string& mac) {
  const std::string what = "flush " + mac + " from the forwarding table of";
  auto br = FindLink(bridge);
  if (!br.ok()) return br.status();
  if (!*br) return 0;
  auto lladdr = ParseMac(mac);
  if (!lladdr.ok()) return lladdr.status().Prefixed(what + " '" + bridge + "'");
  struct Entry {
    int port = 0;
    uint16_t state = 0;
    std::optional<uint16_t> vlan;
  };
  std::vector<Entry> stale;
  const int bridge_index = (*br)->index;
  int err = Dump(
      sock_, RTM_GETNEIGH,
      [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWNEIGH) return;
        auto* ndm = static_cast<ndmsg*>(nlmsg_data(nlh));
        if (ndm->ndm_family != AF_BRIDGE || (ndm->ndm_state & NUD_PERMANENT)) return;
        nlattr* tb[NDA_MAX + 1] = {};
        if (nlmsg_parse(nlh, sizeof(ndmsg), tb, NDA_MAX, nullptr) < 0) return;
        if (!tb[NDA_MASTER] || static_cast<int>(nla_get_u32(tb[NDA_MASTER])) != bridge_index) return;
        if (!tb[NDA_LLADDR] || FormatMac(static_cast<const unsigned char*>(nla_data(tb[NDA_LLADDR])),
                                         static_cast<size_t>(nla_len(tb[NDA_LLADDR]))) != mac)
          return;
        Entry e{ndm->ndm_ifindex, ndm->ndm_state, std::nullopt};
        if (tb[NDA_VLAN]) e.vlan = nla_get_u16(tb[NDA_VLAN]);
        stale.push_back(e);
      },
      [&] { stale.clear(); });
  if (err < 0) return Status::Error(what + " '" + bridge + "': " + ErrorText(err));
  int removed = 0;
  for (const auto& e : stale) {
    MsgPtr msg(nlmsg_alloc_simple(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK));
    if (!msg) return Status::Error(what + " '" + bridge + "': out of memory");
    ndmsg ndm = {};
    ndm.ndm_family = AF_BRIDGE;
    ndm.ndm_ifindex = e.port;
    ndm.ndm_state = e.state;
    ndm.ndm_flags = NTF_MASTER;
    if (nlmsg_append(msg.get(), &ndm, sizeof ndm, NLMSG_ALIGNTO) < 0 ||
        nla_put(msg.get(), NDA_LLADDR, static_cast<int>(nl_addr_get_len(lladdr->get())),
                nl_addr_get_binary_addr(lladdr->get())) < 0 ||
        (e.vlan && nla_put_u16(msg.get(), NDA_VLAN, *e.vlan) < 0))
      return Status::Error(what + " '" + bridge + "': message too big");
    err = ExchangeAcked(sock_, msg.get(), [](nlmsghdr*) {});
    // Aged out or relearned meanwhile: gone is what was wanted.
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && !IsNotFound(err))
      return Status::Error(what + " '" + bridge + "': " + ErrorText(err));
    if (err >= 0) ++removed;
  }
  return removed;
}

Result<std::optional<LinkInfo>> Netlink::FindLink(const std::string& name) {
  if (name.empty() || name.size() > kMaxAltNameLength) return std::optional<LinkInfo>();
  // A targeted RTM_GETLINK: the kernel looks names up in one table with the altnames, so
  // IFLA_IFNAME finds either; longer names only fit IFLA_ALT_IFNAME.
  MsgPtr msg(nlmsg_alloc_simple(RTM_GETLINK, 0));
  if (!msg) return Status::Error("find link: out of memory");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
      nla_put_string(msg.get(), name.size() <= kMaxIfNameLength ? IFLA_IFNAME : IFLA_ALT_IFNAME,
                     name.c_str()) < 0) {
    return Status::Error("find link: message too big");
  }
  std::optional<LinkInfo> found;
  int err = Exchange(sock_, msg.get(), [&](nlmsghdr* nlh) {
    if (nlh->nlmsg_type == RTM_NEWLINK) found = ParseLink(nlh);
  });
  if (err >= 0 && found) {
    // The reply is not followed by an ACK we asked for (nl_send_auto requests one): read it.
    err = nl_wait_for_ack(sock_);
  }
  if (IsNotFound(err)) return std::optional<LinkInfo>();
  if (err < 0) return Status::Error("find link '" + name + "': " + ErrorText(err));
  return found;
}

// ---- sysctl ----

Status WriteNetSysctl(const NetNs& ns, const std::string& key, const std::string& value) {
  if (key.empty() || key.find("..") != std::string::npos || key.front() == '/') {
    return Status::Error("sysctl net." + key + ": invalid key");
  }
  const std::string path = "/proc/sys/net/" + key;
  // /proc/sys/net resolves to the namespace of the thread that opens it, so only the open
  // has to happen inside.
  return WithNetNs(ns, [&]() -> Status {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("sysctl net." + key);
    Fd file(fd);
    ssize_t n = ::write(file.get(), value.data(), value.size());
    if (n < 0) return ErrnoStatus("sysctl net." + key + " = " + value);
    if (static_cast<size_t>(n) != value.size()) {
      return Status::Error("sysctl net." + key + " = " + value + ": short write");
    }
    return Status::Ok();
  });
}

}  // namespace lab::hv::kernel
