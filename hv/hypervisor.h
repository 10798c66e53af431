// The embedded hypervisor's API, as the engine sees it.
//
// One method per Hyper-V concept; specs are plain data (hv/spec.h). Create* returns the facts
// observed while making the object (JSON text: pids and start times, kernel names), which the
// engine records and hands back to Remove* and Running*. Remove* of something already gone is
// success, so an interrupted teardown can simply run again.
//
// Implementations: LinuxHypervisor (kernel isolation; hv/linux_hypervisor.h) and, in tests, a
// recording fake. A future QEMU/KVM driver sits behind the same interface.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/spec.h"
#include "hv/team.h"

namespace lab::hv {

/// Where a lab's objects live, and the mark they carry.
struct LabContext {
  std::string lab;                      // lab name
  std::string uid;                      // the lab's ownership mark (12 hex digits)
  std::string run_root = "/run/lab";    // namespace handles, partition roots
  std::string state_root = "/var/lib/lab";  // disks (writable layers), base layer
  std::string init_path;                // the lab-init binary
  /// The qemu VMs this hypervisor runs inside, outermost first: empty on the real machine; in a
  /// qemu VM's agent, that VM's chain (its `within` and itself). The last is the machine whose
  /// root namespaces the agent's partition driver sees as that machine.
  std::vector<std::string> inside;
  /// In a qemu VM on the host's software: the real machine's state directory as the guest sees it
  /// (read-only), where guest kernels and initramfs images are found for qemu VMs inside. "" = none.
  std::string shared_state;
  /// "<lab>-<uid>": the name every object path of the lab contains.
  std::string Mark() const { return lab + "-" + uid; }
};

/// What `lab check` asks a machine to do.
struct ProbeRequest {
  std::string kind;                     // ping | resolve | tcp | http
  std::string target;
  int timeout_ms = 2000;
};
/// What `lab exec` runs inside a machine and how (docker exec's options).
struct ExecRequest {
  std::vector<std::string> argv;        // the command; not empty
  std::vector<std::string> env;         // VAR=VALUE each, over the machine's defaults
  std::string workdir;                  // "" = /
  std::string user;                     // a name or uid of the machine's /etc/passwd; "" = root
  bool tty = false;                     // a terminal of the machine's own /dev/pts, relayed to ours
  // Where the command's input comes from and its output goes, for a machine inside a qemu VM
  // (its agent's session); a partition's command has our stdin, stdout and stderr themselves.
  int in_fd = 0;
  int out_fd = 1;
};
struct ProbeAnswer {
  bool ok = false;
  std::string detail;
  std::string value;
};

/// A recorded object the engine asks about: its key in the lab (the engine's, returned as is),
/// its spec and the facts recorded when it was made.
template <typename Spec>
struct Recorded {
  std::string key;
  Spec spec;
  std::string facts;
};

/// What a driver found of one recorded interface (a host's NIC, a VM's adapter, a switch's
/// vEthernet) inside its machine, for `lab status`.
struct SeenInterface {
  std::string machine;
  std::string name;                     // as the lab file calls it ("vEthernet (VmNAT)" for a switch)
  bool up = false;                      // administratively up
  std::vector<Cidr> addresses;          // its IPv4 addresses as they are
};

/// What a driver found of the machines it looked into, beyond drift.
struct Seen {
  std::map<std::string, SeenInterface> interfaces;            // by the interface's key
  std::map<std::string, std::vector<Ipv4>> default_gateways;  // machine -> its default routes' gateways
  std::map<std::string, std::vector<Ipv4>> dns_servers;       // machine -> its resolv.conf's nameservers
};

/// Everything recorded of a lab, asked about at once so a driver can observe in bulk (one link
/// and one address dump per namespace, one listing per nftables table).
struct ObserveRequest {
  /// Where to put what was found besides drift (addresses, links, routes, DNS), when wanted.
  Seen* seen = nullptr;
  std::vector<Recorded<NetworkSpec>> networks;
  std::vector<Recorded<PartitionSpec>> partitions;
  std::vector<Recorded<NicSpec>> nics;
  std::vector<Recorded<SwitchSpec>> switches;
  std::vector<Recorded<AdapterSpec>> adapters;
  std::vector<Recorded<NatSpec>> nats;
  std::vector<Recorded<DnsSpec>> dns;
  std::vector<Recorded<StandInSpec>> standins;
};

/// One drifted object: what was found instead of the record, and whether the object itself is
/// there with only its settings gone (a link set down, an address or the default route deleted,
/// resolv.conf rewritten), which Repair* puts back in place, or must be made again.
struct Finding {
  std::string what;
  bool in_place = false;
  Finding() = default;
  Finding(std::string w, bool repair_in_place = false) : what(std::move(w)), in_place(repair_in_place) {}
  Finding(const char* w) : what(w) {}
};

/// Drift: key -> what was found instead of the record ("not running", "veth 'Ethernet' of VM
/// 'nested1' is missing", "address of ... is 10.0.0.9/24, not 192.168.100.2/24"). Keys not in
/// it were found as recorded (or are not observed by the driver).
using Drift = std::map<std::string, Finding>;

/// A switch's bridge, where forwarding entries are flushed (AnnounceAdapter).
struct BridgeAt {
  std::string owner;                    // the machine holding it
  std::string ifname;
};

/// What a live migration (Hypervisor::MigratePartition) did.
struct LiveMigration {
  std::string facts;        // the VM's facts on its destination
  int64_t total_ms = 0;     // from start to the VM running at the destination
  int64_t downtime_ms = 0;  // the VM paused between source and destination
  bool earlier = false;     // it was there already: moved by an earlier run that stopped part way
};

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  virtual Result<std::string> CreateNetwork(const NetworkSpec& s) = 0;
  virtual Status RemoveNetwork(const NetworkSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> CreatePartition(const PartitionSpec& s) = 0;
  virtual Status RemovePartition(const PartitionSpec& s, const std::string& facts) = 0;
  /// Whether the partition recorded with `facts` is still running (its init alive).
  virtual bool PartitionRunning(const PartitionSpec& s, const std::string& facts) = 0;

  // Lifecycle of one partition (Stop-VM, Start-VM, Save-VM, Checkpoint-VM, ...). Drivers that
  // cannot do one say so; the engine checks the rules (hv/model.h) before calling.
  /// Stop-VM: ends every process of the partition and frees its namespaces and cgroup, keeping
  /// its disk (the writable layer). CreatePartition starts it again on the same disk.
  /// Children partitions must be stopped first.
  virtual Status StopPartition(const PartitionSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot stop a VM");
  }
  /// Set-VMMemory on a running VM (the rules allowed it: no hypervisor runs inside): its memory
  /// limit becomes s.memory_bytes, the processes keep running. Returns the new facts.
  virtual Result<std::string> SetPartitionMemory(const PartitionSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot change a running VM's memory");
  }
  /// Save-VM: freezes every process of the partition (and of the partitions inside it).
  virtual Status SavePartition(const PartitionSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot save a VM");
  }
  /// Start-VM of a saved VM: thaws it.
  virtual Status ResumePartition(const PartitionSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot resume a VM");
  }
  /// Whether the partition is frozen (saved).
  virtual bool PartitionSaved(const PartitionSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return false;
  }
  /// Move-VM of a running VM as a live migration: the VM `from` (running, recorded with `facts`)
  /// goes on running as `to` (the same VM placed on its destination host), its memory, processes
  /// and disk carried over while it runs; `adapters` are its adapters as they are on the
  /// destination (their switches' owner is the new host; same names, MACs and ports). On success
  /// nothing of it runs at the source any more; on error the VM runs on at the source and nothing
  /// is left at the destination. A driver that cannot says so (the engine then moves it by quick
  /// migration: off at the source, started at the destination).
  virtual Result<LiveMigration> MigratePartition(const PartitionSpec& from, const std::string& facts,
                                                 const PartitionSpec& to, const std::vector<AdapterSpec>& adapters) {
    (void)from, (void)facts, (void)to, (void)adapters;
    return Status::Error("this hypervisor cannot migrate a running VM live");
  }
  /// Checkpoint-VM -SnapshotName NAME: a copy of the partition's writable layer.
  virtual Status CreateCheckpoint(const PartitionSpec& s, const std::string& facts, const std::string& name) {
    (void)s, (void)facts, (void)name;
    return Status::Error("this hypervisor cannot take checkpoints");
  }
  /// Restore-VMCheckpoint: the writable layer becomes the checkpoint's copy again. The partition
  /// must be stopped (the engine stops and starts it around this).
  virtual Status RestoreCheckpoint(const PartitionSpec& s, const std::string& name) {
    (void)s, (void)name;
    return Status::Error("this hypervisor cannot restore checkpoints");
  }
  /// Names of the partition's checkpoints, oldest first.
  virtual std::vector<std::string> Checkpoints(const PartitionSpec& s) {
    (void)s;
    return {};
  }
  /// Get-VMSnapshot: the checkpoints, oldest first, with when each was taken and its size.
  virtual Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionSpec& s) {
    std::vector<CheckpointInfo> out;
    for (auto& name : Checkpoints(s)) out.push_back(CheckpointInfo{name, 0, 0});
    return out;
  }
  /// Remove-VMSnapshot -Name NAME: deletes one checkpoint; unknown names are an error.
  virtual Status RemoveCheckpoint(const PartitionSpec& s, const std::string& name) {
    (void)s, (void)name;
    return Status::Error("this hypervisor cannot remove checkpoints");
  }

