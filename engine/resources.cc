#include "engine/resources.h"

#include <algorithm>
#include <functional>
#include <regex>
#include <set>
#include <string_view>
#include <type_traits>
#include <unordered_map>

#include "base/text.h"
#include "hv/spec.h"

namespace lab::engine {
namespace {

using nlohmann::json;
using schema::Machine;
using schema::SwitchType;

bool IsPlainIfname(const std::string& s) {
  static const std::regex kIf("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}");
  return std::regex_match(s, kIf);
}

std::string ShortHash(const std::string& what) { return Hex(Fnv1a64(what), 8); }

std::string KeyOf(const std::string& kind, const std::string& a, const std::string& b = "") {
  return kind + "/" + a + (b.empty() ? "" : "/" + b);
}

/// The kernel name of a switch's bridge inside its owner: the switch name itself when it is a
/// valid interface name that no other interface of the owner uses, else "vs" + a hash.
std::string BridgeName(const Machine& owner, const schema::Switch& sw) {
  std::set<std::string> taken = {"lo", "wire"};
  for (const auto& n : owner.nics) taken.insert(KernelIfname(n.name));
  for (const auto& a : owner.adapters) taken.insert(KernelIfname(a.name));
  if (IsPlainIfname(sw.name) && !taken.count(sw.name)) return sw.name;
  return "vs" + ShortHash(owner.name + "/" + sw.name);
}

struct Builder {
  const schema::Lab& lab;
  std::string uid;
  const NeedsSpec& needs_spec;
  const MachineImages* images;
  std::vector<Resource> out;
  /// Machines by name, once: lookups per VM and per adapter scanned the whole list.
  std::unordered_map<std::string_view, const Machine*> machines;
  /// Bridge names, once per switch: each is a set of taken names and a regex match.
  std::unordered_map<const schema::Switch*, std::string> bridges;

  const Machine* FindMachine(const std::string& name) const {
    auto it = machines.find(name);
    return it == machines.end() ? nullptr : it->second;
  }

  const std::string& Bridge(const Machine& owner, const schema::Switch& sw) {
    auto [it, fresh] = bridges.try_emplace(&sw);
    if (fresh) it->second = BridgeName(owner, sw);
    return it->second;
  }

  /// `spec` is an hv spec, or a function that makes one (for the kinds there are thousands of);
  /// either is made JSON only when needed.
  template <class Spec>
  void Add(Kind kind, std::string key, std::vector<std::string> deps, std::string display, const Spec& spec) {
    json j;
    if (!needs_spec || needs_spec(key)) {
      if constexpr (std::is_invocable_v<const Spec&>)
        j = spec();
      else
        j = spec;
    }
    out.push_back(Resource{kind, std::move(key), std::move(deps), std::move(display), std::move(j)});
  }

  std::vector<std::string> Lineage(const Machine& m) const {
    std::vector<std::string> chain;
    for (const Machine* p = &m; p; p = p->parent.empty() ? nullptr : FindMachine(p->parent)) chain.push_back(p->name);
    std::reverse(chain.begin(), chain.end());
    return chain;
  }

  /// The qemu VMs among `m`'s ancestors (and `m` itself with `self`), outermost first: the
  /// guests an object of `m` lives inside (hv/spec.h `within`).
  std::vector<std::string> Within(const Machine& m, bool self) const {
    std::vector<std::string> out;
    const Machine* p = self ? &m : (m.parent.empty() ? nullptr : FindMachine(m.parent));
    for (; p; p = p->parent.empty() ? nullptr : FindMachine(p->parent))
      if (p->IsQemu()) out.push_back(p->name);
    std::reverse(out.begin(), out.end());
    return out;
  }

  /// The external switch of `owner` binding interface `ifname`, if any.
  const schema::Switch* BindingSwitch(const Machine& owner, const std::string& ifname) const {
    for (const auto& sw : owner.switches)
      if (sw.type == SwitchType::kExternal && std::count(sw.nics.begin(), sw.nics.end(), ifname)) return &sw;
    return nullptr;
  }

  /// The machine's computer name (hostname: or derived from its name; schema::ComputerNameOf).
  static const std::string& Computer(const Machine& m) { return m.hostname.empty() ? m.name : m.hostname; }

  std::string HostsFile(const Machine& m) const {
    return "127.0.0.1 localhost\n127.0.1.1 " + Computer(m) + "\n::1 localhost ip6-localhost ip6-loopback\n";
  }

