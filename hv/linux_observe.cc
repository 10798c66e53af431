#include "hv/linux_observe.h"

#include <filesystem>
#include <map>
#include <set>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"

namespace lab::hv {
namespace {

using kernel::LinkInfo;
using kernel::Netlink;
using kernel::NetNs;

/// One namespace, dumped once.
struct View {
  std::string error;  // set when it could not be read: nothing in it is judged
  std::vector<LinkInfo> links;
  std::map<int, std::vector<Cidr>> addresses;  // ifindex -> IPv4 addresses
  std::optional<NetNs> ns;

  const LinkInfo* Find(const std::string& name) const {
    for (const auto& l : links)
      if (l.name == name) return &l;
    return nullptr;
  }
};

class Views {
 public:
  /// The namespace of the partition at `run_dir`, dumped on first use.
  const View& Get(const std::string& run_dir) {
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

/// "" when `link` holds `want` (or nothing is wanted); else what it holds instead.
std::string AddressDrift(const View& v, const LinkInfo& link, const std::optional<Cidr>& want,
                         const std::string& called) {
  if (!want) return "";
  auto it = v.addresses.find(link.index);
  std::vector<Cidr> have = it == v.addresses.end() ? std::vector<Cidr>{} : it->second;
  for (const auto& c : have)
    if (c == *want) return "";
  return "address of " + called + " is " + Addresses(have) + ", not " + want->ToString();
}

}  // namespace

Drift ObserveNetworking(const ObserveRequest& r, const LinuxPlaces& places, const Drift& dead) {
  // Machines and networks that run (found, recorded and not dead): only inside those is anything judged.
  std::set<std::string> machines, networks;
  for (const auto& p : r.partitions)
    if (!dead.count(p.key)) machines.insert(p.spec.name);
  for (const auto& n : r.networks)
    if (!dead.count(n.key)) networks.insert(n.spec.name);

  Views views;
  Drift d;
  // A veth `name` inside the partition at `run`: "" when there, else what is wrong.
  auto veth = [&](const std::string& run, const std::string& name, const std::string& called,
                  const std::optional<Cidr>& ip) -> std::string {
    const View& v = views.Get(run);
    if (!v.error.empty()) return "";
    const LinkInfo* l = v.Find(name);
    if (!l) return called + " is missing";
    return AddressDrift(v, *l, ip, "'" + name + "'");
  };

  for (const auto& n : r.nics) {
    if (!machines.count(n.spec.machine) || !networks.count(n.spec.network)) continue;
    std::string called = "veth '" + n.spec.name + "' of host '" + n.spec.machine + "'";
    std::string what = veth(places.machine_run(n.spec.machine), n.spec.name, called, n.spec.ip);
    if (what.empty())
      what = veth(places.network_run(n.spec.network), n.spec.port,
                  "its port '" + n.spec.port + "' on network '" + n.spec.network + "'", std::nullopt);
    if (!what.empty()) d[n.key] = what;
  }
  for (const auto& s : r.switches) {
    if (!machines.count(s.spec.owner)) continue;
    std::string what = veth(places.machine_run(s.spec.owner), s.spec.ifname,
                            "bridge '" + s.spec.ifname + "' of switch '" + s.spec.name + "' on '" + s.spec.owner + "'",
                            s.spec.management_port ? s.spec.ip : std::nullopt);
    if (!what.empty()) d[s.key] = what;
  }
  for (const auto& a : r.adapters) {
    if (!machines.count(a.spec.vm) || !machines.count(a.spec.owner)) continue;
    std::string what = veth(places.machine_run(a.spec.vm), a.spec.name,
                            "veth '" + a.spec.name + "' of VM '" + a.spec.vm + "'", a.spec.ip);
    if (what.empty())
      what = veth(places.machine_run(a.spec.owner), a.spec.port,
                  "its port '" + a.spec.port + "' on '" + a.spec.owner + "'", std::nullopt);
    if (!what.empty()) d[a.key] = what;
  }
  for (const auto& n : r.nats) {
    if (!machines.count(n.spec.owner)) continue;
    const View& v = views.Get(places.machine_run(n.spec.owner));
    if (!v.ns) continue;
    auto table = kernel::NftListTable(*v.ns, "ip", n.spec.table);
    if (!table) continue;  // unreadable: not judged
    std::string called = "nftables table ip " + n.spec.table + " of NAT '" + n.spec.name + "'";
    if (!*table)
      d[n.key] = called + " is missing";
    else if ((*table)->find("\"masquerade\"") == std::string::npos)
      d[n.key] = called + " has no masquerade rule (flushed)";
  }
  return d;
}

}  // namespace lab::hv
