// LinuxHypervisor: the hv API realized with kernel isolation.
//
// Where things live (every path carries the lab's mark "<lab>-<uid>"):
//   RUN/<mark>/m/<machine>      partition of a host or VM (ns handles, root mount point)
//   RUN/<mark>/n/<network>      partition of a lab network (its wire bridge, the stand-in)
//   STATE/disks/<mark>/{m,n}/…  writable layers (differencing disks)
//   cgroup lab/<mark>/m/<host>/<vm>/<nested>…, lab/<mark>/n/<network>
// Interfaces additionally carry an altname "lab.<uid>.<what>" so they can be told apart from
// anything else in a namespace.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <ctime>
#include <mutex>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "base/quote.h"
#include "base/text.h"
#include "hv/hypervisor.h"
#include "hv/kernel/announce.h"
#include "hv/kernel/lifecycle.h"
#include "hv/kernel/bridge_filter.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/probe.h"
#include "hv/kernel/team.h"
#include "hv/linux_observe.h"

namespace lab::hv {
namespace {

using kernel::Netlink;
using kernel::NetNs;
using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kWire = "wire";  // the bridge of a lab network

json ProcessJson(const kernel::ProcessId& p) { return {{"pid", p.pid}, {"start_time", p.start_time}}; }
std::optional<kernel::ProcessId> ProcessFrom(const json& j) {
  if (!j.is_object() || !j.contains("pid")) return std::nullopt;
  return kernel::ProcessId{j.value("pid", 0), j.value("start_time", uint64_t{0})};
}
json ParseFacts(const std::string& facts) {
  json j = json::parse(facts, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? json::object() : j;
}

Status AppendTo(int fd, const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    ssize_t w = ::write(fd, text.data() + off, text.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ErrnoStatus("write");
    off += static_cast<size_t>(w);
  }
  return Status::Ok();
}

std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string Seconds(int ms) {
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
}

/// The last lines a command wrote to a log from `from` on (at most 10 lines, 2,000 characters),
/// each indented.
std::string OutputTail(const std::string& path, off_t from) {
  auto text = ReadFile(path);
  if (!text || static_cast<size_t>(from) >= text->size()) return "";
  std::string out = text->substr(static_cast<size_t>(from));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (out.size() > 2000) out = out.substr(out.size() - 2000);
  auto lines = Split(out, '\n');
  if (lines.size() > 10) lines.erase(lines.begin(), lines.end() - 10);
  std::string tail;
  for (const auto& l : lines) tail += (tail.empty() ? "    " : "\n    ") + l;
  return tail;
}


class LinuxHypervisor final : public Hypervisor {
 public:
  explicit LinuxHypervisor(LabContext ctx) : ctx_(std::move(ctx)) {}
  ~LinuxHypervisor() override {
    // The network namespaces a lab's teardown held (PartitionConfig::hold_network) go together.
    for (int fd : held_networks_) ::close(fd);
  }
  LinuxHypervisor(const LinuxHypervisor&) = delete;
  LinuxHypervisor& operator=(const LinuxHypervisor&) = delete;

  // --- networks -------------------------------------------------------------------------
  Result<std::string> CreateNetwork(const NetworkSpec& s) override {
    auto cfg = NetworkConfig(s.name);
    LAB_RETURN_IF_ERROR(Prepare());
    auto init = kernel::StartPartition(cfg);
    if (!init) return init.status().Prefixed("network '" + s.name + "'");
    Status st = InNs(cfg.run_dir, [&](Netlink& nl) -> Status {
      LAB_RETURN_IF_ERROR(nl.CreateBridge(kWire));
      LAB_RETURN_IF_ERROR(nl.AddAltName(kWire, Mark("net." + s.name)));
      if (s.gateway) LAB_RETURN_IF_ERROR(nl.AddAddress(kWire, Cidr{*s.gateway, s.subnet.prefix}));
      return nl.SetUp(kWire);
    });
    if (!st.ok()) {
      (void)kernel::DestroyPartition(cfg, *init);
      return st.Prefixed("network '" + s.name + "'");
    }
    return json{{"init", ProcessJson(*init)}}.dump();
  }

  Status RemoveNetwork(const NetworkSpec& s, const std::string& facts) override {
    return kernel::DestroyPartition(NetworkConfig(s.name), ProcessFrom(ParseFacts(facts).value("init", json())))
        .Prefixed("network '" + s.name + "'");
  }

  // --- partitions -----------------------------------------------------------------------
  Result<std::string> CreatePartition(const PartitionSpec& s) override {
    LAB_RETURN_IF_ERROR(Prepare());
    if (!s.image_layers.empty()) LAB_RETURN_IF_ERROR(PrepareImages());
    auto cfg = MachineConfig(s);
    cfg.memory_limit = s.memory_bytes;
    cfg.cpu_count = s.processor_count;
    cfg.hostname = s.ComputerName();
    cfg.files = {{"/etc/hostname", s.ComputerName() + "\n"},
                 {"/etc/hosts", s.hosts_file},
                 {"/etc/resolv.conf", ResolvConf({})}};
    auto init = kernel::StartPartition(cfg);  // with lo up
    std::string what = std::string(s.is_host ? "host '" : "VM '") + s.name + "'";
    if (!init) return init.status().Prefixed(what);
    return json{{"init", ProcessJson(*init)}}.dump();
  }

  Status RemovePartition(const PartitionSpec& s, const std::string& facts) override {
    return kernel::DestroyPartition(MachineConfig(s), ProcessFrom(ParseFacts(facts).value("init", json())))
        .Prefixed(std::string(s.is_host ? "host '" : "VM '") + s.name + "'");
  }

  bool PartitionRunning(const PartitionSpec&, const std::string& facts) override {
    auto p = ProcessFrom(ParseFacts(facts).value("init", json()));
    return p && kernel::IsAlive(*p);
  }

  // --- lifecycle of one partition (hv/kernel/lifecycle.h) --------------------------------
  // Stop keeps the disk; CreatePartition starts it again over the same writable layer. A saved
  // partition's init is alive, so PartitionRunning stays true while it is saved.
  Status StopPartition(const PartitionSpec& s, const std::string& facts) override {
    return kernel::StopPartition(MachineConfig(s), ProcessFrom(ParseFacts(facts).value("init", json())))
        .Prefixed(Called(s));
  }

  Result<std::string> SetPartitionMemory(const PartitionSpec& s, const std::string& facts) override {
    if (!PartitionRunning(s, facts)) return Status::Error(Called(s) + ": cannot change memory: it is not running");
    LAB_RETURN_IF_ERROR(kernel::CgroupSetMemoryLimit(MachineConfig(s).cgroup, s.memory_bytes).Prefixed(Called(s)));
    return facts;
  }

  Status SavePartition(const PartitionSpec& s, const std::string& facts) override {
    if (!PartitionRunning(s, facts)) return Status::Error(Called(s) + ": cannot save: it is not running (Start-VM)");
    return kernel::SavePartition(MachineConfig(s)).Prefixed(Called(s));
  }

  Status ResumePartition(const PartitionSpec& s, const std::string& facts) override {
    if (!PartitionRunning(s, facts)) return Status::Error(Called(s) + ": cannot resume: it is not running (Start-VM)");
    return kernel::ResumePartition(MachineConfig(s)).Prefixed(Called(s));
  }

  bool PartitionSaved(const PartitionSpec& s, const std::string& facts) override {
    return PartitionRunning(s, facts) && kernel::CgroupFrozen(MachineConfig(s).cgroup);
  }

  Status CreateCheckpoint(const PartitionSpec& s, const std::string&, const std::string& name) override {
    return kernel::CreateCheckpoint(MachineConfig(s), name).Prefixed(Called(s));
  }

  Status RestoreCheckpoint(const PartitionSpec& s, const std::string& name) override {
    return kernel::RestoreCheckpoint(MachineConfig(s), name).Prefixed(Called(s));
  }

  std::vector<std::string> Checkpoints(const PartitionSpec& s) override {
    auto names = kernel::ListCheckpoints(MachineConfig(s));
    return names ? *names : std::vector<std::string>{};
  }

  /// The Hyper-V name of an interface whose kernel name differs ("Ethernet 2" on "Ethernet-2",
  /// "Network Adapter 2" on "Network-Ad-1a2b") as an altname, so `ip link` shows it.
  static Status AddAlias(Netlink& nl, const std::string& ifname, const std::string& alias) {
    if (alias.empty()) return Status::Ok();
    std::string alt = KernelAltname(alias);
    return alt == ifname ? Status::Ok() : nl.AddAltName(ifname, alt);
  }

  Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionSpec& s) override {
    auto all = kernel::CheckpointDetails(MachineConfig(s));
    if (!all) return all.status().Prefixed(Called(s));
    return all;
  }

  Status RemoveCheckpoint(const PartitionSpec& s, const std::string& name) override {
    return kernel::RemoveCheckpoint(MachineConfig(s), name).Prefixed(Called(s));
  }

  static std::string Called(const PartitionSpec& s) { return std::string(s.is_host ? "host '" : "VM '") + s.name + "'"; }
  // NICs and adapters as the lab file names them ("Ethernet 2"), not by their kernel names.
  static std::string Called(const NicSpec& s) { return "NIC '" + s.Written() + "' of host '" + s.machine + "'"; }
  static std::string Called(const AdapterSpec& s) { return "adapter '" + s.Written() + "' of VM '" + s.vm + "'"; }
  /// `st` with the interface's derived kernel name, wherever a lower layer quoted it ('Ethernet-2'),
  /// as the lab file writes it ('Ethernet 2'): messages show the user's names (docs/names.md).
  template <typename Spec>
  static Status AsWritten(const Status& st, const Spec& s) {
    if (st.ok() || s.alias.empty()) return st;
    return Status::Error(ReplaceQuoted(st.message(), s.name, s.alias));
  }

  // --- host NICs ------------------------------------------------------------------------
  Result<std::string> CreateNic(const NicSpec& s) override {
    const std::string what = Called(s);
    auto wire_ns = NetNs::Open(kernel::NsPath(NetworkRun(s.network), "net"));
    if (!wire_ns) return wire_ns.status().Prefixed(what);
    Status st = InNs(MachineRun(s.machine), [&](Netlink& nl) -> Status {
      int index = 0;
      LAB_RETURN_IF_ERROR(
          CreatePair(nl, s.name, s.port, *wire_ns, OptMac(s.mac), Mark("port." + s.machine + "." + s.name), &index));
      LAB_RETURN_IF_ERROR(nl.AddAltName(s.name, Mark("nic." + s.machine + "." + s.name)));
      LAB_RETURN_IF_ERROR(AddAlias(nl, s.name, s.alias));
      return ConfigureAddress(nl, s.name, s.ip, s.gateway, index);
    });
    if (st.ok()) {
      st = InNs(NetworkRun(s.network), [&](Netlink& nl) -> Status {
        LAB_RETURN_IF_ERROR(nl.AddAltName(s.port, Mark("port." + s.machine + "." + s.name)));
        return nl.AttachUp(s.port, kWire);
      });
    }
    if (!st.ok()) {
      (void)RemoveNic(s, "{}");
      return AsWritten(st, s).Prefixed(what);
    }
    return std::string("{}");
  }

  Result<std::string> SetNicAddress(const NicSpec& s, const std::string& facts) override {
    Status st = InNs(MachineRun(s.machine), [&](Netlink& nl) {
      return ReplaceAddress(MachineRun(s.machine), nl, s.name, s.ip, s.gateway);
    });
    LAB_RETURN_IF_ERROR(AsWritten(st, s).Prefixed(Called(s)));
    return facts;
  }

  Status RemoveNic(const NicSpec& s, const std::string&) override {
    return AsWritten(DeleteLinkIn(MachineRun(s.machine), s.name), s).Prefixed(Called(s));
  }

  // --- switches -------------------------------------------------------------------------
  Result<std::string> CreateSwitch(const SwitchSpec& s) override {
    std::string what = "switch '" + s.name + "' on '" + s.owner + "'";
    // SET: the team's rules before any member joins the bridge, so it never loops
    // (hv/kernel/team.h). The VMs' ports join later; until the engine binds them (lab up), they
    // leave through the primary member.
    Status st = IsTeam(s) ? ReconcileTeam(s, OwnerPorts(s)).status() : Status::Ok();
    if (st.ok()) st = InNs(MachineRun(s.owner), [&](Netlink& nl) -> Status {
      LAB_RETURN_IF_ERROR(nl.CreateBridge(s.ifname));
      LAB_RETURN_IF_ERROR(nl.AddAltName(s.ifname, Mark("sw." + s.name)));
      if (s.management_port) {
        // Hyper-V's "vEthernet (NAME)"; kernel altnames cannot hold spaces.
        LAB_RETURN_IF_ERROR(nl.AddAltName(s.ifname, KernelAltname("vEthernet(" + s.name + ")")));
      }
      if (s.type == "external" && !s.uplinks.empty()) {
        // As on Hyper-V, the switch (and its vEthernet) takes the bound NIC's MAC: the owner's own
        // frames keep the MAC its port filter upstream allows, and it never changes as ports come.
        auto up = nl.FindLink(s.uplinks.front());
        if (!up.ok()) return up.status();
        if (!*up) return Status::Error("interface '" + s.uplinks.front() + "' to bind does not exist");
        LAB_RETURN_IF_ERROR(nl.SetMac(s.ifname, (*up)->mac));
      }
      for (const auto& up : s.uplinks) {
        LAB_RETURN_IF_ERROR(nl.SetMaster(up, s.ifname));
        // A SET member learns no MACs: the switch floods frames for the network to every member
        // and the team's rules let them out through the port's own member only.
        if (IsTeam(s)) LAB_RETURN_IF_ERROR(nl.SetPortLearning(up, false));
      }
      LAB_RETURN_IF_ERROR(nl.SetUp(s.ifname));
      if (s.management_port) LAB_RETURN_IF_ERROR(ConfigureAddress(nl, s.ifname, s.ip, s.gateway));
      return Status::Ok();
    });
    if (st.ok() && s.forwarding) {
      auto ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
      st = ns ? kernel::WriteNetSysctl(*ns, "ipv4/ip_forward", "1") : ns.status();
    }
    if (st.ok() && s.type == "private") {
      // A private switch gives its owner no port: not even frames pass to or from the owner.
      std::lock_guard guard(filter_mu_);
      auto ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
      st = ns ? kernel::IsolateBridgeFromOwner(*ns, PortTable(), PortTableComment(s.owner), s.ifname) : ns.status();
    }
    if (!st.ok()) {
      (void)RemoveSwitch(s, "{}");
      return st.Prefixed(what);
    }
    return std::string("{}");
  }

  Status RemoveSwitch(const SwitchSpec& s, const std::string&) override {
    std::string what = "switch '" + s.name + "' on '" + s.owner + "'";
    if (s.type == "private") LAB_RETURN_IF_ERROR(RemovePortFilter(s.owner, s.ifname).Prefixed(what));
    if (IsTeam(s)) LAB_RETURN_IF_ERROR(RemovePortFilter(s.owner, s.ifname).Prefixed(what));
    return DeleteLinkIn(MachineRun(s.owner), s.ifname).Prefixed(what);
  }

  // --- repairs in place (what Observe found with Finding::in_place) ---------------------
  Status RepairNic(const NicSpec& s) override {
    Status st = InNs(MachineRun(s.machine), [&](Netlink& nl) -> Status {
      LAB_RETURN_IF_ERROR(nl.SetUp(s.name));
      return ConfigureAddress(nl, s.name, s.ip, s.gateway);
    });
    if (st.ok()) st = InNs(NetworkRun(s.network), [&](Netlink& nl) { return nl.SetUp(s.port); });
    return AsWritten(st, s).Prefixed(Called(s));
  }

  Status RepairAdapter(const AdapterSpec& s) override {
    if (TapSide(s))
      return InNs(MachineRun(s.owner), [&](Netlink& nl) { return nl.SetUp(s.port); }).Prefixed(Called(s));
    if (GuestSide(s))
      return AsWritten(InNs(MachineRun(s.vm),
                            [&](Netlink& nl) -> Status {
                              LAB_RETURN_IF_ERROR(nl.SetUp(s.name));
                              return ConfigureAddress(nl, s.name, s.ip, s.gateway);
                            }),
                       s)
          .Prefixed(Called(s));
    Status st = InNs(MachineRun(s.vm), [&](Netlink& nl) -> Status {
      LAB_RETURN_IF_ERROR(nl.SetUp(s.name));
      return ConfigureAddress(nl, s.name, s.ip, s.gateway);
    });
    if (st.ok()) st = InNs(MachineRun(s.owner), [&](Netlink& nl) { return nl.SetUp(s.port); });
    return AsWritten(st, s).Prefixed(Called(s));
  }

  Status RepairSwitch(const SwitchSpec& s) override {
    return InNs(MachineRun(s.owner), [&](Netlink& nl) -> Status {
             LAB_RETURN_IF_ERROR(nl.SetUp(s.ifname));
             if (s.management_port) return ConfigureAddress(nl, s.ifname, s.ip, s.gateway);
             return Status::Ok();
           })
        .Prefixed("switch '" + s.name + "' on '" + s.owner + "'");
  }

  // --- after Move-VM --------------------------------------------------------------------
  Status AnnounceAdapter(const AdapterSpec& s, const std::vector<BridgeAt>& flush) override {
    const std::string what = "announce " + Called(s);
    // A qemu VM's tap side only flushes the switches; its guest side announces.
    if (!TapSide(s) && !fs::exists(kernel::NsPath(MachineRun(s.vm), "net"))) return Status::Ok();  // not running
    for (const auto& b : flush) {
      if (!fs::exists(kernel::NsPath(MachineRun(b.owner), "net"))) continue;  // gone with its owner
      LAB_RETURN_IF_ERROR(InNs(MachineRun(b.owner), [&](Netlink& nl) -> Status {
                            return nl.FlushFdb(b.ifname, s.mac).status();
                          }).Prefixed(what));
    }
    if (TapSide(s)) return Status::Ok();
    auto ns = NetNs::Open(kernel::NsPath(MachineRun(s.vm), "net"));
    if (!ns) return ns.status().Prefixed(what);
    std::optional<Ipv4> address;
    if (s.ip) address = s.ip->addr;
    return AsWritten(kernel::Announce(*ns, s.name, s.mac, address), s).Prefixed(what);
  }

  Result<std::string> SetSwitch(const SwitchSpec& s, const std::string& facts) override {
    Status st = InNs(MachineRun(s.owner), [&](Netlink& nl) -> Status {
      // Rename-VMSwitch: a bridge that is up cannot change its kernel name, but its altnames (the
      // names Hyper-V shows) can change while it forwards.
      const std::string mark = Mark("sw." + s.name);
      const std::string vethernet = KernelAltname("vEthernet(" + s.name + ")");
      LAB_RETURN_IF_ERROR(nl.AddAltName(s.ifname, mark));
      if (s.management_port) LAB_RETURN_IF_ERROR(nl.AddAltName(s.ifname, vethernet));
      auto link = nl.FindLink(s.ifname);
      if (!link.ok()) return link.status();
      if (!*link) return Status::Error("bridge '" + s.ifname + "' does not exist");
      for (const auto& alt : (*link)->altnames) {
        bool old_mark = alt.rfind(Mark("sw."), 0) == 0 && alt != mark;
        bool old_port = alt.rfind("vEthernet(", 0) == 0 && (alt != vethernet || !s.management_port);
        if (old_mark || old_port) LAB_RETURN_IF_ERROR(nl.DeleteAltName(s.ifname, alt));
      }
      if (!s.management_port) return Status::Ok();
      return ReplaceAddress(MachineRun(s.owner), nl, s.ifname, s.ip, s.gateway);
    });
    if (!st.ok()) return st.Prefixed("switch '" + s.name + "' on '" + s.owner + "'");
    return facts;
  }

  // --- SET teams and links (hv/kernel/team.h) -------------------------------------------
  Status SetLink(const PartitionSpec& m, const std::string& ifname, bool up) override {
    return InNs(MachineRun(m.name), [&](Netlink& nl) { return nl.SetUp(ifname, up); })
        .Prefixed("link of '" + ifname + "' on '" + m.name + "'");
  }

  Result<std::vector<TeamMember>> ReconcileTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) override {
    return Team(s, ports, true);
  }
  Result<std::vector<TeamMember>> ObserveTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) override {
    return Team(s, ports, false);
  }