  void Build() {
    machines.reserve(lab.machines.size());
    for (const auto& m : lab.machines) machines.emplace(m.name, &m);
    // A partition per machine, a resource per NIC, adapter and switch, a NAT and DNS for some.
    size_t count = 2 * lab.networks.size();
    for (const auto& m : lab.machines) count += 2 + m.nics.size() + m.adapters.size() + 2 * m.switches.size();
    out.reserve(count);
    for (const auto& n : lab.networks) {
      hv::NetworkSpec s{n.name, n.subnet, n.gateway};
      Add(Kind::kNetwork, KeyOf("network", n.name), {}, "network '" + n.name + "' " + n.subnet.ToString(), s);
    }
    for (const auto& m : lab.machines) AddMachine(m);
    for (const auto& n : lab.networks)
      if (n.gateway) AddStandIn(n);
  }

  void AddMachine(const Machine& m) {
    bool host = m.kind == schema::MachineKind::kHost;
    auto partition = [&] {
      hv::PartitionSpec p;
      p.name = m.name;
      p.lineage = Lineage(m);
      p.is_host = host;
      p.processor_count = host ? 0 : m.processor.count;
      p.memory_bytes = host ? 0 : (m.memory.dynamic && m.memory.maximum ? m.memory.maximum : m.memory.startup);
      p.dynamic_memory = m.memory.dynamic;
      p.expose_virtualization_extensions = m.processor.expose_virtualization_extensions;
      // Hosts are physical: their VMs can always be made. Deeper, the parent VM must expose.
      if (const Machine* parent = m.parent.empty() ? nullptr : FindMachine(m.parent))
        p.parent_exposes = parent->kind == schema::MachineKind::kHost || parent->processor.expose_virtualization_extensions;
      p.version = host ? "" : m.version;
      p.hosts_file = HostsFile(m);
      if (Computer(m) != m.name) p.hostname = Computer(m);
      if (m.IsQemu()) p.driver = schema::kDriverQemu;
      p.within = Within(m, false);
      if (m.image != schema::kHostImage) {
        p.image = m.image;
        if (images)
          if (auto it = images->find(m.image); it != images->end()) {
            p.image_key = it->second.key;
            p.image_layers = it->second.layers;
          }
      }
      return p;
    };
    std::string pkey = KeyOf("partition", m.name);
    std::vector<std::string> pdeps;
    if (!m.parent.empty()) pdeps.push_back(KeyOf("partition", m.parent));
    Add(Kind::kPartition, pkey, std::move(pdeps),
        host ? "host '" + m.name + "'"
             : "VM '" + m.name + "' (on " + m.parent + (m.IsQemu() ? ", qemu)" : ")"),
        partition);

    // What the machine's run: commands wait for: it and its addresses, routes and DNS settings
    // (collected only for a machine that has some: a big lab plans thousands of machines).
    const bool runs = !m.run.empty();
    std::vector<std::string> made;
    if (runs) made.push_back(pkey);
    std::vector<Ipv4> dns;
    auto add_dns = [&dns](const std::vector<Ipv4>& servers) {
      for (auto ip : servers)
        if (std::find(dns.begin(), dns.end(), ip) == dns.end()) dns.push_back(ip);
    };

    for (const auto& nic : m.nics) {
      hv::NicSpec s;
      s.machine = m.name;
      s.name = KernelIfname(nic.name);
      if (s.name != nic.name) s.alias = nic.name;
      s.network = nic.network;
      s.port = "n" + ShortHash(m.name + "/" + nic.name);
      s.mac = nic.mac.value_or(DefaultMac(lab.name, m.name, nic.name));
      if (!BindingSwitch(m, nic.name)) {
        s.ip = nic.ip;
        s.gateway = nic.gateway;
      }
      add_dns(nic.dns);
      if (runs) made.push_back(KeyOf("nic", m.name, nic.name));
      Add(Kind::kNic, KeyOf("nic", m.name, nic.name), {pkey, KeyOf("network", nic.network)},
          "NIC '" + nic.name + "' of host '" + m.name + "' on network '" + nic.network + "'", s);
    }

    for (const auto& a : m.adapters) {
      const Machine* owner = FindMachine(m.parent);
      const schema::Switch* sw = owner ? owner->FindSwitch(a.switch_name) : nullptr;
      if (!owner || !sw) continue;  // validated away
      auto adapter = [&] {
        hv::AdapterSpec s;
        s.vm = m.name;
        s.name = KernelIfname(a.name);
        if (s.name != a.name) s.alias = a.name;
        s.owner = owner->name;
        s.switch_name = sw->name;
        s.switch_ifname = Bridge(*owner, *sw);
        s.port = "p" + ShortHash(m.name + "/" + a.name);
        s.mac = a.mac.value_or(DefaultMac(lab.name, m.name, a.name));
        s.mac_address_spoofing = a.mac_address_spoofing;
        if (!BindingSwitch(m, a.name)) {
          s.ip = a.ip;
          s.gateway = a.gateway;
        }
        // The port is made where the switch is: inside the owner.
        s.within = Within(*owner, true);
        if (m.IsQemu()) s.vm_driver = schema::kDriverQemu;
        return s;
      };
      add_dns(a.dns);
      if (runs) made.push_back(KeyOf("adapter", m.name, a.name));
      Add(Kind::kAdapter, KeyOf("adapter", m.name, a.name), {pkey, KeyOf("switch", owner->name, sw->name)},
          "adapter '" + a.name + "' of VM '" + m.name + "' on switch '" + sw->name + "'", adapter);
    }

    for (const auto& sw : m.switches) {
      hv::SwitchSpec s;
      s.owner = m.name;
      s.name = sw.name;
      s.type = schema::ToString(sw.type);
      s.ifname = Bridge(m, sw);
      s.within = Within(m, true);
      std::vector<std::string> deps = {pkey};
      if (sw.type == SwitchType::kExternal) {
        for (const auto& up : sw.nics) s.uplinks.push_back(KernelIfname(up));
        s.management_port = sw.allow_management_os;
        s.embedded_teaming = sw.embedded_teaming;
        for (const auto& up : sw.nics) {
          deps.push_back(KeyOf(host ? "nic" : "adapter", m.name, up));
          // With management OS, the owner's address moves to its vEthernet (NAME) port.
          if (!s.management_port || s.ip) continue;
          for (const auto& nic : m.nics)
            if (nic.name == up) s.ip = nic.ip, s.gateway = nic.gateway;
          for (const auto& a : m.adapters)
            if (a.name == up) s.ip = a.ip, s.gateway = a.gateway;
        }
      } else if (sw.type == SwitchType::kInternal) {
        s.management_port = true;
        s.ip = sw.ip;
        s.forwarding = sw.nat.has_value();
      }
      std::string skey = KeyOf("switch", m.name, sw.name);
      if (runs) made.push_back(skey);
      Add(Kind::kSwitch, skey, deps, std::string(schema::ToString(sw.type)) + " switch '" + sw.name + "' on '" + m.name + "'",
          s);
      if (sw.nat) {
        hv::NatSpec n{m.name, sw.nat->name, sw.nat->prefix, "lab_" + uid + "_nat_" + ShortHash(m.name + "/" + sw.nat->name)};
        n.within = Within(m, true);
        std::vector<std::string> nat_deps = {skey};
        if (sw.nat->dns_proxy) {
          // The proxy listens on vEthernet (NAME) and forwards to the owner's own DNS servers.
          n.dns_proxy = sw.ip ? std::optional<Ipv4>(sw.ip->addr) : std::nullopt;
          n.owner_lineage = Lineage(m);
          if (!dns.empty()) nat_deps.push_back(KeyOf("dns", m.name));
        }
        if (runs) made.push_back(KeyOf("nat", m.name, sw.nat->name));
        Add(Kind::kNat, KeyOf("nat", m.name, sw.nat->name), nat_deps,
            "NAT '" + sw.nat->name + "' " + sw.nat->prefix.ToString() + " on '" + m.name + "'", n);
      }
    }

    if (!dns.empty()) {
      hv::DnsSpec d{m.name, dns, Within(m, true)};
      Add(Kind::kDns, KeyOf("dns", m.name), {pkey}, "DNS servers of '" + m.name + "'", d);
      if (runs) made.push_back(KeyOf("dns", m.name));
    }

    if (runs) {
      // And the lab's stand-in services, so a command may resolve and fetch from "outside".
      for (const auto& n : lab.networks)
        if (n.gateway) made.push_back(KeyOf("standin", n.name));
      hv::RunSpec s{m.name, Lineage(m), host, m.run, m.run_timeout_ms, Within(m, true)};
      const size_t n = m.run.size();
      Add(Kind::kRun, KeyOf("run", m.name), std::move(made),
          std::string("run ") + (host ? "host '" : "VM '") + m.name + "' (" + std::to_string(n) + " command" +
              (n == 1 ? "" : "s") + ")",
          s);
    }
  }