  /// A machine's `run:` commands: runs them inside it, in order, each by `/bin/sh -c` within
  /// s.timeout_ms, appending what they print to the machine's run log (RunLog). Stops at the first
  /// that fails (an exit code other than 0, or its time is up): the error names the command,
  /// its exit code and the end of its output. Returns the facts.
  virtual Result<std::string> RunCommands(const RunSpec& s) {
    (void)s;
    return Status::Error("this hypervisor cannot run commands in a machine");
  }
  /// Removes the machine's run log (the machine left the lab, or the lab is taken down).
  virtual Status ClearRunLog(const RunSpec& s) {
    (void)s;
    return Status::Ok();
  }
  /// What the machine's `run:` commands printed, oldest first; "" when none ran.
  virtual Result<std::string> RunLog(const std::string& machine) {
    (void)machine;
    return std::string();
  }

  virtual Result<std::string> CreateNic(const NicSpec& s) = 0;
  virtual Status RemoveNic(const NicSpec& s, const std::string& facts) = 0;
  /// New-NetIPAddress / Remove-NetIPAddress / Set-NetRoute on a NIC that exists: it ends up with
  /// exactly s.ip (its other IPv4 addresses go) and the default route via s.gateway, or none
  /// through it. The link is neither remade nor set down. Returns the new facts.
  virtual Result<std::string> SetNicAddress(const NicSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot change a NIC's address in place");
  }

