// Specs of the embedded hypervisor's objects: plain data, in Hyper-V's terms.
//
// Each spec says everything needed to make the object *and* to remove it again, so a lab can be
// torn down from its recorded specs alone (without the lab file). Specs serialize to JSON for
// the state store; the spec hash is the hash of that JSON.
//
// Drivers (DESIGN.md "Two drivers behind one API"): a VM is a partition or a qemu guest
// (PartitionSpec::driver). Every spec of an object says in `within` the qemu VMs it lives inside,
// outermost first, so that a call for it can be routed to the agent of the innermost one; empty
// (and absent from the JSON, so records made before drivers keep their hashes) for everything
// outside any qemu VM.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/net.h"

namespace lab::hv {

/// A lab network: the wire between hosts' NICs, with the stand-in "outside world" at its
/// gateway. Realized as a partition of its own holding a bridge.
struct NetworkSpec {
  std::string name;
  Cidr subnet;
  std::optional<Ipv4> gateway;
};

/// One checkpoint of a VM (Get-VMSnapshot): its name, when it was taken (Unix seconds) and the
/// space its copy takes on disk.
struct CheckpointInfo {
  std::string name;
  int64_t taken = 0;
  uint64_t bytes = 0;
};

/// A machine: a physical host of the lab or a VM (Hyper-V partition) at any depth.
struct PartitionSpec {
  std::string name;
  std::vector<std::string> lineage;     // ancestors then itself: ["hv1", "middle", "nested1"]
  bool is_host = false;
  int processor_count = 0;              // 0 = no CPU quota (hosts)
  uint64_t memory_bytes = 0;            // 0 = no limit (hosts); startup, or maximum when dynamic
  bool dynamic_memory = false;
  bool expose_virtualization_extensions = false;
  /// The parent exposes its virtualization extensions, so this VM can be made inside it (a host's
  /// VMs: true, hosts are physical). The kernel refuses the VM otherwise, whatever validated.
  bool parent_exposes = true;
  std::string version;                  // configuration version ("9.0")
  std::string hosts_file;               // /etc/hosts content
  /// The computer name (/etc/hostname, and the name the lab's DNS answers): "" means `name`,
  /// which it is for every machine named [a-z0-9-] (so older records keep their hashes).
  std::string hostname;
  /// The machine's image (DESIGN.md "Images"): "" = the host's own software. `image_key` is its
  /// cache key (a changed image changes the spec: the VM is remade on it), `image_layers` the
  /// overlay lower dirs, topmost first, under the state dir's image cache.
  std::string image;
  std::string image_key;
  std::vector<std::string> image_layers;
  /// How the VM is made real (DESIGN.md "Two drivers"): "" = a partition, "qemu" = a guest of
  /// its own in a QEMU process. `within`: the qemu VMs it is made inside (its QEMU process or
  /// its namespaces live there): its strict ancestors with driver qemu.
  std::string driver;
  /// The qemu VMs this object lives inside, outermost first (empty: on the real machine). A call
  /// for it goes to the agent of the first of them (hv/agent/remote.h), which goes on inward.
  std::vector<std::string> within;

