// The rules across objects of a decoded lab: references between machines, switches, NICs and
// networks; nesting; one NAT per machine; unique MACs; check sources; and addressing.
//
// Addressing works on segments: the L2 domains a lab builds. A network is one segment; an
// external switch joins the segment of the NIC (or, inside a VM, the adapter) it binds, so a
// middle VM's adapter on the host's External switch sits on the network, and a switch inside
// that VM bound to that adapter extends the network again. Internal and private switches are
// segments of their own. Each segment knows the prefix its addresses must be in (network subnet,
// NAT prefix or the internal switch's address) and which addresses are taken.
//
// Subnets must not overlap where one routing table would hold both: the lab's networks among
// themselves, and on each machine its NICs', adapters' and internal switches' subnets and its NAT
// prefix (which contains its own switch's subnet). Both are found by sorting, never by comparing
// every pair: prefixes are nested or disjoint, so after sorting by address (bigger first) the
// prefixes that contain one are exactly those still open on a stack.
#include <algorithm>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <cctype>

#include "base/text.h"
#include "schema/reader.h"

namespace lab::schema {

namespace {

std::string Q(const std::string& s) { return "'" + s + "'"; }
std::string LineOf(Loc l) { return "line " + std::to_string(l.line); }
std::string PosOf(Loc l) { return std::to_string(l.line) + ":" + std::to_string(l.col); }
bool Before(Loc a, Loc b) { return std::pair{a.line, a.col} < std::pair{b.line, b.col}; }

struct Segment {
  std::string label;              // "network 'lan'", "switch 'VmNAT' on 'middle'"
  std::optional<Cidr> subnet;     // addresses are on exactly this subnet
  std::optional<Cidr> bound;      // ... and inside this prefix
  std::string bound_label;        // "NAT 'LocalNAT' (192.168.100.0/24) on switch 'VmNAT'"
  // Without a subnet (private switches, internal ones without ip) the first address sets it.
  std::optional<Cidr> first;
  std::string first_who;
  Loc first_loc;
  std::map<uint32_t, std::pair<std::string, Loc>> used;  // address -> who, where
};

/// An address someone holds on a segment.
struct Member {
  std::string segment;  // "" when its segment is unknown (a broken reference, reported elsewhere)
  Cidr addr;
  bool has_prefix = true;  // false for a network's gateway (a bare address)
  bool defines = false;    // the switch's own ip / the gateway: defines the subnet, is not checked against it
  std::string who;
  Loc loc;
};

/// A subnet that must not overlap the others of its scope (the networks; one machine's).
struct Span {
  enum class Kind { kNetwork, kNic, kAdapter, kSwitch, kNat };
  Kind kind = Kind::kAdapter;
  Cidr net;            // network form
  Cidr ip;             // the address that gives it (NIC, adapter, switch)
  std::string name;    // the network, NIC, adapter, switch or NAT
  Loc loc;
  int group = 0;       // spans of one group may overlap: a NAT's prefix and its switch's subnet
  std::string owner;   // kNat: its switch
  /// A switch whose NAT's prefix holds its subnet: whatever overlaps the switch overlaps the
  /// NAT too, and the NAT's error (whose fix moves both) speaks for it.
  bool quiet = false;

  /// "subnet 10.10.0.0/24 of adapter 'Ethernet' (10.10.0.10/24)", built only for a message.
  std::string Label() const {
    std::string n = "'" + name + "'";
    switch (kind) {
      case Kind::kNetwork: return "network " + n + " (" + net.ToString() + ")";
      case Kind::kNic: return "subnet " + net.ToString() + " of NIC " + n + " (" + ip.ToString() + ")";
      case Kind::kAdapter: return "subnet " + net.ToString() + " of adapter " + n + " (" + ip.ToString() + ")";
      case Kind::kSwitch:
        return "subnet " + net.ToString() + " of switch " + n + " (vEthernet (" + name + ") " + ip.ToString() + ")";
      case Kind::kNat: return "prefix " + net.ToString() + " of NAT " + n + " (switch '" + owner + "')";
    }
    return n;
  }
};

struct MacUse {
  std::string mac;
  std::string who;
  Loc loc;
};

class Validator {
 public:
  Validator(const Lab& lab, ParseContext& ctx) : lab_(lab), ctx_(ctx) {}

