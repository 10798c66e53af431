// Netlink (libnl-route-3) and nftables (libnftables) operations inside one network namespace.
//
// A NetNs is a move-only handle (an fd) on a network namespace, opened from a path such as a
// bind-mounted handle (/run/lab/<lab>/m/<machine>/ns/net) or /proc/self/ns/net. A Netlink is a
// route socket *created inside* a given namespace, so every request it sends acts there, from
// any thread, without the caller switching namespaces. No `ip`/`nft` process is ever spawned.
//
// Deleting something that is already gone is success ("already gone"). A failing multi-step
// operation undoes its own partial work where it can (e.g. a veth whose peer move failed).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/net.h"
#include "base/status.h"

struct nl_sock;

namespace lab::hv::kernel {

class NetNs {
 public:
  NetNs() = default;
  explicit NetNs(int fd) : fd_(fd) {}
  NetNs(NetNs&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  NetNs& operator=(NetNs&& o) noexcept;
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;
  ~NetNs();

  /// Opens a namespace file (O_RDONLY|O_CLOEXEC).
  static Result<NetNs> Open(const std::string& path);
  /// The calling thread's current network namespace.
  static Result<NetNs> Current();
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

/// Runs `fn` with the calling thread switched into `ns`, then switches back (even on error).
Status WithNetNs(const NetNs& ns, const std::function<Status()>& fn);

struct LinkInfo {
  int index = 0;
  std::string name;
  std::vector<std::string> altnames;
  std::string kind;        // "veth", "bridge", "" for others
  int master = 0;          // ifindex of the bridge it is a port of, 0 for none
  bool up = false;         // IFF_UP: administratively up
  bool carrier = false;    // IFF_LOWER_UP: up with carrier (a veth: its peer is up too)
  bool running = false;    // IFF_RUNNING: operationally up, its queue active (frames leave)
  std::string mac;         // lower case aa:bb:cc:dd:ee:ff
  uint64_t rx_packets = 0; // the link's counters (IFLA_STATS64)
  uint64_t tx_packets = 0;
};

struct AddrInfo {
  int index = 0;           // ifindex
  Cidr address;
};

/// An IPv4 default route of the main table.
struct RouteInfo {
  Ipv4 gateway;            // 0.0.0.0 for a route without one (on-link)
  int oif = 0;             // ifindex it leaves through, 0 when not said
};

/// Not for concurrent use: a Netlink keeps one sequence counter and one receive buffer, so
/// give each thread its own (they are cheap).
class Netlink {
 public:
  Netlink(Netlink&&) noexcept;
  Netlink& operator=(Netlink&&) noexcept;
  ~Netlink();

  /// A route socket living in `ns`.
  static Result<Netlink> In(const NetNs& ns);

  /// Creates a veth pair: `name` in this socket's namespace (or in `name_ns` when given) and
  /// `peer` in `peer_ns` (or here when null). `mac` (optional) is set on `name`; with `up`, `name`
  /// is made up in the same request (the peer cannot be: bring it up with AttachUp or SetUp).
  /// Fails with EEXIST text when `name` exists. `index`, when given, receives `name`'s ifindex
  /// from the kernel's echo of the request (Linux 6.3+; 0 where the kernel echoes nothing or
  /// `name` was made in `name_ns`), so that what follows need not look the new link up: a lookup
  /// of a link whose carrier is still off makes the kernel settle its link state first, an RCU
  /// grace period under the RTNL lock.
  Status CreateVeth(const std::string& name, const NetNs* name_ns, const std::string& peer,
                    const NetNs* peer_ns, const std::optional<std::string>& mac = std::nullopt, bool up = false,
                    int* index = nullptr);
  Status CreateBridge(const std::string& name);
  /// Makes `port` a port of `bridge` (both in this namespace).
  Status SetMaster(const std::string& port, const std::string& bridge);
  /// SetMaster and SetUp of `port` in one request.
  Status AttachUp(const std::string& port, const std::string& bridge);
  /// Detaches `port` from its bridge.
  Status ClearMaster(const std::string& port);
  Status SetUp(const std::string& name, bool up = true);
  /// Whether bridge port `port` learns source MACs into its bridge's forwarding database.
  Status SetPortLearning(const std::string& port, bool on);
  Status SetMac(const std::string& name, const std::string& mac);
  /// Adds an alternative name (RTM_NEWLINKPROP/IFLA_ALT_IFNAME). Already present = ok.
  Status AddAltName(const std::string& name, const std::string& altname);
  /// Removes an alternative name of link `name` (RTM_DELLINKPROP). Absent = ok.
  Status DeleteAltName(const std::string& name, const std::string& altname);
  /// Adds an IPv4 address (already present = ok). With `index` (non-zero), the link is not
  /// looked up by `name`, which only names it in errors.
  Status AddAddress(const std::string& name, const Cidr& address, int index = 0);
  /// Removes an IPv4 address (absent = ok).
  Status DeleteAddress(const std::string& name, const Cidr& address);
  /// Sets the default route via `gateway` (replaces an existing default route).
  Status SetDefaultRoute(Ipv4 gateway);
  /// Deletes the IPv4 default route of the main table (none = ok).
  Status DeleteDefaultRoute();
  /// Deletes the default route that leaves through link `index` (none there = ok); a default
  /// route through another link is left alone.
  Status DeleteDefaultRoute(int index);
  /// Deletes a link by name (absent = ok).
  Status DeleteLink(const std::string& name);
  /// Renames link `name` (which must be down) to `new_name` in this namespace.
  Status Rename(const std::string& name, const std::string& new_name);
  /// Moves link `name` into namespace `target`, renaming it to `new_name` when non-empty.
  Status MoveLink(const std::string& name, const NetNs& target, const std::string& new_name = "");

  /// One dump of all links / IPv4 addresses of the namespace.
  Result<std::vector<LinkInfo>> Links();
  Result<std::vector<AddrInfo>> Addresses();
  /// One dump of the IPv4 routes: the default routes of the main table.
  Result<std::vector<RouteInfo>> DefaultRoutes();
  /// Removes the learned forwarding entries for `mac` (lower case aa:bb:..) from bridge `bridge`,
  /// on whatever port they point to (the bridge's own permanent entries stay). Returns how many
  /// went; a bridge that is gone has none.
  Result<int> FlushFdb(const std::string& bridge, const std::string& mac);
  /// The link named `name` (or having it as an altname); nullopt when absent.
  Result<std::optional<LinkInfo>> FindLink(const std::string& name);

 private:
  explicit Netlink(nl_sock* sock) : sock_(sock) {}
  nl_sock* sock_ = nullptr;
};

/// Writes a /proc/sys/net value (e.g. "ipv4/ip_forward", "1") inside `ns`.
Status WriteNetSysctl(const NetNs& ns, const std::string& key, const std::string& value);

/// Applies an nftables ruleset text (as `nft -f` takes it) inside `ns`, via libnftables,
/// atomically. Errors carry libnftables' message.
Status NftApply(const NetNs& ns, const std::string& ruleset);
/// Deletes table `family name` inside `ns`; absent = ok.
Status NftDeleteTable(const NetNs& ns, const std::string& family, const std::string& name);
/// "family name" of every table inside `ns`.
Result<std::vector<std::string>> NftListTables(const NetNs& ns);
/// Table `family table` inside `ns` as libnftables' JSON (chains, rules, expressions); nullopt
/// when there is no such table.
Result<std::optional<std::string>> NftListTable(const NetNs& ns, const std::string& family, const std::string& table);
/// Names of the chains of table `family table` inside `ns`; an absent table has none.
Result<std::vector<std::string>> NftListChains(const NetNs& ns, const std::string& family, const std::string& table);

}  // namespace lab::hv::kernel