  bool IsQemu() const { return driver == "qemu"; }
  const std::string& parent() const;    // "" for a host
  /// The computer name: `hostname`, else `name`.
  const std::string& ComputerName() const { return hostname.empty() ? name : hostname; }
};

/// A host's physical NIC: a veth with `name` inside the host and a port on the network's wire.
struct NicSpec {
  std::string machine;
  std::string name;                     // the kernel interface name (KernelIfname of the NIC's name)
  /// The NIC's name as written when it is not `name` ("Ethernet 2"): an altname (KernelAltname)
  /// makes it findable in `ip link`. "" otherwise, so older records keep their hashes.
  std::string alias;
  std::string network;
  std::string port;                     // kernel name of the wire-side end
  std::string mac;
  std::optional<Cidr> ip;               // unset when an external switch with management OS holds it
  std::optional<Ipv4> gateway;
  /// The NIC's name as written in the lab file, which every message shows.
  const std::string& Written() const { return alias.empty() ? name : alias; }
};

/// New-VMSwitch: a bridge inside the owner (host or middle VM).
struct SwitchSpec {
  std::string owner;
  std::string name;                     // Hyper-V switch name
  std::string type;                     // external | internal | private
  std::string ifname;                   // kernel name of the bridge inside the owner
  std::vector<std::string> uplinks;     // external: owner interfaces it binds (NICs / adapters)
  bool management_port = false;         // owner gets vEthernet (NAME): the bridge holds an address
  std::optional<Cidr> ip;               // management port address
  std::optional<Ipv4> gateway;          // management port default gateway
  bool forwarding = false;              // the owner routes (NAT behind it)
  /// -EnableEmbeddedTeaming (SET): the uplinks are one team, switch independent, every member
  /// active; each port of the switch is bound to one member (hv/team.h).
  bool embedded_teaming = false;
  /// The qemu VMs the switch lives inside: the owner's ancestors-or-self with driver qemu.
  std::vector<std::string> within;
};

/// Add-VMNetworkAdapter + Connect-VMNetworkAdapter: a veth with `name` inside the VM and `port`
/// on the switch's bridge inside the switch owner.
struct AdapterSpec {
  std::string vm;
  std::string name;                     // the kernel interface name (KernelIfname of the adapter's name)
  std::string alias;                    // the adapter's name as written when not `name` (as NicSpec)
  std::string owner;                    // the switch owner (the VM's parent)
  std::string switch_name;
  std::string switch_ifname;
  std::string port;
  std::string mac;
  bool mac_address_spoofing = false;
  std::optional<Cidr> ip;
  std::optional<Ipv4> gateway;
  /// The VM's driver ("" = partition, "qemu": the adapter is a tap on the owner's bridge and a
  /// virtio NIC of the guest). `within`: where its port is made: the owner's ancestors-or-self
  /// with driver qemu.
  std::string vm_driver;
  std::vector<std::string> within;
  /// The adapter's name as written in the lab file, which every message shows.
  const std::string& Written() const { return alias.empty() ? name : alias; }
};

/// New-NetNat: masquerade of an internal prefix inside its owner.
struct NatSpec {
  std::string owner;
  std::string name;
  Cidr prefix;
  std::string table;                    // nftables table name (carries the lab's uid)
  /// nat.dns_proxy: a DNS forwarder in the owner listening here (the switch's vEthernet
  /// address), forwarding to the owner's own DNS servers.
  std::optional<Ipv4> dns_proxy;
  std::vector<std::string> owner_lineage;  // dns_proxy: the owner's lineage (its cgroup)
  std::vector<std::string> within;         // the owner's ancestors-or-self with driver qemu
};

/// DNS client settings of one machine (Set-DnsClientServerAddress): its resolv.conf.
struct DnsSpec {
  std::string machine;
  std::vector<Ipv4> servers;
  std::vector<std::string> within;  // the machine's ancestors-or-self with driver qemu
};

/// The stand-in "outside world" services at a network's gateway: DNS (dnsmasq) with the lab's
/// machine names and the network's records, and an HTTP whoami.
struct StandInSpec {
  std::string network;
  Ipv4 address;
  std::map<std::string, std::vector<Ipv4>> records;  // name -> addresses
};

/// A machine's `run:` commands, run inside it in order once it is up (each by /bin/sh -c, as a
/// provisioning script; each with a time limit). What they print goes to the machine's run log.
struct RunSpec {
  std::string machine;
  std::vector<std::string> lineage;     // the machine's cgroup
  bool is_host = false;
  std::vector<std::string> commands;
  int timeout_ms = 60000;               // per command (run_timeout)
  std::vector<std::string> within;      // the machine's ancestors-or-self with driver qemu
};

void to_json(nlohmann::json& j, const NetworkSpec& s);
void from_json(const nlohmann::json& j, NetworkSpec& s);
void to_json(nlohmann::json& j, const PartitionSpec& s);
void from_json(const nlohmann::json& j, PartitionSpec& s);
void to_json(nlohmann::json& j, const NicSpec& s);
void from_json(const nlohmann::json& j, NicSpec& s);
void to_json(nlohmann::json& j, const SwitchSpec& s);
void from_json(const nlohmann::json& j, SwitchSpec& s);
void to_json(nlohmann::json& j, const AdapterSpec& s);
void from_json(const nlohmann::json& j, AdapterSpec& s);
void to_json(nlohmann::json& j, const NatSpec& s);
void from_json(const nlohmann::json& j, NatSpec& s);
void to_json(nlohmann::json& j, const DnsSpec& s);
void from_json(const nlohmann::json& j, DnsSpec& s);
void to_json(nlohmann::json& j, const StandInSpec& s);
void from_json(const nlohmann::json& j, StandInSpec& s);
void to_json(nlohmann::json& j, const RunSpec& s);
void from_json(const nlohmann::json& j, RunSpec& s);

}  // namespace lab::hv
