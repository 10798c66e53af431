// Bridge filters: what a Hyper-V switch port enforces, as bridge-family nftables rules inside
// the switch owner's network namespace.
//
// One table per switch owner (`table bridge <table>`, named with the lab's uid by the caller, and
// `table netdev <table>` for hooks on a bridge device itself). Each filtered object (a port, a
// switch) owns its own base chains there, "f_<id>_fwd", "f_<id>_in", "f_<id>_ingress",
// "f_<id>_egress", so objects are set and removed independently and a set is one atomic
// libnftables transaction (declare, flush, fill). Removing the last object's chains removes the
// table. Callers serialize calls for one table (set/remove are list-then-change).
#pragma once

#include <string>

#include "base/status.h"
#include "hv/kernel/netlink.h"

namespace lab::hv::kernel {

/// MAC address spoofing off (Set-VMNetworkAdapter -MacAddressSpoofing Off): frames entering the
/// bridge from `port` whose source MAC is not `mac` are dropped, both those the bridge forwards
/// and those addressed to the owner itself. Applying it again replaces the port's rules.
Status FilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& comment,
                           const std::string& port, const std::string& mac);

/// A private switch: the owner has no port on bridge `bridge`, so no frame passes between the
/// bridge and the owner's own stack, in either direction.
Status IsolateBridgeFromOwner(const NetNs& ns, const std::string& table, const std::string& comment,
                              const std::string& bridge);

/// Removes what FilterPortSourceMac / IsolateBridgeFromOwner set for `id` (a port or bridge name),
/// and the table once it holds nothing else. Absent = ok.
Status RemoveBridgeFilter(const NetNs& ns, const std::string& table, const std::string& id);

}  // namespace lab::hv::kernel