  void Run() {
    for (const auto& n : lab_.networks) {
      Segment& s = segments_["net:" + n.name];
      s.label = "network " + Q(n.name);
      if (ctx_.broken_networks.count(n.name)) continue;
      s.subnet = n.subnet;
      s.bound = n.subnet;
      s.bound_label = "network " + Q(n.name) + " (" + n.subnet.ToString() + ")";
      if (n.gateway)
        members_.push_back(Member{"net:" + n.name, Cidr{*n.gateway, 32}, false, true,
                                  "the gateway of network " + Q(n.name),
                                  ctx_.At("networks." + n.name + ".gateway", n.loc)});
    }
    for (const auto& m : lab_.machines) {
      if (m.kind == MachineKind::kHost) {
        for (const auto& nic : m.nics) CheckNic(m, nic);
      } else {
        Nesting(m);
        if (m.IsQemu()) Qemu(m);
        for (size_t i = 0; i < m.adapters.size(); ++i) CheckAdapter(m, i);
      }
      Switches(m);
    }
    Addresses();
    NetworkOverlaps();
    MachineOverlaps();
    Macs();
    Checks();
    Images();
  }

 private:
  /// `from:` parents exist and never cycle; every `image:` names an image of the file (or host).
  void Images() {
    std::vector<std::string> names;
    for (const auto& i : lab_.images) names.push_back(i.name);
    auto unknown = [&](const std::string& name, Loc at, const std::string& who, const std::string& role) {
      auto close = ClosestMatch(name, names);
      ctx_.Error(at, who + ": " + role + " " + Q(name) + " is not an image of this lab; " +
                         (close ? "did you mean " + Q(*close) + "? " : std::string()) +
                         (names.empty() ? std::string("declare it under images: (e.g. images: {") + name +
                                              ": {debian: bookworm}}) or use host"
                                        : "declare it under images: or use one of: " + Join(names, ", ") + " (or host)"));
    };
    for (const auto& i : lab_.images) {
      if (i.kind != ImageKind::kFrom || i.from.empty()) continue;
      if (!lab_.FindImage(i.from)) {
        if (i.from == kHostImage)
          ctx_.Error(i.kind_loc, "image " + Q(i.name) + ": from: host is the host's own software, not an image "
                                 "that can be layered; build a base image (debian: bookworm) and use from: it");
        else
          unknown(i.from, i.kind_loc, "image " + Q(i.name), "from:");
        continue;
      }
      // Walk the parents: a chain that comes back to this image is a cycle, reported once at
      // the first image of it in file order.
      std::vector<std::string> chain = {i.name};
      const Image* at = lab_.FindImage(i.from);
      while (at && at->kind == ImageKind::kFrom) {
        if (std::find(chain.begin(), chain.end(), at->name) != chain.end()) {
          if (at->name == i.name && IsFirstOfCycle(i.name, chain)) {
            std::string loop;
            for (const auto& c : chain) loop += c + " -> ";
            ctx_.Error(i.kind_loc, "image " + Q(i.name) + ": from: makes a cycle (" + loop + i.name +
                                       "); one of them must be built with debian: or imported");
          }
          break;
        }
        chain.push_back(at->name);
        at = lab_.FindImage(at->from);
      }
    }
    for (const auto& ref : ctx_.image_refs) {
      if (ref.image == kHostImage || lab_.FindImage(ref.image) || ctx_.broken_images.count(ref.image)) continue;
      unknown(ref.image, ref.loc, ref.who, "image");
    }
  }

  bool IsFirstOfCycle(const std::string& name, const std::vector<std::string>& cycle) const {
    for (const auto& i : lab_.images)
      if (std::find(cycle.begin(), cycle.end(), i.name) != cycle.end()) return i.name == name;
    return true;
  }

  std::string PathOf(const Machine& m) const {
    auto it = ctx_.machine_path.find(m.name);
    return it == ctx_.machine_path.end() ? m.name : it->second;
  }
  static std::string Who(const Machine& m) { return (m.kind == MachineKind::kHost ? "host " : "VM ") + Q(m.name); }

  /// What a QEMU guest needs that a partition does not: memory a Linux kernel boots in.
  void Qemu(const Machine& vm) {
    if (vm.memory.startup >= kQemuMinMemory) return;
    ctx_.Error(ctx_.At(PathOf(vm) + ".memory.startup", vm.loc),
               "VM " + Q(vm.name) + ": memory.startup " + FormatSize(vm.memory.startup) +
                   " is too little for a qemu VM (driver: qemu): a Linux guest does not boot in it; give it at least "
                   "128MB, e.g. memory: {startup: 512MiB} (Set-VMMemory -StartupBytes 512MB), or use driver: partition");
  }