  void AddStandIn(const schema::Network& n) {
    hv::StandInSpec s;
    s.network = n.name;
    s.address = *n.gateway;
    for (const auto& [name, ip] : n.dns_records) s.records[name].push_back(ip);
    // Every machine of the lab resolves by name, to each address it has; the stand-in answers
    // with just the one on its network where there is one (--localise-queries, StartStandIn).
    for (const auto& m : lab.machines) {
      auto add = [&](const std::optional<Cidr>& ip) {
        if (ip) s.records[Computer(m)].push_back(ip->addr);
      };
      for (const auto& nic : m.nics) add(nic.ip);
      for (const auto& a : m.adapters) add(a.ip);
      for (const auto& sw : m.switches)
        if (sw.type == SwitchType::kInternal) add(sw.ip);
    }
    Add(Kind::kStandIn, KeyOf("standin", n.name), {KeyOf("network", n.name)},
        "stand-in services (DNS, HTTP) at " + n.gateway->ToString() + " on network '" + n.name + "'", s);
  }
};

}  // namespace

const char* ToString(Kind k) {
  switch (k) {
    case Kind::kNetwork: return "network";
    case Kind::kPartition: return "partition";
    case Kind::kNic: return "nic";
    case Kind::kSwitch: return "switch";
    case Kind::kAdapter: return "adapter";
    case Kind::kNat: return "nat";
    case Kind::kDns: return "dns";
    case Kind::kStandIn: return "standin";
    case Kind::kRun: return "run";
  }
  return "?";
}

std::optional<Kind> KindFromString(const std::string& s) {
  for (Kind k : {Kind::kNetwork, Kind::kPartition, Kind::kNic, Kind::kSwitch, Kind::kAdapter, Kind::kNat,
                 Kind::kDns, Kind::kStandIn, Kind::kRun})
    if (s == ToString(k)) return k;
  return std::nullopt;
}

std::string Resource::Hash() const {
  return Hex(Fnv1a64(json{{"deps", deps}, {"spec", spec}}.dump()), 16);
}

std::string Resource::ToRecordJson() const {
  return json{{"kind", ToString(kind)}, {"deps", deps}, {"display", display}, {"spec", spec}}.dump();
}

std::optional<Resource> Resource::FromRecordJson(const std::string& key, const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto kind = KindFromString(j.value("kind", std::string()));
  if (!kind) return std::nullopt;
  Resource r;
  r.kind = *kind;
  r.key = key;
  r.deps = j.value("deps", std::vector<std::string>{});
  r.display = j.value("display", key);
  r.spec = j.value("spec", json::object());
  return r;
}

std::string DefaultMac(const std::string& lab, const std::string& machine, const std::string& adapter) {
  // Hyper-V's OUI 00:15:5D; the rest is stable for the lab, machine and adapter.
  std::string h = Hex(Fnv1a64(lab + "/" + machine + "/" + adapter), 6);
  return "00:15:5d:" + h.substr(0, 2) + ":" + h.substr(2, 2) + ":" + h.substr(4, 2);
}

std::vector<Resource> Desired(const schema::Lab& lab, const std::string& uid, const NeedsSpec& needs_spec,
                              const MachineImages* images) {
  Builder b{lab, uid, needs_spec, images, {}, {}, {}};
  b.Build();
  // Dependency order: a stable topological sort (file order among independent resources), as
  // indices first; then the resources are moved, not copied (each holds its spec as JSON).
  std::unordered_map<std::string_view, size_t> index;
  index.reserve(b.out.size());
  for (size_t i = 0; i < b.out.size(); ++i) index.emplace(b.out[i].key, i);
  std::vector<size_t> order;
  order.reserve(b.out.size());
  std::vector<int> state(b.out.size(), 0);  // 0 new, 1 visiting, 2 done
  std::function<void(size_t)> visit = [&](size_t i) {
    if (state[i]) return;
    state[i] = 1;
    for (const auto& d : b.out[i].deps)
      if (auto it = index.find(d); it != index.end()) visit(it->second);
    state[i] = 2;
    order.push_back(i);
  };
  for (size_t i = 0; i < b.out.size(); ++i) visit(i);
  std::vector<Resource> sorted;
  sorted.reserve(order.size());
  for (size_t i : order) sorted.push_back(std::move(b.out[i]));
  return sorted;
}

}  // namespace lab::engine
