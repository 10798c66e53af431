// Bridge filters: what a Hyper-V switch port enforces, as bridge-family nftables rules inside
// the switch owner's network namespace.
//
// One table per switch owner (`table bridge <table>`, named with the lab's uid by the caller, and
// `table netdev <table>` for hooks on a bridge device itself).
//
// Ports' MAC filters share one pair of base chains, "ports_fwd" and "ports_in", with one rule
// each, and two sets: "mac_filtered" (the ports with spoofing off) and "port_macs" (port . the MAC
// it may send from). Filtering a port adds its elements, so the cost of adding a port, and of a
// frame crossing the switch, does not grow with the number of ports.
//
// A switch's own filters (a private switch, a SET team) own their base chains, "f_<id>_fwd",
// "f_<id>_in", "f_<id>_ingress", "f_<id>_egress", "f_<id>_out", so they are set and removed
// independently; a set is one atomic libnftables transaction (declare, flush, fill). Removing the
// last such object's chains removes the table. Callers serialize calls for one table (set/remove
// are list-then-change).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "hv/kernel/netlink.h"

namespace lab::hv::kernel {

/// MAC address spoofing off (Set-VMNetworkAdapter -MacAddressSpoofing Off): frames entering the
/// bridge from `port` whose source MAC is not `mac` are dropped, both those the bridge forwards
/// and those addressed to the owner itself. One transaction; applying it again changes nothing.
/// A port keeps its MAC for life (a new MAC is a new adapter), so a second MAC for the same port
/// is allowed beside the first until UnfilterPortSourceMac removes that one.
Status FilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& comment,
                           const std::string& port, const std::string& mac);

/// MAC address spoofing on again, or the port going away: frames from `port` pass whatever their
/// source MAC. Not filtered = ok.
Status UnfilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& port,
                             const std::string& mac);

/// The ports the kernel filters by source MAC, with the MAC each may send from, sorted.
Result<std::vector<std::pair<std::string, std::string>>> ReadPortSourceMacs(const NetNs& ns, const std::string& table);

/// A private switch: the owner has no port on bridge `bridge`, so no frame passes between the
/// bridge and the owner's own stack, in either direction.
Status IsolateBridgeFromOwner(const NetNs& ns, const std::string& table, const std::string& comment,
                              const std::string& bridge);

/// What a SET switch's team enforces (hv/team.h, hv/kernel/team.h): every member active, each
/// port's frames leaving through its own member.
struct TeamFilter {
  std::vector<std::string> members;                            // every member, up or down
  std::string primary;                                         // takes flooded frames; "" = none up
  std::vector<std::pair<std::string, std::string>> port_member;  // port interface -> its member
  std::string owner_member;                                    // the owner's own frames; "" = primary
};

/// The team of the SET switch on bridge `bridge`, one transaction (chains "f_<bridge>_pre",
/// "_fwd", "_out" and the set "s_<bridge>_local" of the switch's local MACs, learned from the
/// frames its ports and the owner send). The members must not learn MACs (the caller turns
/// learning off on them), so the switch floods frames for the network to every member and b)
/// lets each out through its port's member; c) and d) act in prerouting, before the switch
/// learns from a frame:
///  a) no frame goes from one member to another (no loop through the wire);
///  b) a port's frames (and the owner's) leave only through their member; a port with no member
///     yet (joined since the last reconcile) leaves through the primary;
///  c) group-addressed frames, and unicast to no local MAC, are taken from the primary only;
///  d) a frame entering from a member with a local MAC as its source (one of ours, reflected by
///     the wire) is dropped.
/// Unicast to a local MAC is accepted on any member: the wire decides where it arrives.
/// Applying it again replaces the rules; the learned MACs are kept.
Status FilterTeam(const NetNs& ns, const std::string& table, const std::string& comment, const std::string& bridge,
                  const TeamFilter& team);

/// The team filter of `bridge` as the kernel has it: the port -> member pairs and the owner's
/// member (b); members, primary and the rest are not read back. No filter: an empty one.
Result<TeamFilter> ReadTeamFilter(const NetNs& ns, const std::string& table, const std::string& bridge);

/// Removes what FilterPortSourceMac / IsolateBridgeFromOwner / FilterTeam set for `id` (a port or bridge name),
/// and the table once it holds nothing else. Absent = ok.
Status RemoveBridgeFilter(const NetNs& ns, const std::string& table, const std::string& id);

}  // namespace lab::hv::kernel