  void Nesting(const Machine& vm) {
    std::string path = PathOf(vm);
    const Machine* parent = lab_.FindMachine(vm.parent);
    std::string expose_fix = ".processor.expose_virtualization_extensions: true "
                             "(Set-VMProcessor -ExposeVirtualizationExtensions $true)";
    if (parent && parent->kind == MachineKind::kVm && !parent->processor.expose_virtualization_extensions)
      ctx_.Error(vm.loc, "VM " + Q(vm.name) + " is nested under " + Q(parent->name) +
                             ", whose virtualization extensions are not exposed; set vms." + parent->name + expose_fix);
    if (!vm.processor.expose_virtualization_extensions) {
      for (const auto& sw : vm.switches)
        ctx_.Error(sw.loc, "switch " + Q(sw.name) + " is inside VM " + Q(vm.name) +
                               ", whose virtualization extensions are not exposed (a virtual switch needs "
                               "Hyper-V inside the VM); set vms." + vm.name + expose_fix);
      return;
    }
    std::string what = "VM " + Q(vm.name) + ": expose_virtualization_extensions ";
    bool profile_known = !ctx_.misspelled.count("compatibility");
    // Dynamic memory (hv/model.h rules dynamic-memory-off-for-nesting and
    // dynamic-memory-static-while-hypervisor-runs): the 10565 preview refuses it once nesting is
    // on; later Hyper-V only while a hypervisor runs inside, which this file makes so when the VM
    // holds VMs or switches. Otherwise it is allowed (CheckLab warns that it will not fluctuate).
    if (vm.memory.dynamic) {
      if (lab_.compatibility == "preview-10565" && profile_known)
        ctx_.Error(ctx_.At(path + ".memory.dynamic", vm.loc),
                   what + "needs static memory under compatibility preview-10565; set memory.dynamic: false "
                          "(Set-VMMemory -DynamicMemoryEnabled $false)");
      else if (!vm.vms.empty() || !vm.switches.empty())
        ctx_.Error(ctx_.At(path + ".memory.dynamic", vm.loc),
                   what + "with nested VMs or switches inside needs static memory (a hypervisor runs there, and "
                          "its memory cannot change); set memory.dynamic: false (Set-VMMemory "
                          "-DynamicMemoryEnabled $false)");
    }
    size_t dot = vm.version.find('.');
    int major = std::stoi(vm.version.substr(0, dot));
    // The processor (hv/model.h rules intel-only, ws2022-amd-version-10): the seeds' profiles are
    // Intel-only; ws2022 nests on AMD EPYC/Ryzen from configuration version 10.0.
    // A qemu VM (or a VM inside one) runs on the processor QEMU really offers, not on the lab
    // file's host processor: the rules model judges it (engine/facts.h), so the walk stops there.
    const Machine* host = &vm;
    for (size_t hops = 0; host && host->kind != MachineKind::kHost && !host->IsQemu() && hops <= lab_.machines.size();
         ++hops)
      host = lab_.FindMachine(host->parent);
    if (host && host->kind == MachineKind::kHost && host->processor.vendor == "amd" && profile_known) {
      if (lab_.compatibility != "ws2022")
        ctx_.Error(ctx_.At(path + ".processor.expose_virtualization_extensions", vm.loc),
                   what + "needs an Intel processor with VT-x and EPT (\"nesting is currently Intel-only\" under "
                          "compatibility " + lab_.compatibility + "), and host " + Q(host->name) +
                          " has processor vendor amd; use compatibility: ws2022 (Windows Server 2022 / Windows 11 "
                          "hosts nest on AMD EPYC/Ryzen from configuration version 10.0), an Intel host, or set "
                          "expose_virtualization_extensions: false");
      else if (major < 10)
        ctx_.Error(ctx_.At(path + ".version", vm.loc),
                   what + "on AMD host " + Q(host->name) + " needs configuration version 10.0 or later under "
                          "compatibility ws2022, and this VM has " + vm.version +
                          "; set version: \"10.0\" (Update-VMVersion)");
    }
    // Version 8.0 is required from build 14361 on (hv/model.h rule version-8-for-nesting); the
    // 10565 preview predates it. With an unreadable profile the rule is unknown, so it stays quiet.
    if (major < 8 && lab_.compatibility != "preview-10565" && !ctx_.misspelled.count("compatibility"))
      ctx_.Error(ctx_.At(path + ".version", vm.loc),
                 what + "needs configuration version 8.0 or later, and this VM has " + vm.version +
                     "; set version: \"8.0\" or later (Update-VMVersion)");
    if (vm.virtualization_based_security)
      ctx_.Error(ctx_.At(path + ".security.virtualization_based_security", vm.loc),
                 what + "cannot be enabled while virtualization-based security is on (Hyper-V refuses nesting "
                        "with VBS); set security.virtualization_based_security: false");
  }

  void CheckNic(const Machine& host, const schema::Nic& nic) {
    std::string path = PathOf(host) + ".nics." + nic.name;
    std::string who = "host " + Q(host.name) + " NIC " + Q(nic.name);
    std::string segment;
    if (!nic.network.empty()) {
      if (lab_.FindNetwork(nic.network)) {
        segment = "net:" + nic.network;
      } else if (!ctx_.misspelled.count("networks")) {
        std::vector<std::string> names;
        for (const auto& n : lab_.networks) names.push_back(n.name);
        auto close = ClosestMatch(nic.network, names);
        ctx_.Error(ctx_.At(path + ".network", nic.loc),
                   who + ": network " + Q(nic.network) + " does not exist; " +
                       (close ? "did you mean " + Q(*close) + "?" : "define it under networks:"));
      }
    }
    nic_segment_[host.name + "/" + nic.name] = segment;
    Interface(who, path, segment, nic.ip, nic.gateway, nic.loc);
    if (nic.ip) AddInterfaceSpan(host, Span::Kind::kNic, nic.name, *nic.ip, IpLoc());
    if (nic.mac) macs_.push_back(MacUse{*nic.mac, who, ctx_.At(path + ".mac", nic.loc)});
  }