  virtual Result<std::string> CreateSwitch(const SwitchSpec& s) = 0;
  virtual Status RemoveSwitch(const SwitchSpec& s, const std::string& facts) = 0;
  /// Rename-VMSwitch and the address of its vEthernet (NAME), on a switch that exists: its
  /// names become s.name's (the bridge's kernel name s.ifname stays), its management port holds
  /// exactly s.ip with the default route via s.gateway (or none through it). Nothing is
  /// remade, no port leaves it. Returns the new facts.
  virtual Result<std::string> SetSwitch(const SwitchSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot change a switch in place");
  }

  virtual Result<std::string> ConnectAdapter(const AdapterSpec& s) = 0;
  virtual Status RemoveAdapter(const AdapterSpec& s, const std::string& facts) = 0;
  /// Set-VMNetworkAdapter and the guest's New-NetIPAddress / Set-NetRoute on a connected adapter:
  /// applies `s` (which differs from the connected adapter only in mac_address_spoofing, its
  /// address, its gateway and the switch's name) without reconnecting it: the adapter ends up with
  /// exactly s.ip and the default route via s.gateway (or none through it), its link never goes
  /// down. Returns the new facts.
  virtual Result<std::string> SetAdapter(const AdapterSpec& s, const std::string& facts) {
    (void)s, (void)facts;
    return Status::Error("this hypervisor cannot change a connected adapter");
  }

  /// Puts back in place what a fault took from a made NIC, adapter or switch's vEthernet (found
  /// with Finding::in_place): its link (and its switch port's) up, its address, and, with a
  /// gateway, the machine's default route through it. Remakes nothing; idempotent.
  virtual Status RepairNic(const NicSpec& s) {
    (void)s;
    return Status::Error("this hypervisor cannot repair a NIC in place");
  }
  virtual Status RepairAdapter(const AdapterSpec& s) {
    (void)s;
    return Status::Error("this hypervisor cannot repair an adapter in place");
  }
  virtual Status RepairSwitch(const SwitchSpec& s) {
    (void)s;
    return Status::Error("this hypervisor cannot repair a switch in place");
  }

