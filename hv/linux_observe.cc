#include "hv/linux_observe.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"

namespace lab::hv {
namespace {

using kernel::LinkInfo;
using kernel::Netlink;
using kernel::NetNs;

/// One namespace, dumped once (its routes only when asked for).
struct View {
  std::string error;  // set when it could not be read: nothing in it is judged
  std::vector<LinkInfo> links;
  std::map<int, std::vector<Cidr>> addresses;  // ifindex -> IPv4 addresses
  std::optional<NetNs> ns;
  std::optional<Netlink> nl;
  std::optional<std::vector<kernel::RouteInfo>> routes;  // default routes, once dumped

  const LinkInfo* Find(const std::string& name) const {
    for (const auto& l : links)
      if (l.name == name) return &l;
    return nullptr;
  }
  std::vector<Cidr> AddressesOf(const LinkInfo& l) const {
    auto it = addresses.find(l.index);
    return it == addresses.end() ? std::vector<Cidr>{} : it->second;
  }
  /// The default routes; nullptr when they could not be read.
  const std::vector<kernel::RouteInfo>* DefaultRoutes() {
    if (!routes && nl) {
      auto r = nl->DefaultRoutes();
      if (!r) return nullptr;
      routes = std::move(*r);
    }
    return routes ? &*routes : nullptr;
  }
};

class Views {
 public:
  /// The namespace of the partition at `run_dir`, dumped on first use.
  View& Get(const std::string& run_dir) {
    auto it = views_.find(run_dir);
    if (it != views_.end()) return it->second;
    View& v = views_[run_dir];
    auto ns = NetNs::Open(kernel::NsPath(run_dir, "net"));
    if (!ns) {
      v.error = ns.message();
      return v;
    }
    auto nl = Netlink::In(*ns);
    if (!nl) {
      v.error = nl.message();
      return v;
    }
    auto links = nl->Links();
    auto addrs = nl->Addresses();
    if (!links || !addrs) {
      v.error = !links ? links.message() : addrs.message();
      return v;
    }
    v.links = std::move(*links);
    for (const auto& a : *addrs) v.addresses[a.index].push_back(a.address);
    v.ns.emplace(std::move(*ns));
    v.nl.emplace(std::move(*nl));
    return v;
  }

 private:
  std::map<std::string, View> views_;
};

std::string Addresses(const std::vector<Cidr>& list) {
  std::vector<std::string> out;
  for (const auto& c : list) out.push_back(c.ToString());
  return out.empty() ? "none" : Join(out, ", ");
}

std::string Gateways(const std::vector<Ipv4>& list) {
  std::vector<std::string> out;
  for (const auto& g : list) out.push_back(g.ToString());
  return Join(out, ", ");
}

/// What was found of each key: a remake when anything is missing, else settings to put back.
class Findings {
 public:
  void Remake(const std::string& key, const std::string& what) {
    auto& f = found_[key];
    f.what.push_back(what);
    f.remake = true;
  }
  void Repair(const std::string& key, const std::string& what) { found_[key].what.push_back(what); }
  bool Missing(const std::string& key) const {
    auto it = found_.find(key);
    return it != found_.end() && it->second.remake;
  }
  Drift ToDrift() const {
    Drift d;
    for (const auto& [key, f] : found_) d[key] = Finding(Join(f.what, "; "), !f.remake);
    return d;
  }