  void CheckAdapter(const Machine& vm, size_t index) {
    const schema::Adapter& a = vm.adapters[index];
    auto p = ctx_.adapter_paths.find({vm.name, index});
    std::string path = p == ctx_.adapter_paths.end() ? PathOf(vm) : p->second;
    std::string who = "VM " + Q(vm.name) + " adapter " + Q(a.name);
    std::string segment;
    const Machine* parent = lab_.FindMachine(vm.parent);
    if (!a.switch_name.empty() && parent) {
      if (parent->FindSwitch(a.switch_name)) {
        auto it = switch_segment_.find(parent->name + "/" + a.switch_name);
        if (it != switch_segment_.end()) segment = it->second;
      } else {
        SwitchNotOnParent(vm, *parent, a, ctx_.At(path + ".switch", a.loc), who);
      }
    }
    adapter_segment_[vm.name + "/" + a.name] = segment;
    Interface(who, path, segment, a.ip, a.gateway, a.loc);
    if (a.ip) AddInterfaceSpan(vm, Span::Kind::kAdapter, a.name, *a.ip, IpLoc());
    if (a.mac) macs_.push_back(MacUse{*a.mac, who, ctx_.At(path + ".mac", a.loc)});
  }

  void SwitchNotOnParent(const Machine& vm, const Machine& parent, const schema::Adapter& a, Loc loc,
                         const std::string& who) {
    if (ctx_.misspelled.count(PathOf(parent) + ".switches")) return;
    std::vector<std::string> here;
    for (const auto& s : parent.switches) here.push_back(s.name);
    std::string fix = here.empty() ? "define a switch under " + PathOf(parent) + ".switches"
                                   : "use a switch of " + Q(parent.name) + " (" + Join(here, ", ") + ")";
    for (const auto& other : lab_.machines) {
      if (other.FindSwitch(a.switch_name)) {
        ctx_.Error(loc, who + ": switch " + Q(a.switch_name) + " is on " + Q(other.name) + ", not on " +
                            Q(parent.name) + " where VM " + Q(vm.name) + " runs; " + fix);
        return;
      }
    }
    auto close = ClosestMatch(a.switch_name, here);
    ctx_.Error(loc, who + ": switch " + Q(a.switch_name) + " does not exist on " + Q(parent.name) + " where VM " +
                        Q(vm.name) + " runs; " + (close ? "did you mean " + Q(*close) + "?" : fix));
  }

  /// An interface's address and gateway (a host NIC or a VM adapter).
  void Interface(const std::string& who, const std::string& path, const std::string& segment,
                 const std::optional<Cidr>& ip, const std::optional<Ipv4>& gateway, Loc loc) {
    if (ip) members_.push_back(Member{segment, *ip, true, false, who, ctx_.At(path + ".ip", loc)});
    if (!gateway) return;
    Loc gw_loc = ctx_.At(path + ".gateway", loc);
    // An address outside its segment is reported already; its gateway would only echo that.
    if (ip && !segment.empty()) {
      const Segment& seg = segments_[segment];
      if (seg.bound && !seg.bound->Contains(ip->addr)) return;
    }
    if (!ip) {
      ctx_.Error(gw_loc, who + ": gateway " + gateway->ToString() +
                             " needs an address on the same interface; set ip (New-NetIPAddress -IPAddress ... "
                             "-DefaultGateway " + gateway->ToString() + ")");
    } else if (!ip->Contains(*gateway)) {
      ctx_.Error(gw_loc, who + ": gateway " + gateway->ToString() + " is not on the interface's subnet " +
                             ip->Network().ToString() + "; use a gateway inside " + ip->Network().ToString() +
                             " (New-NetIPAddress -DefaultGateway)");
    } else if (*gateway == ip->addr) {
      ctx_.Error(gw_loc, who + ": gateway " + gateway->ToString() +
                             " is the interface's own address; use the router's address");
    }
  }

  static bool HasDnsServers(const Machine& m) {
    for (const auto& n : m.nics)
      if (!n.dns.empty()) return true;
    for (const auto& ad : m.adapters)
      if (!ad.dns.empty()) return true;
    return false;
  }

