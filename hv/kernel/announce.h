// Announcing a machine at its place on a switch, as Hyper-V does after a migration: a frame sent
// from the machine's own interface, so every bridge on the way (the switch, the lab network's
// wire) learns where its MAC is now and every neighbour that knows its address hears it again.
//
// The frame goes out through a packet socket made inside the machine's network namespace: the
// machine itself speaks, nothing is injected on a bridge.
#pragma once

#include <optional>
#include <string>

#include "base/net.h"
#include "base/status.h"
#include "hv/kernel/netlink.h"

namespace lab::hv::kernel {

/// An ARP request for `address` from `mac` with itself as target (a gratuitous ARP), or, without
/// an address, a RARP request for `mac` (what a migrated VM sends to announce its MAC alone).
/// The Ethernet frame, broadcast, as it goes on the wire.
std::string AnnouncementFrame(const std::string& mac, const std::optional<Ipv4>& address);

/// Sends AnnouncementFrame `count` times, 20 ms apart, from interface `ifname` inside `ns`, once
/// the interface runs (a link just made: up to 2 s). The interface must be up; `mac` is its own.
Status Announce(const NetNs& ns, const std::string& ifname, const std::string& mac,
                const std::optional<Ipv4>& address, int count = 3);

}  // namespace lab::hv::kernel