  Result<std::vector<TeamMember>> Team(const SwitchSpec& s, const std::vector<TeamPort>& ports, bool reconcile) {
    std::vector<TeamMember> out;
    Status st = WithPortTable(s.owner, [&](const NetNs& ns) -> Status {
      auto team = reconcile
                      ? kernel::ReconcileTeam(ns, PortTable(), PortTableComment(s.owner), s.ifname, s.uplinks, ports)
                      : kernel::ObserveTeam(ns, PortTable(), s.ifname, s.uplinks, ports);
      if (!team.ok()) return team.status();
      out = std::move(*team);
      return Status::Ok();
    });
    if (!st.ok()) return st.Prefixed("SET team of switch '" + s.name + "' on '" + s.owner + "'");
    return out;
  }

  /// The owner's own port of a switch, when it has one (vEthernet).
  static std::vector<TeamPort> OwnerPorts(const SwitchSpec& s) {
    if (!s.management_port) return {};
    return {TeamPort{kOwnerPortLabel, ""}};
  }

  // --- VM network adapters --------------------------------------------------------------
  // An adapter of a qemu VM has two halves (hv/qemu/driver.h): its switch port, a tap the qemu
  // driver made in the owner and handed to QEMU (TapSide: this driver filters it and makes it a
  // port of the bridge), and the guest's virtio NIC with the adapter's MAC, which the VM's own
  // agent names and addresses (GuestSide: this driver runs inside that VM).
  bool GuestSide(const AdapterSpec& s) const {
    return s.vm_driver == "qemu" && !ctx_.inside.empty() && ctx_.inside.back() == s.vm;
  }
  bool TapSide(const AdapterSpec& s) const { return s.vm_driver == "qemu" && !GuestSide(s); }