  void Switches(const Machine& m) {
    std::map<std::string, std::string> bound_by;  // NIC/adapter -> external switch that binds it
    const Switch* first_nat = nullptr;
    for (const auto& sw : m.switches) {
      std::string key = m.name + "/" + sw.name;
      std::string path = PathOf(m) + ".switches." + sw.name;
      std::string what = "switch " + Q(sw.name) + " on " + Q(m.name);
      if (sw.nat && !ctx_.broken_switches.count(key) && sw.type == SwitchType::kInternal) {
        if (first_nat) {
          const Nat& a = *first_nat->nat;
          bool overlap = a.prefix.Contains(sw.nat->prefix.addr) || sw.nat->prefix.Contains(a.prefix.addr);
          ctx_.Error(sw.nat->loc, what + ": only one NAT per machine (New-NetNat): " + Q(m.name) +
                                      " already has NAT " + Q(a.name) + " (" + a.prefix.ToString() + ", " +
                                      LineOf(a.loc) + ")" + (overlap ? ", and the prefixes overlap" : "") +
                                      "; put these VMs behind that NAT's switch or remove this nat");
        } else {
          first_nat = &sw;
        }
      }
      if (sw.nat && sw.nat->dns_proxy && !HasDnsServers(m))
        ctx_.Error(ctx_.At(path + ".nat.dns_proxy", sw.nat->loc),
                   what + ": the DNS proxy of NAT " + Q(sw.nat->name) + " forwards to the DNS servers of " + Q(m.name) +
                       ", which has none; set dns on one of its " +
                       (m.kind == MachineKind::kHost ? "NICs" : "adapters") + " or remove dns_proxy");
      if (ctx_.broken_switches.count(key)) continue;
      if (sw.type == SwitchType::kExternal) {
        External(m, sw, path, what, bound_by);
        continue;
      }
      std::string id = "sw:" + key;
      Segment& seg = segments_[id];
      seg.label = what;
      switch_segment_[key] = id;
      if (sw.type != SwitchType::kInternal || !sw.ip) continue;
      seg.subnet = sw.ip->Network();
      seg.bound = seg.subnet;
      seg.bound_label = what + " subnet " + seg.subnet->ToString() + " (its ip " + sw.ip->ToString() + ")";
      if (sw.nat && sw.nat->prefix.Contains(sw.ip->addr)) {
        seg.bound = sw.nat->prefix;
        seg.bound_label = "NAT " + Q(sw.nat->name) + " (" + sw.nat->prefix.ToString() + ") on switch " + Q(sw.name);
      }
      members_.push_back(Member{id, *sw.ip, true, true, "vEthernet (" + sw.name + ") of " + Q(m.name),
                                ctx_.At(path + ".ip", sw.loc)});
      auto& spans = machine_spans_[&m];
      int group = next_group_++;
      spans.push_back(Span{Span::Kind::kSwitch, sw.ip->Network(), *sw.ip, sw.name, ctx_.At(path + ".ip", sw.loc), group});
      // A second NAT is refused above; its prefix would only repeat that.
      if (sw.nat && first_nat == &sw) {
        spans.back().quiet = sw.nat->prefix.Contains(sw.ip->Network());
        spans.push_back(Span{Span::Kind::kNat, sw.nat->prefix, sw.nat->prefix, sw.nat->name,
                             ctx_.At(path + ".nat.prefix", sw.nat->loc), group, sw.name});
      }
    }
  }

  /// Where the address Interface() just took is written (looked up once, not again).
  Loc IpLoc() const { return members_.back().loc; }

  void AddInterfaceSpan(const Machine& m, Span::Kind kind, const std::string& name, const Cidr& ip, Loc loc) {
    machine_spans_[&m].push_back(Span{kind, ip.Network(), ip, name, loc, next_group_++});
  }

  void External(const Machine& m, const Switch& sw, const std::string& path, const std::string& what,
                std::map<std::string, std::string>& bound_by) {
    bool host = m.kind == MachineKind::kHost;
    std::string noun = host ? "NIC" : "adapter";
    Loc nics_loc = ctx_.At(path + ".nics", sw.loc);
    std::vector<std::string> names;
    if (host) {
      for (const auto& n : m.nics) names.push_back(n.name);
    } else {
      for (const auto& a : m.adapters) names.push_back(a.name);
    }
    std::optional<std::string> segment;
    std::string first_nic;
    bool misspelled = ctx_.misspelled.count(PathOf(m) + (host ? ".nics" : ".adapters")) != 0;
    for (const auto& nic : sw.nics) {
      if (std::find(names.begin(), names.end(), nic) == names.end()) {
        if (misspelled) continue;
        auto close = ClosestMatch(nic, names);
        ctx_.Error(nics_loc, what + ": " + noun + " " + Q(nic) + " does not exist on " + Who(m) + "; " +
                                 (close ? "did you mean " + Q(*close) + "?"
                                        : host ? "define it under " + PathOf(m) + ".nics"
                                               : "add it to " + PathOf(m) + ".adapters"));
        continue;
      }
      auto [prev, fresh] = bound_by.emplace(nic, sw.name);
      if (!fresh) {
        ctx_.Error(nics_loc, what + ": " + noun + " " + Q(nic) + " of " + Q(m.name) + " is already bound to " +
                                 (prev->second == sw.name ? "this switch" : "switch " + Q(prev->second)) +
                                 "; a " + noun + " belongs to one external switch only");
        continue;
      }
      std::string key = m.name + "/" + nic;
      std::string seg = host ? nic_segment_[key] : adapter_segment_[key];
      if (!sw.allow_management_os) ManagementOsOff(m, sw, nic);
      if (!segment) {
        segment = seg;
        first_nic = nic;
      } else if (!seg.empty() && !segment->empty() && seg != *segment) {
        ctx_.Error(nics_loc, what + ": " + noun + "s " + Q(first_nic) + " and " + Q(nic) + " are on different " +
                                 "segments (" + segments_[*segment].label + " and " + segments_[seg].label +
                                 "); the NICs of a SET team share one network");
      }
    }
    if (segment) switch_segment_[m.name + "/" + sw.name] = *segment;
  }