 private:
  struct Found {
    std::vector<std::string> what;
    bool remake = false;
  };
  std::map<std::string, Found> found_;
};

/// A machine's own file read through its init's root, every symlink resolved inside that root
/// (openat2 RESOLVE_IN_ROOT): /etc/resolv.conf links into the partition's /run (README), and a
/// link a user made must not lead to the host's file. nullopt when unreadable; `missing` tells.
std::optional<std::string> ReadMachineFile(int init_pid, const std::string& path, bool* missing) {
  *missing = false;
  int root = ::open(("/proc/" + std::to_string(init_pid) + "/root").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return std::nullopt;
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how));
  int err = errno;
  ::close(root);
  if (fd < 0) {
    *missing = err == ENOENT;
    return std::nullopt;
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (n < 0) return std::nullopt;
  return out;
}

int InitPid(const std::string& facts) {
  auto j = nlohmann::json::parse(facts, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("init") || !j["init"].is_object()) return 0;
  return j["init"].value("pid", 0);
}

}  // namespace

std::string ResolvConf(const std::vector<Ipv4>& servers) {
  std::string s = "# written by lab: this machine's DNS client settings\n";
  for (auto ip : servers) s += "nameserver " + ip.ToString() + "\n";
  if (servers.empty()) s += "# no DNS servers configured\n";
  return s;
}

std::vector<Ipv4> Nameservers(const std::string& resolv_conf) {
  std::vector<Ipv4> out;
  for (const auto& line : Split(resolv_conf, '\n')) {
    auto words = Split(Trim(line), ' ');
    if (words.size() >= 2 && words[0] == "nameserver")
      if (auto ip = Ipv4::Parse(Trim(words[1]))) out.push_back(*ip);
  }
  return out;
}

Drift ObserveNetworking(const ObserveRequest& r, const LinuxPlaces& places, const Drift& dead) {
  // Machines and networks that run (found, recorded and not dead): only inside those is anything judged.
  std::set<std::string> machines, networks;
  std::map<std::string, int> init_pids;
  for (const auto& p : r.partitions)
    if (!dead.count(p.key)) {
      machines.insert(p.spec.name);
      init_pids[p.spec.name] = InitPid(p.facts);
    }
  for (const auto& n : r.networks)
    if (!dead.count(n.key)) networks.insert(n.spec.name);

  Views views;
  Findings found;
  // Where a machine's default route should go: each interface with a gateway, in record order.
  struct Gateway {
    std::string key;
    Ipv4 via;
    std::string called;
  };
  std::map<std::string, std::vector<Gateway>> gateways;

  // Interface `name` inside the partition at `run`, with address `ip`: what is wrong with it goes
  // to `key`. Returns the link (nullptr when missing or its namespace unreadable).
  // `shown` is the interface as the lab file names it (the kernel's `name` is derived from it).
  auto iface = [&](const std::string& key, const std::string& run, const std::string& name, const std::string& shown,
                   const std::string& called, const std::optional<Cidr>& ip) -> const LinkInfo* {
    View& v = views.Get(run);
    if (!v.error.empty()) return nullptr;
    const LinkInfo* l = v.Find(name);
    if (!l) {
      found.Remake(key, called + " is missing");
      return nullptr;
    }
    if (!l->up) found.Repair(key, "link of " + called + " is down");
    if (ip) {
      auto have = v.AddressesOf(*l);
      if (std::find(have.begin(), have.end(), *ip) == have.end())
        found.Repair(key, "address of '" + shown + "' is " + Addresses(have) + ", not " + ip->ToString());
    }
    return l;
  };
  auto seen = [&](const std::string& key, const std::string& machine, const std::string& name, const LinkInfo* l) {
    if (!r.seen || !l) return;
    r.seen->interfaces[key] = SeenInterface{machine, name, l->up, views.Get(places.machine_run(machine)).AddressesOf(*l)};
  };

  for (const auto& n : r.nics) {
    if (!machines.count(n.spec.machine) || !networks.count(n.spec.network)) continue;
    std::string called = "veth '" + n.spec.Written() + "' of host '" + n.spec.machine + "'";
    const LinkInfo* l = iface(n.key, places.machine_run(n.spec.machine), n.spec.name, n.spec.Written(), called, n.spec.ip);
    seen(n.key, n.spec.machine, n.spec.Written(), l);
    if (l) iface(n.key, places.network_run(n.spec.network), n.spec.port, n.spec.port,
          "its port '" + n.spec.port + "' on network '" + n.spec.network + "'", std::nullopt);
    if (n.spec.ip && n.spec.gateway) gateways[n.spec.machine].push_back({n.key, *n.spec.gateway, called});
  }
  for (const auto& s : r.switches) {
    if (!machines.count(s.spec.owner)) continue;
    std::string called = "the bridge of switch '" + s.spec.name + "' on '" + s.spec.owner + "'";
    auto ip = s.spec.management_port ? s.spec.ip : std::nullopt;
    const LinkInfo* l = iface(s.key, places.machine_run(s.spec.owner), s.spec.ifname, "vEthernet (" + s.spec.name + ")",
                              called, ip);
    if (s.spec.management_port) seen(s.key, s.spec.owner, "vEthernet (" + s.spec.name + ")", l);
    if (ip && s.spec.gateway) gateways[s.spec.owner].push_back({s.key, *s.spec.gateway, called});
  }
  for (const auto& a : r.adapters) {
    if (!machines.count(a.spec.vm) || !machines.count(a.spec.owner)) continue;
    std::string called = "veth '" + a.spec.Written() + "' of VM '" + a.spec.vm + "'";
    const LinkInfo* l = iface(a.key, places.machine_run(a.spec.vm), a.spec.name, a.spec.Written(), called, a.spec.ip);
    seen(a.key, a.spec.vm, a.spec.Written(), l);
    if (l) iface(a.key, places.machine_run(a.spec.owner), a.spec.port, a.spec.port,
          "its port '" + a.spec.port + "' on '" + a.spec.owner + "'", std::nullopt);
    if (a.spec.ip && a.spec.gateway) gateways[a.spec.vm].push_back({a.key, *a.spec.gateway, called});
  }

  // The default route: through one of the machine's gateways (the last one configured wins when
  // it has several), else the first interface that has one puts it back.
  for (const auto& m : machines) {
    auto g = gateways.find(m);
    if ((g == gateways.end() || g->second.empty()) && !r.seen) continue;
    View& v = views.Get(places.machine_run(m));
    if (!v.error.empty()) continue;
    const auto* routes = v.DefaultRoutes();
    if (!routes) continue;
    std::vector<Ipv4> via;
    for (const auto& rt : *routes) via.push_back(rt.gateway);
    if (r.seen) r.seen->default_gateways[m] = via;
    if (g == gateways.end() || g->second.empty()) continue;
    bool ok = false;
    for (const auto& want : g->second) ok = ok || std::find(via.begin(), via.end(), want.via) != via.end();
    const Gateway& first = g->second.front();
    if (ok || found.Missing(first.key)) continue;  // a remade interface sets its route again
    found.Repair(first.key, via.empty() ? "no default route (via " + first.via.ToString() + ")"
                                        : "default route is via " + Gateways(via) + ", not " + first.via.ToString());
  }

  // DNS client settings: resolv.conf as lab wrote it.
  for (const auto& d : r.dns) {
    if (!machines.count(d.spec.machine)) continue;
    int pid = init_pids[d.spec.machine];
    if (pid <= 0) continue;
    bool missing = false;
    auto text = ReadMachineFile(pid, "/etc/resolv.conf", &missing);
    if (r.seen) r.seen->dns_servers[d.spec.machine] = text ? Nameservers(*text) : std::vector<Ipv4>{};
    const std::string called = "/etc/resolv.conf of '" + d.spec.machine + "'";
    if (!text) {
      if (missing) found.Repair(d.key, called + " is missing");
      continue;  // unreadable for another reason: not judged
    }
    if (*text == ResolvConf(d.spec.servers)) continue;
    auto names = Nameservers(*text);
    found.Repair(d.key, names == d.spec.servers
                            ? called + " was rewritten (its nameservers kept)"
                            : called + " names " + (names.empty() ? std::string("no nameserver") : Gateways(names)) +
                                  ", not " + Gateways(d.spec.servers));
  }

  for (const auto& n : r.nats) {
    if (!machines.count(n.spec.owner)) continue;
    View& v = views.Get(places.machine_run(n.spec.owner));
    if (!v.ns) continue;
    auto table = kernel::NftListTable(*v.ns, "ip", n.spec.table);
    if (!table) continue;  // unreadable: not judged
    std::string called = "nftables table ip " + n.spec.table + " of NAT '" + n.spec.name + "'";
    if (!*table)
      found.Remake(n.key, called + " is missing");
    else if ((*table)->find("\"masquerade\"") == std::string::npos)
      found.Remake(n.key, called + " has no masquerade rule (flushed)");
  }
  return found.ToDrift();
}

}  // namespace lab::hv