  /// After Move-VM, as Hyper-V does: drops the forwarding entries for the connected adapter's
  /// MAC from `flush` (its switch's bridge and the one it left), then announces the MAC from
  /// inside the VM (a gratuitous ARP for its address, a RARP without one), so the switches on
  /// the way learn where it is now. A VM not running has nothing to announce (Ok).
  virtual Status AnnounceAdapter(const AdapterSpec& s, const std::vector<BridgeAt>& flush) {
    (void)s, (void)flush;
    return Status::Error("this hypervisor cannot announce an adapter");
  }

  /// Fault injection (`lab link`): sets interface `ifname` of `machine` (a host's NIC, a VM's
  /// adapter) administratively down or up, as pulling or plugging its cable. Teams do not react
  /// by themselves: the caller reconciles the switches teaming it (ReconcileTeam).
  virtual Status SetLink(const PartitionSpec& machine, const std::string& ifname, bool up) {
    (void)machine, (void)ifname, (void)up;
    return Status::Error("this hypervisor cannot change a link");
  }
  /// A SET switch binds `ports` (its VM adapters' ports and, with a management port, the
  /// owner's vEthernet) to the members whose link is up (hv/team.h: every member active,
  /// HyperVPort affinity) and enforces it. Returns the members in the switch's uplink order.
  /// Idempotent.
  virtual Result<std::vector<TeamMember>> ReconcileTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) {
    (void)s, (void)ports;
    return Status::Error("this hypervisor has no switch embedded teaming");
  }

  /// The SET switch's members and the ports bound to them as they are now, changing nothing
  /// (for `lab status`).
  virtual Result<std::vector<TeamMember>> ObserveTeam(const SwitchSpec& s, const std::vector<TeamPort>& ports) {
    (void)s, (void)ports;
    return Status::Error("this hypervisor has no switch embedded teaming");
  }

  virtual Result<std::string> CreateNat(const NatSpec& s) = 0;
  virtual Status RemoveNat(const NatSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> SetDns(const DnsSpec& s) = 0;
  virtual Status ClearDns(const DnsSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> StartStandIn(const StandInSpec& s) = 0;
  virtual Status StopStandIn(const StandInSpec& s, const std::string& facts) = 0;
  virtual bool StandInRunning(const StandInSpec& s, const std::string& facts) = 0;

  /// Compares the recorded objects with what is there. This default knows only liveness
  /// (partitions, networks, stand-ins); a driver that can see links, addresses and tables adds
  /// them. Objects inside a machine found not running are not looked at (they go with it).
  virtual Drift Observe(const ObserveRequest& r) {
    Drift d;
    for (const auto& n : r.networks) {
      PartitionSpec p;
      p.name = n.spec.name;
      if (!PartitionRunning(p, n.facts)) d[n.key] = "not running";
    }
    for (const auto& p : r.partitions)
      if (!PartitionRunning(p.spec, p.facts)) d[p.key] = "not running";
    for (const auto& s : r.standins)
      if (!StandInRunning(s.spec, s.facts)) d[s.key] = "not running";
    return d;
  }

  /// Runs a probe from inside a machine.
  virtual Result<ProbeAnswer> Probe(const PartitionSpec& machine, const ProbeRequest& request) = 0;
  /// Runs a command inside a machine with the caller's stdio (or a terminal relayed to it);
  /// returns its exit code.
  virtual Result<int> Exec(const PartitionSpec& machine, const ExecRequest& request) = 0;

  /// The whole lab is being taken down, and RemoveLabRoot follows a complete teardown: what it
  /// removes in bulk (the lab's cgroup tree) need not go object by object.
  virtual void TearingDownLab() {}
  /// After a complete teardown: removes the lab's own top-level directories and cgroups, which
  /// are empty by then (a non-empty one is left alone and reported).
  virtual Status RemoveLabRoot() = 0;
};

/// The Linux realization (kernel isolation).
std::unique_ptr<Hypervisor> MakeLinuxHypervisor(const LabContext& ctx);
/// A lab's hypervisor with both drivers: partitions by the Linux realization, qemu VMs by QEMU,
/// and what lives inside a qemu VM through its agent (hv/qemu/driver.h).
std::unique_ptr<Hypervisor> MakeHypervisor(const LabContext& ctx);

}  // namespace lab::hv