  /// Without a management port the owner loses the address it had on the NIC it gave the switch.
  void ManagementOsOff(const Machine& m, const Switch& sw, const std::string& nic) {
    std::optional<Cidr> ip;
    Loc loc = sw.loc;
    if (m.kind == MachineKind::kHost) {
      for (const auto& n : m.nics)
        if (n.name == nic && n.ip) {
          ip = n.ip;
          loc = ctx_.At(PathOf(m) + ".nics." + n.name + ".ip", n.loc);
        }
    } else {
      for (size_t i = 0; i < m.adapters.size(); ++i)
        if (m.adapters[i].name == nic && m.adapters[i].ip) {
          ip = m.adapters[i].ip;
          auto p = ctx_.adapter_paths.find({m.name, i});
          loc = p == ctx_.adapter_paths.end() ? m.adapters[i].loc : ctx_.At(p->second + ".ip", m.adapters[i].loc);
        }
    }
    if (!ip) return;
    ctx_.Error(loc, Who(m) + " " + (m.kind == MachineKind::kHost ? "NIC " : "adapter ") + Q(nic) + ": address " +
                        ip->ToString() + " is lost, because external switch " + Q(sw.name) +
                        " takes this interface with allow_management_os: false; set allow_management_os: true "
                        "(New-VMSwitch -AllowManagementOS $true) or remove ip");
  }

  void Addresses() {
    std::stable_sort(members_.begin(), members_.end(), [](const Member& a, const Member& b) { return Before(a.loc, b.loc); });
    for (const auto& mb : members_) {
      const Cidr& a = mb.addr;
      std::string addr_text = mb.has_prefix ? a.ToString() : a.addr.ToString();
      if (mb.has_prefix && (a.IsNetworkAddress() || a.IsBroadcastAddress())) {
        ctx_.Error(mb.loc, mb.who + ": address " + addr_text + " is the " +
                               (a.IsNetworkAddress() ? "network" : "broadcast") + " address of " +
                               a.Network().ToString() + "; use a host address, like " +
                               Cidr{Ipv4{a.Network().addr.value + 1}, a.prefix}.ToString());
        reported_.insert({mb.loc.line, mb.loc.col});
        continue;
      }
      if (mb.segment.empty()) continue;
      Segment& seg = segments_[mb.segment];
      if (!mb.defines && !Fits(mb, seg)) {
        reported_.insert({mb.loc.line, mb.loc.col});
        continue;
      }
      auto [prev, fresh] = seg.used.emplace(a.addr.value, std::pair{mb.who, mb.loc});
      if (!fresh) reported_.insert({mb.loc.line, mb.loc.col});
      if (!fresh)
        ctx_.Error(mb.loc, mb.who + ": address " + a.addr.ToString() + " is already used on " + seg.label + " by " +
                               prev->second.first + " (" + LineOf(prev->second.second) +
                               "); give each interface its own address");
    }
  }

  /// Whether an interface address belongs on its segment; reports why not.
  bool Fits(const Member& mb, Segment& seg) {
    const Cidr& a = mb.addr;
    if (seg.bound && !seg.bound->Contains(a.addr)) {
      ctx_.Error(mb.loc, mb.who + ": address " + a.ToString() + " is outside " + seg.bound_label +
                             "; use an address in " + seg.bound->ToString());
      return false;
    }
    if (seg.subnet && !seg.subnet->Contains(a.addr)) {
      ctx_.Error(mb.loc, mb.who + ": address " + a.ToString() + " is outside " + seg.label + " subnet " +
                             seg.subnet->ToString() + "; use an address in " + seg.subnet->ToString());
      return false;
    }
    if (seg.subnet && a.prefix != seg.subnet->prefix) {
      ctx_.Error(mb.loc, mb.who + ": address " + a.ToString() + " has prefix length /" + std::to_string(a.prefix) +
                             ", but " + seg.label + " is " + seg.subnet->ToString() + "; write " +
                             Cidr{a.addr, seg.subnet->prefix}.ToString());
      return false;
    }
    if (seg.subnet) return true;
    if (!seg.first) {
      seg.first = a.Network();
      seg.first_who = mb.who;
      seg.first_loc = mb.loc;
      return true;
    }
    if (a.Network() != *seg.first) {
      ctx_.Error(mb.loc, mb.who + ": address " + a.ToString() + " is not on " + seg.first->ToString() + ", the subnet of " +
                             seg.first_who + " (" + LineOf(seg.first_loc) + ") on " + seg.label +
                             "; put every address on one switch in one subnet");
      return false;
    }
    return true;
  }