  /// The guest's NIC with the adapter's MAC (it appears once QEMU has plugged it: waits up to
  /// `wait_ms`), renamed to the adapter's name, marked, up and addressed.
  Status AdoptGuestNic(const AdapterSpec& s, int wait_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    return InNs(MachineRun(s.vm), [&](Netlink& nl) -> Status {
      std::string mac = s.mac;
      for (auto& c : mac) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (;;) {
        auto links = nl.Links();
        if (!links) return links.status();
        for (const auto& l : *links) {
          if (l.mac != mac) continue;
          if (l.name != s.name) {
            LAB_RETURN_IF_ERROR(nl.SetUp(l.name, false));
            LAB_RETURN_IF_ERROR(nl.Rename(l.name, s.name));
          }
          LAB_RETURN_IF_ERROR(nl.AddAltName(s.name, Mark("adapter." + s.vm + "." + s.name)));
          LAB_RETURN_IF_ERROR(AddAlias(nl, s.name, s.alias));
          LAB_RETURN_IF_ERROR(nl.SetUp(s.name));
          return ConfigureAddress(nl, s.name, s.ip, s.gateway);
        }
        if (std::chrono::steady_clock::now() >= deadline)
          return Status::Error("no network adapter with MAC " + s.mac + " appeared in the VM within " +
                               Seconds(wait_ms) + " (QEMU plugged it; is the guest's PCIe hotplug working?)");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }

  Result<std::string> ConnectAdapter(const AdapterSpec& s) override {
    const std::string what = Called(s);
    if (GuestSide(s)) {
      LAB_RETURN_IF_ERROR(AsWritten(AdoptGuestNic(s, 20000), s).Prefixed(what));
      return std::string("{}");
    }
    if (TapSide(s)) {
      // The tap exists (the qemu driver made it here and holds it open); filtered before it joins.
      auto owner_ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
      if (!owner_ns) return owner_ns.status().Prefixed(what);
      Status st = ApplyPortFilter(s, *owner_ns);
      if (st.ok())
        st = InNs(MachineRun(s.owner), [&](Netlink& nl) -> Status {
          LAB_RETURN_IF_ERROR(nl.AddAltName(s.port, Mark("port." + s.vm + "." + s.name)));
          return nl.AttachUp(s.port, s.switch_ifname);
        });
      if (!st.ok()) return AsWritten(st, s).Prefixed(what);
      return std::string("{}");
    }
    auto owner_ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
    if (!owner_ns) return owner_ns.status().Prefixed(what);
    Status st = InNs(MachineRun(s.vm), [&](Netlink& nl) -> Status {
      int index = 0;
      LAB_RETURN_IF_ERROR(
          CreatePair(nl, s.name, s.port, *owner_ns, OptMac(s.mac), Mark("port." + s.vm + "." + s.name), &index));
      LAB_RETURN_IF_ERROR(nl.AddAltName(s.name, Mark("adapter." + s.vm + "." + s.name)));
      LAB_RETURN_IF_ERROR(AddAlias(nl, s.name, s.alias));
      return ConfigureAddress(nl, s.name, s.ip, s.gateway, index);
    });
    // The port filters before it joins the switch.
    if (st.ok()) st = ApplyPortFilter(s, *owner_ns);
    if (st.ok()) {
      st = InNs(MachineRun(s.owner), [&](Netlink& nl) -> Status {
        LAB_RETURN_IF_ERROR(nl.AddAltName(s.port, Mark("port." + s.vm + "." + s.name)));
        return nl.AttachUp(s.port, s.switch_ifname);
      });
    }
    if (!st.ok()) {
      (void)RemoveAdapter(s, "{}");
      return AsWritten(st, s).Prefixed(what);
    }
    return std::string("{}");
  }

  Status RemoveAdapter(const AdapterSpec& s, const std::string&) override {
    const std::string what = Called(s);
    if (GuestSide(s)) return Status::Ok();  // the NIC leaves with QEMU's unplug
    if (TapSide(s)) {
      if (!fs::exists(kernel::NsPath(MachineRun(s.owner), "net"))) return Status::Ok();
      LAB_RETURN_IF_ERROR(WithPortTable(s.owner, [&](const NetNs& ns) {
                            return kernel::UnfilterPortSourceMac(ns, PortTable(), s.port, s.mac);
                          }).Prefixed(what));
      return DeleteLinkIn(MachineRun(s.owner), s.port).Prefixed(what);
    }
    // An owner gone took the filter along.
    if (fs::exists(kernel::NsPath(MachineRun(s.owner), "net")))
      LAB_RETURN_IF_ERROR(WithPortTable(s.owner, [&](const NetNs& ns) {
                            return kernel::UnfilterPortSourceMac(ns, PortTable(), s.port, s.mac);
                          }).Prefixed(what));
    return AsWritten(DeleteLinkIn(MachineRun(s.vm), s.name), s).Prefixed(what);
  }

  Result<std::string> SetAdapter(const AdapterSpec& s, const std::string& facts) override {
    const std::string what = Called(s);
    if (GuestSide(s)) {
      Status st = InNs(MachineRun(s.vm),
                       [&](Netlink& nl) { return ReplaceAddress(MachineRun(s.vm), nl, s.name, s.ip, s.gateway); });
      LAB_RETURN_IF_ERROR(AsWritten(st, s).Prefixed(what));
      return facts;
    }
    auto owner_ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
    if (!owner_ns) return owner_ns.status().Prefixed(what);
    LAB_RETURN_IF_ERROR(ApplyPortFilter(s, *owner_ns).Prefixed(what));
    if (TapSide(s)) return facts;
    Status st =
        InNs(MachineRun(s.vm), [&](Netlink& nl) { return ReplaceAddress(MachineRun(s.vm), nl, s.name, s.ip, s.gateway); });
    LAB_RETURN_IF_ERROR(AsWritten(st, s).Prefixed(what));
    return facts;
  }

  // --- NAT ------------------------------------------------------------------------------
  Result<std::string> CreateNat(const NatSpec& s) override {
    std::string what = "NAT '" + s.name + "' on '" + s.owner + "'";
    auto ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
    if (!ns) return ns.status().Prefixed(what);
    std::string prefix = s.prefix.ToString();
    // Declared, flushed and filled in one transaction, so applying it again never duplicates.
    std::string ruleset = "table ip " + s.table + " {}\nflush table ip " + s.table + "\ntable ip " + s.table +
                          " {\n  comment \"lab " + ctx_.Mark() + " New-NetNat " + s.name +
                          "\"\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
                          "    ip saddr " + prefix + " ip daddr != " + prefix + " masquerade\n  }\n}\n";
    LAB_RETURN_IF_ERROR(kernel::NftApply(*ns, ruleset).Prefixed(what));
    LAB_RETURN_IF_ERROR(kernel::WriteNetSysctl(*ns, "ipv4/ip_forward", "1").Prefixed(what));
    if (!s.dns_proxy) return std::string("{}");
    // nat.dns_proxy: dnsmasq on the vEthernet address, forwarding to the owner's own DNS servers
    // (its resolv.conf, re-read when it changes), so nested VMs can use their gateway as DNS.
    std::string run = MachineRun(s.owner);
    std::string addr = s.dns_proxy->ToString();
    auto dns = kernel::SpawnInPartition(
        run, MachineCgroup(s.owner_lineage),
        {"/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--resolv-file=/etc/resolv.conf",
         "--no-hosts", "--listen-address=" + addr, "--bind-interfaces", "--user=root", "--pid-file=",
         "--log-facility=/var/log/dnsmasq-nat.log"},
        false, "/var/log/dnsmasq-nat.out");
    if (!dns) {
      (void)kernel::NftDeleteTable(*ns, "ip", s.table);
      return dns.status().Prefixed(what + ": DNS proxy");
    }
    json facts = {{"dns_proxy", ProcessJson(*dns)}};
    Status ready = WaitListening(run, {addr + ":53"}, 3000);
    if (!ready.ok()) {
      (void)RemoveNat(s, facts.dump());
      return ready.Prefixed(what + ": DNS proxy");
    }
    return facts.dump();
  }

  Status RemoveNat(const NatSpec& s, const std::string& facts) override {
    std::string what = "NAT '" + s.name + "' on '" + s.owner + "'";
    if (auto p = ProcessFrom(ParseFacts(facts).value("dns_proxy", json())))
      LAB_RETURN_IF_ERROR(kernel::StopProcess(*p).Prefixed(what + ": DNS proxy"));
    auto ns = NetNs::Open(kernel::NsPath(MachineRun(s.owner), "net"));
    if (!ns) return Status::Ok();  // the owner is gone, and the table with it
    return kernel::NftDeleteTable(*ns, "ip", s.table).Prefixed(what);
  }

  // --- DNS client settings --------------------------------------------------------------
  Result<std::string> SetDns(const DnsSpec& s) override {
    LAB_RETURN_IF_ERROR(kernel::WriteFileInPartition(MachineRun(s.machine), "/etc/resolv.conf", ResolvConf(s.servers))
                            .Prefixed("DNS servers of '" + s.machine + "'"));
    return std::string("{}");
  }

  Status ClearDns(const DnsSpec& s, const std::string&) override {
    // A partition that is gone, or half gone (a run killed while removing it), has no settings
    // left to clear: they go with it, and its next start sets them again.
    for (const char* ns : {"mnt", "net", "uts", "ipc", "pid"})
      if (!fs::exists(kernel::NsPath(MachineRun(s.machine), ns))) return Status::Ok();
    return kernel::WriteFileInPartition(MachineRun(s.machine), "/etc/resolv.conf", ResolvConf({}))
        .Prefixed("DNS servers of '" + s.machine + "'");
  }

  // --- run: commands ----------------------------------------------------------------------
  Result<std::string> RunCommands(const RunSpec& s) override {
    const std::string what = std::string(s.is_host ? "host '" : "VM '") + s.machine + "'";
    const std::string path = RunLogPath(s.machine);
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return Status::Error(what + ": run: create " + fs::path(path).parent_path().string() + ": " + ec.message());
    Fd log(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (log.fd < 0) return ErrnoStatus(what + ": run: open " + path);
    const size_t n = s.commands.size();
    LAB_RETURN_IF_ERROR(AppendTo(log.fd, "# " + UtcNow() + ": " + std::to_string(n) + " command" +
                                                (n == 1 ? "" : "s") + " of " + what + "\n")
                            .Prefixed(what + ": run: write " + path));
    for (size_t i = 0; i < n; ++i) {
      const std::string& cmd = s.commands[i];
      LAB_RETURN_IF_ERROR(AppendTo(log.fd, "$ " + cmd + "\n").Prefixed(what + ": run: write " + path));
      const off_t from = ::lseek(log.fd, 0, SEEK_END);
      auto r = kernel::RunCommandInPartition(MachineRun(s.machine), MachineCgroup(s.lineage), {"/bin/sh", "-c", cmd},
                                             log.fd, s.timeout_ms);
      const std::string which = "command " + std::to_string(i + 1) + " of " + std::to_string(n) + " (" + cmd + ")";
      if (!r) return r.status().Prefixed(what + ": run: " + which);
      if (r->exit_code == 0 && !r->timed_out) continue;
      std::string why = r->timed_out ? "did not finish within its run_timeout of " + Seconds(s.timeout_ms) + " and was killed"
                                     : "exited with code " + std::to_string(r->exit_code);
      std::string tail = OutputTail(path, from < 0 ? 0 : from);
      (void)AppendTo(log.fd, "# " + why + "\n");
      return Status::Error(what + ": run: " + which + " " + why +
                           (tail.empty() ? "; it printed nothing" : "; its last output:\n" + tail) +
                           "\n(all of it: " + ShellCommand({"lab", "logs", ctx_.lab, s.machine}) + "; the next lab up runs the commands again)");
    }
    return json{{"commands", n}, {"log", path}}.dump();
  }

  Status ClearRunLog(const RunSpec& s) override {
    const std::string path = RunLogPath(s.machine);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + path);
    // The lab's log directory goes with its last log.
    const std::string dir = fs::path(path).parent_path().string();
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
      return ErrnoStatus("remove " + dir);
    return Status::Ok();
  }

  Result<std::string> RunLog(const std::string& machine) override {
    const std::string path = RunLogPath(machine);
    if (!fs::exists(path)) return std::string();
    auto text = ReadFile(path);
    if (!text) return Status::Error("cannot read " + path);
    return *text;
  }

  // --- the stand-in outside world -------------------------------------------------------
  Result<std::string> StartStandIn(const StandInSpec& s) override {
    std::string what = "stand-in of network '" + s.network + "'";
    std::string run = NetworkRun(s.network);
    std::string cgroup = NetworkCgroup(s.network);
    std::string hosts = "# lab machine names and dns_records of network " + s.network + "\n";
    for (const auto& [name, addrs] : s.records)
      for (auto ip : addrs) hosts += ip.ToString() + " " + name + "\n";
    LAB_RETURN_IF_ERROR(kernel::WriteFileInPartition(run, "/etc/lab/hosts", hosts).Prefixed(what));
    std::string addr = s.address.ToString();
    // --localise-queries: a machine with an address on this network is answered with that address
    // only, as Windows DNS Server's netmask ordering puts the querier's subnet first (every query
    // reaches the stand-in from this network: directly, or NATed by a middle VM). Without it a
    // multi-homed VM's addresses came back rotated, and half the pings by name went to an address
    // on an internal switch that the asker has no route to.
    auto dns = kernel::SpawnInPartition(
        run, cgroup,
        {"/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--addn-hosts=/etc/lab/hosts", "--localise-queries", "--listen-address=" + addr, "--bind-interfaces",
         "--user=root", "--pid-file=", "--log-facility=/var/log/dnsmasq.log", "--local-service"},
        false, "/var/log/dnsmasq.out");
    if (!dns) return dns.status().Prefixed(what + ": dnsmasq");
    // Noted next to the network's handles as each starts: if lab is killed before the facts are
    // recorded, StopStandIn still finds the services it started (by pid and start time).
    json facts = {{"dnsmasq", ProcessJson(*dns)}};
    (void)WriteFileAtomic(StandInNote(s.network), facts.dump());
    auto web = kernel::SpawnInPartition(run, cgroup, {"lab", "__whoami", addr, "80"}, true, "/var/log/whoami.log");
    if (!web) {
      (void)kernel::StopProcess(*dns);
      return web.status().Prefixed(what + ": whoami");
    }
    facts["whoami"] = ProcessJson(*web);
    (void)WriteFileAtomic(StandInNote(s.network), facts.dump());
    // Ready when both answer on TCP (dnsmasq serves DNS over TCP too).
    Status ready = WaitListening(run, {addr + ":53", addr + ":80"}, 3000);
    if (!ready.ok()) {
      (void)StopStandIn(s, facts.dump());
      return ready.Prefixed(what);
    }
    return facts.dump();
  }

  Status StopStandIn(const StandInSpec& s, const std::string& facts) override {
    json f = ParseFacts(facts);
    json noted = ParseFacts(ReadFile(StandInNote(s.network)).value_or("{}"));
    for (const char* svc : {"dnsmasq", "whoami"})
      for (const json& from : {f, noted})
        if (auto p = ProcessFrom(from.value(svc, json())))
          LAB_RETURN_IF_ERROR(kernel::StopProcess(*p).Prefixed("stand-in of network '" + s.network + "': " + svc));
    (void)::unlink(StandInNote(s.network).c_str());
    // A service whose start was under way when lab was killed was noted nowhere. The network's
    // partition runs nothing but its init and the stand-in, so whatever else is in its cgroup
    // (marked as the lab's) is a stand-in service.
    for (int pid : kernel::CgroupPids(NetworkCgroup(s.network))) {
      kernel::ProcessId p{pid, kernel::ProcessStartTime(pid)};
      if (!IsNamespaceInit(pid)) LAB_RETURN_IF_ERROR(kernel::StopProcess(p).Prefixed(
          "stand-in of network '" + s.network + "': process " + std::to_string(pid)));
    }
    return Status::Ok();
  }

  /// Whether `pid` is pid 1 of its own PID namespace (a partition's init): the last NSpid field.
  static bool IsNamespaceInit(int pid) {
    for (const auto& line : Split(ReadFile("/proc/" + std::to_string(pid) + "/status").value_or(""), '\n'))
      if (line.rfind("NSpid:", 0) == 0) return Trim(line.substr(line.find_last_of(" \t") + 1)) == "1";
    return false;
  }

  bool StandInRunning(const StandInSpec&, const std::string& facts) override {
    json f = ParseFacts(facts);
    for (const char* svc : {"dnsmasq", "whoami"}) {
      auto p = ProcessFrom(f.value(svc, json()));
      if (!p || !kernel::IsAlive(*p)) return false;
    }
    return true;
  }

  // --- drift (hv/linux_observe.h) ------------------------------------------------------
  Drift Observe(const ObserveRequest& r) override {
    Drift d = Hypervisor::Observe(r);
    LinuxPlaces places{[this](const std::string& m) { return MachineRun(m); },
                       [this](const std::string& n) { return NetworkRun(n); }};
    for (auto& [key, what] : ObserveNetworking(r, places, d)) d.emplace(key, what);
    return d;
  }

  // --- inside machines ------------------------------------------------------------------
  Result<ProbeAnswer> Probe(const PartitionSpec& m, const ProbeRequest& r) override {
    auto out = kernel::RunInPartition(
        MachineRun(m.name),
        [&r]() -> std::string {
          kernel::ProbeResult p;
          if (r.kind == "ping") p = kernel::ProbePing(r.target, r.timeout_ms);
          else if (r.kind == "resolve") p = kernel::ProbeResolve(r.target, r.timeout_ms);
          else if (r.kind == "tcp") p = kernel::ProbeTcp(r.target, r.timeout_ms);
          else if (r.kind == "http") p = kernel::ProbeHttp(r.target, r.timeout_ms);
          else p.detail = "unknown probe " + r.kind;
          return json{{"ok", p.ok}, {"detail", p.detail}, {"value", p.value}}.dump();
        },
        r.timeout_ms + 2000);
    if (!out) return out.status().Prefixed("probe from '" + m.name + "'");
    json j = ParseFacts(*out);
    return ProbeAnswer{j.value("ok", false), j.value("detail", std::string("no answer")),
                       j.value("value", std::string())};
  }

  Result<int> Exec(const PartitionSpec& m, const ExecRequest& r) override {
    return kernel::ExecInPartition(MachineRun(m.name), MachineCgroup(m.lineage), r.argv,
                                   kernel::ExecOptions{r.env, r.workdir, r.user, r.tty});
  }

  void TearingDownLab() override {
    tearing_down_lab_ = true;
    // Once for the lab's whole tree, not a walk per partition: nothing freezes a partition of a
    // lab whose lock this teardown holds.
    lab_thawed_ = kernel::ThawCgroupTree("lab/" + ctx_.Mark()).ok();
  }

  Status RemoveLabRoot() override {
    std::vector<std::string> dirs = {LabRun() + "/m", LabRun() + "/n", LabRun()};
    for (const auto& d : dirs)
      if (::rmdir(d.c_str()) != 0 && errno != ENOENT)
        return ErrnoStatus("remove " + d);
    // The lab's disks, all of them: also those of a VM whose record was dropped when its
    // remaking failed halfway (its disk is kept for the next up; down is the end of it).
    // RemoveTree never crosses into a mount.
    LAB_RETURN_IF_ERROR(kernel::RemoveTree(ctx_.state_root + "/disks/" + ctx_.Mark()));
    // What the machines' run: commands printed: the lab is gone, and so are its logs.
    LAB_RETURN_IF_ERROR(kernel::RemoveTree(ctx_.state_root + "/logs/" + ctx_.lab));
    for (const char* sub : {"/m", "/n", ""})
      LAB_RETURN_IF_ERROR(kernel::RemoveCgroup("lab/" + ctx_.Mark() + sub));
    // The last lab out also releases what all labs share: the run root's bind mount and the
    // "lab" cgroup. Only when no other lab is starting (exclusive lock, not waited for).
    run_lock_.reset();
    std::optional<Fd> exclusive;
    if (LockRunRoot(LOCK_EX | LOCK_NB, exclusive).ok()) {
      LAB_RETURN_IF_ERROR(kernel::ReleaseRunRoot(ctx_.run_root));
      // Other labs (other run roots: other users' state, test sandboxes) may have cgroups
      // there: only an empty "lab" cgroup goes, and nothing of theirs is touched.
      kernel::RemoveCgroupIfEmpty("lab");
    }
    return Status::Ok();
  }

 private:
  /// A file descriptor closed on destruction.
  struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    Fd& operator=(Fd&&) = delete;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };

  Status LockRunRoot(int how, std::optional<Fd>& holder) {
    std::string path = ctx_.state_root + "/run-root.lock";
    std::error_code ec;
    fs::create_directories(ctx_.state_root, ec);
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (fd.fd < 0) return ErrnoStatus("open " + path);
    if (::flock(fd.fd, how) != 0) return ErrnoStatus("lock " + path);
    holder.emplace(std::move(fd));
    return Status::Ok();
  }

  /// Readies the run root and base layer before the first partition. Holds the run-root lock
  /// shared for this hypervisor's lifetime, so a `down` of another lab cannot release the run
  /// root while this one is starting partitions under it.
  Status Prepare() {
    std::call_once(prepared_, [this] {
      prepare_status_ = LockRunRoot(LOCK_SH, run_lock_);
      if (prepare_status_.ok()) prepare_status_ = kernel::EnsureRunRoot(ctx_.run_root);
      if (prepare_status_.ok()) prepare_status_ = kernel::EnsureBaseLayer(ctx_.state_root + "/base");
    });
    return prepare_status_;
  }

  /// Readies what machines on images need, once: lab's small layer over their images and /opt/lab
  /// with lab's libraries (kernel::EnsureToolsForImages), both kept under the image cache.
  Status PrepareImages() {
    std::call_once(images_prepared_, [this] {
      images_status_ = kernel::EnsureImageBaseLayer(ImageBaseDir());
      if (images_status_.ok())
        images_status_ = kernel::EnsureToolsForImages(ToolsForImagesDir(), LabBinary(), ctx_.init_path);
    });
    return images_status_;
  }
  std::string ImageBaseDir() const { return ctx_.state_root + "/images/lab-layer-1"; }
  /// lab next to lab-init (the build tree), else this process's own binary (an installed lab).
  std::string LabBinary() const {
    fs::path beside = fs::path(ctx_.init_path).parent_path() / "lab";
    std::error_code ec;
    if (fs::exists(beside, ec)) return beside.string();
    return fs::read_symlink("/proc/self/exe", ec).string();
  }
  /// One directory per build of lab and lab-init (by their identity and mtime): a new lab gets
  /// new tools, running VMs keep the ones they were started with.
  std::string ToolsForImagesDir() const {
    std::string id;
    for (const std::string& f : {LabBinary(), ctx_.init_path}) {
      struct stat st {};
      if (::stat(f.c_str(), &st) == 0)
        id += std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
              std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016zx", std::hash<std::string>{}(id));
    return ctx_.state_root + "/images/tools/" + hex;
  }

  std::string LabRun() const { return ctx_.run_root + "/" + ctx_.Mark(); }
  /// STATE/logs/<lab>/<machine>.log: by the lab's name, so `lab logs` finds it without the mark.
  std::string RunLogPath(const std::string& machine) const {
    return ctx_.state_root + "/logs/" + ctx_.lab + "/" + KernelPathName(machine) + ".log";
  }
  // Machines' directories and cgroups by KernelPathName: a Hyper-V name may hold spaces and dots.
  std::string MachineRun(const std::string& name) const { return LabRun() + "/m/" + KernelPathName(name); }
  std::string NetworkRun(const std::string& name) const { return LabRun() + "/n/" + name; }
  std::string MachineCgroup(const std::vector<std::string>& lineage) const {
    std::vector<std::string> safe;
    for (const auto& m : lineage) safe.push_back(KernelPathName(m));
    return "lab/" + ctx_.Mark() + "/m/" + Join(safe, "/");
  }
  std::string StandInNote(const std::string& network) const { return NetworkRun(network) + "/standin.json"; }
  std::string NetworkCgroup(const std::string& name) const { return "lab/" + ctx_.Mark() + "/n/" + name; }
  /// An ownership mark (an altname): KernelAltname keeps a Hyper-V name's spaces and length legal.
  std::string Mark(const std::string& what) const { return KernelAltname("lab." + ctx_.uid + "." + what); }

  /// The bridge-family table of port settings inside each switch owner (one per owner).
  std::string PortTable() const { return "lab_" + ctx_.uid + "_ports"; }
  std::string PortTableComment(const std::string& owner) const {
    return "lab " + ctx_.Mark() + ": port settings of the switches on " + owner;
  }

  /// Set-VMNetworkAdapter -MacAddressSpoofing: Off filters the port's source MACs, On has no rule.
  Status ApplyPortFilter(const AdapterSpec& s, const NetNs& owner_ns) {
    std::lock_guard guard(filter_mu_);
    if (s.mac_address_spoofing) return kernel::UnfilterPortSourceMac(owner_ns, PortTable(), s.port, s.mac);
    return kernel::FilterPortSourceMac(owner_ns, PortTable(), PortTableComment(s.owner), s.port, s.mac);
  }

  static bool IsTeam(const SwitchSpec& s) { return s.type == "external" && s.embedded_teaming; }

  /// Runs fn on the owner's namespace holding the port-table lock.
  Status WithPortTable(const std::string& owner, const std::function<Status(const NetNs&)>& fn) {
    auto ns = NetNs::Open(kernel::NsPath(MachineRun(owner), "net"));
    if (!ns) return ns.status();
    std::lock_guard guard(filter_mu_);
    return fn(*ns);
  }

  /// Removes the filter of a private bridge or SET team `id` inside `owner`; an owner
  /// gone took it along.
  Status RemovePortFilter(const std::string& owner, const std::string& id) {
    if (!fs::exists(kernel::NsPath(MachineRun(owner), "net"))) return Status::Ok();
    return WithPortTable(owner, [&](const NetNs& ns) { return kernel::RemoveBridgeFilter(ns, PortTable(), id); });
  }

  kernel::PartitionConfig BaseConfig(const std::string& name) const {
    kernel::PartitionConfig c;
    c.lab = ctx_.lab;
    c.lab_uid = ctx_.uid;
    c.machine = name;
    c.base_dir = ctx_.state_root + "/base";
    c.run_root = ctx_.run_root;
    c.init_path = ctx_.init_path;
    // lab-init sits next to lab: that directory is the hypervisor inside a VM (/opt/lab).
    c.tools_dir = fs::path(ctx_.init_path).parent_path().string();
    return c;
  }
  /// A whole lab's teardown: cgroups go in bulk at the end, the tree was thawed once, and the
  /// network namespaces are released together when this hypervisor goes.
  void ForTeardown(kernel::PartitionConfig& c) const {
    if (!tearing_down_lab_) return;
    c.keep_cgroup_on_destroy = true;
    c.thawed_by_caller = lab_thawed_;
    c.hold_network = [this](int fd) {
      std::lock_guard guard(held_mu_);
      held_networks_.push_back(fd);
    };
  }
  kernel::PartitionConfig MachineConfig(const PartitionSpec& s) const {
    auto c = BaseConfig(s.name);
    ForTeardown(c);
    c.run_dir = MachineRun(s.name);
    c.disk_dir = ctx_.state_root + "/disks/" + ctx_.Mark() + "/m/" + KernelPathName(s.name);
    c.cgroup = MachineCgroup(s.lineage);
    if (!s.parent().empty()) c.parent_run_dir = MachineRun(s.parent());
    // Set-VMProcessor -ExposeVirtualizationExtensions, enforced by the kernel (seccomp).
    c.allow_nesting = s.is_host || s.expose_virtualization_extensions;
    c.parent_allows_nesting = s.parent().empty() || s.parent_exposes;
    if (!s.image_layers.empty()) {
      c.image_layers = s.image_layers;
      c.base_dir = ImageBaseDir();
      c.tools_dir = ToolsForImagesDir();
    }
    return c;
  }
  kernel::PartitionConfig NetworkConfig(const std::string& name) const {
    auto c = BaseConfig(name);
    ForTeardown(c);
    c.run_dir = NetworkRun(name);
    c.disk_dir = ctx_.state_root + "/disks/" + ctx_.Mark() + "/n/" + name;
    c.cgroup = NetworkCgroup(name);
    c.files = {{"/etc/hostname", name + "\n"},
               {"/etc/hosts", "127.0.0.1 localhost\n"},
               {"/etc/resolv.conf", ResolvConf({})}};
    return c;
  }

  static std::optional<std::string> OptMac(const std::string& mac) {
    return mac.empty() ? std::nullopt : std::optional<std::string>(mac);
  }

  /// `index`: ifname's ifindex when known (0: looked up by name).
  static Status ConfigureAddress(Netlink& nl, const std::string& ifname, const std::optional<Cidr>& ip,
                                 const std::optional<Ipv4>& gateway, int index = 0) {
    if (ip) LAB_RETURN_IF_ERROR(nl.AddAddress(ifname, *ip, index));
    if (gateway) LAB_RETURN_IF_ERROR(nl.SetDefaultRoute(*gateway));
    return Status::Ok();
  }

  /// The address of a live interface changed in place (no flap): `ifname` (inside the partition
  /// at run_dir, reached through `nl`) ends up with exactly `ip` and the default route via
  /// `gateway`, or none through it. The new address comes first, the others go, and the route is
  /// set last: removing an address takes the routes through it. A step that fails puts back the
  /// addresses and the default route the interface had.
  static Status ReplaceAddress(const std::string& run_dir, Netlink& nl, const std::string& ifname,
                               const std::optional<Cidr>& ip, const std::optional<Ipv4>& gateway) {
    auto link = nl.FindLink(ifname);
    if (!link.ok()) return link.status();
    if (!*link) return Status::Error("interface '" + ifname + "' does not exist");
    const int index = (*link)->index;
    auto ns = NetNs::Open(kernel::NsPath(run_dir, "net"));
    if (!ns) return ns.status();
    auto addrs = nl.Addresses();
    if (!addrs.ok()) return addrs.status();
    std::vector<Cidr> had;
    for (const auto& a : *addrs)
      if (a.index == index) had.push_back(a.address);
    const std::optional<Ipv4> had_gateway = DefaultGatewayThrough(*ns, (*link)->name);
    auto apply = [&]() -> Status {
      if (ip && std::any_of(had.begin(), had.end(), [&](const Cidr& a) { return a != *ip; })) {
        // A new address in the old one's subnet is its secondary, and Linux deletes the
        // secondaries with their primary unless they are promoted.
        LAB_RETURN_IF_ERROR(kernel::WriteNetSysctl(*ns, "ipv4/conf/" + (*link)->name + "/promote_secondaries", "1"));
      }
      if (ip) LAB_RETURN_IF_ERROR(nl.AddAddress(ifname, *ip, index));
      for (const auto& a : had)
        if (!ip || a != *ip) LAB_RETURN_IF_ERROR(nl.DeleteAddress(ifname, a));
      if (gateway) return nl.SetDefaultRoute(*gateway);
      return nl.DeleteDefaultRoute(index);
    };
    Status st = apply();
    if (st.ok()) return st;
    if (ip && std::find(had.begin(), had.end(), *ip) == had.end()) (void)nl.DeleteAddress(ifname, *ip);
    for (const auto& a : had) (void)nl.AddAddress(ifname, a, index);
    if (had_gateway) (void)nl.SetDefaultRoute(*had_gateway);
    return st;
  }

  /// The gateway of the default route through interface `ifname` inside `ns`, if there is one
  /// (from the kernel's route table as /proc shows it to a thread in that namespace).
  static std::optional<Ipv4> DefaultGatewayThrough(const NetNs& ns, const std::string& ifname) {
    std::string routes;
    (void)kernel::WithNetNs(ns, [&] {
      routes = ReadFile("/proc/thread-self/net/route").value_or("");
      return Status::Ok();
    });
    for (const auto& line : Split(routes, '\n')) {
      auto f = Split(line, '\t');
      if (f.size() < 3 || Trim(f[0]) != ifname || f[1] != "00000000") continue;
      // The gateway's bytes in network order, printed as a little-endian number.
      uint32_t le = static_cast<uint32_t>(std::strtoul(f[2].c_str(), nullptr, 16));
      return Ipv4{(le & 0xff) << 24 | ((le >> 8) & 0xff) << 16 | ((le >> 16) & 0xff) << 8 | le >> 24};
    }
    return std::nullopt;
  }

  /// Runs fn with a route socket inside the partition at run_dir.
  static Status InNs(const std::string& run_dir, const std::function<Status(Netlink&)>& fn) {
    auto ns = NetNs::Open(kernel::NsPath(run_dir, "net"));
    if (!ns) return ns.status();
    auto nl = Netlink::In(*ns);
    if (!nl) return nl.status();
    return fn(*nl);
  }

  /// Creates the veth pair of a NIC or adapter: `name` through `nl`, up, and its switch port
  /// `port` in `port_ns` (down and on no bridge yet: AttachUp does both). The kernel frees a
  /// stopped partition's network namespace in the background, so the port of the machine's
  /// previous run (same name, and `port_mark`: this very adapter's mark) can outlive it for a
  /// moment; such a port is deleted (with its dying peer) and the pair made again. A port of that
  /// name without the mark is not ours and is left alone. `index` receives `name`'s ifindex
  /// (0 when the kernel did not say).
  static Status CreatePair(Netlink& nl, const std::string& name, const std::string& port, const NetNs& port_ns,
                           const std::optional<std::string>& mac, const std::string& port_mark, int* index) {
    Status st = nl.CreateVeth(name, nullptr, port, &port_ns, mac, /*up=*/true, index);
    if (st.ok()) return st;
    auto owner = Netlink::In(port_ns);
    if (!owner) return st;
    auto stale = owner->FindLink(port);
    if (!stale.ok() || !*stale) return st;
    const auto& alts = (*stale)->altnames;
    if (std::find(alts.begin(), alts.end(), port_mark) == alts.end()) return st;
    LAB_RETURN_IF_ERROR(owner->DeleteLink(port).Prefixed("remove the stale port '" + port + "'"));
    return nl.CreateVeth(name, nullptr, port, &port_ns, mac, /*up=*/true, index);
  }

  /// Deletes a link inside a partition; a partition already gone means the link is gone too.
  static Status DeleteLinkIn(const std::string& run_dir, const std::string& ifname) {
    if (!fs::exists(kernel::NsPath(run_dir, "net"))) return Status::Ok();
    return InNs(run_dir, [&](Netlink& nl) { return nl.DeleteLink(ifname); });
  }

  static Status WaitListening(const std::string& run_dir, const std::vector<std::string>& endpoints,
                              int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string last;
    while (true) {
      auto out = kernel::RunInPartition(
          run_dir,
          [&endpoints]() -> std::string {
            for (const auto& e : endpoints) {
              auto r = kernel::ProbeTcp(e, 200);
              if (!r.ok) return e + ": " + r.detail;
            }
            return "";
          },
          2000);
      if (out && out->empty()) return Status::Ok();
      last = out ? *out : out.message();
      if (std::chrono::steady_clock::now() > deadline) return Status::Error("not answering: " + last);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  LabContext ctx_;
  std::mutex filter_mu_;  // port tables are listed, then changed: one change at a time
  std::once_flag prepared_;
  std::atomic<bool> tearing_down_lab_{false};  // TearingDownLab: cgroups go with RemoveLabRoot
  std::atomic<bool> lab_thawed_{false};        // TearingDownLab thawed the lab's cgroup tree
  mutable std::mutex held_mu_;
  mutable std::vector<int> held_networks_;     // hold_network: closed by the destructor
  std::optional<Fd> run_lock_;
  Status prepare_status_;
  std::once_flag images_prepared_;
  Status images_status_;
};

}  // namespace

std::unique_ptr<Hypervisor> MakeLinuxHypervisor(const LabContext& ctx) {
  return std::make_unique<LinuxHypervisor>(ctx);
}

}  // namespace lab::hv