  /// Calls `report(outer, inner)` for each span inside an earlier one of another group (the
  /// innermost such that is not quiet), after sorting `spans` by address, bigger prefixes first;
  /// a quiet span is never reported. O(n log n).
  template <typename Report>
  static void Overlaps(std::vector<Span>& spans, Report report) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
      return std::tuple{a.net.addr.value, a.net.prefix, a.loc.line, a.loc.col} <
             std::tuple{b.net.addr.value, b.net.prefix, b.loc.line, b.loc.col};
    });
    std::vector<const Span*> open;  // each contains the ones above it
    for (const Span& s : spans) {
      while (!open.empty() && !open.back()->net.Contains(s.net.addr)) open.pop_back();
      for (auto it = open.rbegin(); it != open.rend() && !s.quiet; ++it)
        if ((*it)->group != s.group && !(*it)->quiet) {
          report(**it, s);
          break;
        }
      open.push_back(&s);
    }
  }

  /// The one of an overlapping pair written later in the file (where the error goes), then the other.
  static std::pair<const Span*, const Span*> LaterFirst(const Span& a, const Span& b) {
    return Before(b.loc, a.loc) ? std::pair{&a, &b} : std::pair{&b, &a};
  }

  void NetworkOverlaps() {
    std::vector<Span> spans;
    for (const auto& n : lab_.networks) {
      if (ctx_.broken_networks.count(n.name)) continue;
      spans.push_back(Span{Span::Kind::kNetwork, n.subnet, n.subnet, n.name, ctx_.At("networks." + n.name + ".subnet", n.loc),
                           next_group_++});
    }
    Overlaps(spans, [&](const Span& a, const Span& b) {
      auto [here, other] = LaterFirst(a, b);
      ctx_.Error(here->loc, "network " + Q(here->name) + ": subnet " + here->net.ToString() + " overlaps " +
                                other->Label() + " at " + PosOf(other->loc) + "; pick another subnet for network " +
                                Q(here->name) + " (the lab's networks are separate wires, and a machine on both "
                                "could not tell which one an address is on)");
    });
  }

  void MachineOverlaps() {
    for (const auto& m : lab_.machines) {
      auto it = machine_spans_.find(&m);
      if (it == machine_spans_.end() || it->second.size() < 2) continue;
      std::vector<Span>& spans = it->second;
      // An address already refused (outside its segment, taken twice) would only echo that error.
      std::erase_if(spans, [&](const Span& s) {
        return s.kind != Span::Kind::kNat && reported_.count({s.loc.line, s.loc.col});
      });
      Overlaps(spans, [&](const Span& a, const Span& b) {
        auto [here, other] = LaterFirst(a, b);
        ctx_.Error(here->loc, Who(m) + ": " + here->Label() + " overlaps " + other->Label() + " at " + PosOf(other->loc) +
                                  "; " + OverlapFix(*here, *other));
      });
    }
  }

  /// What to change about two overlapping subnets of one machine: a subnet the file chooses
  /// freely (a NAT's prefix, an internal switch's), the one where the error is first; else the
  /// interface where the error is (its subnet is its segment's).
  static std::string OverlapFix(const Span& here, const Span& other) {
    auto free = [](const Span& s) { return s.kind == Span::Kind::kNat || s.kind == Span::Kind::kSwitch; };
    const Span& fix = free(here) || !free(other) ? here : other;
    const std::string why = ": on one machine, overlapping subnets send the traffic of both (and the default route) "
                            "through one interface";
    if (fix.kind == Span::Kind::kNat)
      return "pick another prefix for NAT " + Q(fix.name) + " and an address inside it for switch " + Q(fix.owner) +
             " (Hyper-V's New-NetNat refuses an internal prefix that overlaps another)";
    if (fix.kind == Span::Kind::kSwitch)
      return "pick another subnet for switch " + Q(fix.name) + " (its ip, New-NetIPAddress on vEthernet (" + fix.name +
             "))" + why;
    return "put " + std::string(fix.kind == Span::Kind::kNic ? "NIC " : "adapter ") + Q(fix.name) +
           " on another subnet, or remove its ip" + why;
  }

  void Macs() {
    std::stable_sort(macs_.begin(), macs_.end(), [](const MacUse& a, const MacUse& b) { return Before(a.loc, b.loc); });
    std::map<std::string, const MacUse*> seen;
    for (const auto& u : macs_) {
      auto [prev, fresh] = seen.emplace(u.mac, &u);
      if (!fresh)
        ctx_.Error(u.loc, u.who + ": MAC " + u.mac + " is already used by " + prev->second->who + " (" +
                              LineOf(prev->second->loc) + "); give each interface its own MAC");
    }
  }

  void Checks() {
    std::vector<std::string> names;
    for (const auto& m : lab_.machines) names.push_back(m.name);
    for (size_t i = 0; i < lab_.checks.size(); ++i) {
      const Check& c = lab_.checks[i];
      if (lab_.FindMachine(c.from) || ctx_.misspelled.count("hosts")) continue;
      std::string path = i < ctx_.check_paths.size() ? ctx_.check_paths[i] : "";
      std::string label = path.empty() ? "check" : "check " + std::to_string(std::stoi(path.substr(7)) + 1);
      auto close = ClosestMatch(c.from, names);
      ctx_.Error(ctx_.At(path + ".from", c.loc),
                 label + ": from " + Q(c.from) + " is not a machine of this lab; " +
                     (close ? "did you mean " + Q(*close) + "?" : "use the name of a host or VM"));
    }
    // The lab's DNS answers computer names (hostname:, or derived from the machine's name).
    std::vector<std::string> computers;
    for (const auto& m : lab_.machines) computers.push_back(m.hostname.empty() ? m.name : m.hostname);
    CheckTargets(computers);
  }

  /// The host a check is aimed at: ping/resolve's target, tcp's HOST of HOST:PORT, http's URL host.
  static std::string TargetHost(const Check& c) {
    std::string t = c.target;
    if (c.kind == CheckKind::kHttp) {
      t = t.substr(std::string("http://").size());
      t = t.substr(0, t.find_first_of("/?#"));
      if (auto at = t.rfind('@'); at != std::string::npos) t = t.substr(at + 1);
    }
    if (c.kind == CheckKind::kHttp || c.kind == CheckKind::kTcp) t = t.substr(0, t.rfind(':'));
    return t;
  }

  /// A target nothing in the lab answers for fails its check (or, expected to fail, passes
  /// whatever happens): a warning, since a name may be meant to be unknown.
  void CheckTargets(const std::vector<std::string>& machines) {
    if (lab_.checks.empty()) return;
    std::unordered_set<std::string> known;  // lower case: DNS names ignore case
    std::vector<std::string> candidates = machines;
    for (const auto& m : machines) known.insert(Lower(m));
    for (const auto& n : lab_.networks)
      for (const auto& [name, ip] : n.dns_records) {
        known.insert(Lower(name));
        candidates.push_back(name);
      }
    for (size_t i = 0; i < lab_.checks.size(); ++i) {
      const Check& c = lab_.checks[i];
      std::string host = TargetHost(c);
      if (host.empty() || Ipv4::Parse(host) || known.count(Lower(host)) || Lower(host) == "localhost") continue;
      std::string path = i < ctx_.check_paths.size() ? ctx_.check_paths[i] : "";
      std::string label = path.empty() ? "check" : "check " + std::to_string(std::stoi(path.substr(7)) + 1);
      std::string kind = ToString(c.kind);
      auto close = ClosestMatch(host, candidates);
      ctx_.Warning(ctx_.At(path + "." + kind, c.loc),
                   label + ": " + kind + " target " + Q(host) +
                       " is neither a machine of this lab, a dns_records name nor an address, so nothing in the lab "
                       "answers for it" + (c.expect_success ? "" : ", and this check, expected to fail, passes whatever happens") + "; " +
                       (close ? "did you mean " + Q(*close) + "?"
                              : "use a machine's name, add it to a network's dns_records, or use an address"));
    }
  }

  static std::string Lower(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }

  const Lab& lab_;
  ParseContext& ctx_;
  std::map<std::string, Segment> segments_;
  std::map<std::string, std::string> switch_segment_;   // "owner/switch" -> segment ("" unknown)
  std::map<std::string, std::string> nic_segment_;      // "host/nic" -> segment
  std::map<std::string, std::string> adapter_segment_;  // "vm/adapter" -> segment
  std::vector<Member> members_;
  std::vector<MacUse> macs_;
  std::unordered_map<const Machine*, std::vector<Span>> machine_spans_;
  int next_group_ = 0;
  std::set<std::pair<int, int>> reported_;  // (line, col) of addresses refused already
};

}  // namespace

void Validate(const Lab& lab, ParseContext& ctx) { Validator(lab, ctx).Run(); }

}  // namespace lab::schema
