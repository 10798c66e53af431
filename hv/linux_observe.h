// Drift of a lab's network objects, as the Linux realization sees them.
//
// Observes in bulk: one link and one address dump per namespace involved (each machine and
// network partition is opened once), one route dump per machine that has a default gateway, one
// read of /etc/resolv.conf per machine with DNS client settings (through its init's root, no
// process started), and one listing per NAT table. Objects inside a machine found not running
// (or not observed at all) are skipped: they are remade with it.
//
// What is missing (a veth, a bridge, a NAT table) must be made again; what is there with a
// setting gone (a link set down, an address or the default route deleted, resolv.conf
// rewritten) is a Finding::in_place, which the Repair* calls put back without remaking anything.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "hv/hypervisor.h"

namespace lab::hv {

/// Where the partitions of a lab live (their run directories, holding the namespace handles).
struct LinuxPlaces {
  std::function<std::string(const std::string&)> machine_run;
  std::function<std::string(const std::string&)> network_run;
};

/// Veths (NICs, adapters and their ports), bridges, links' state, interface addresses, default
/// routes, DNS client settings and NAT tables of the request, compared with their specs. `dead`:
/// what was already found (machines not running). Fills r.seen when set.
Drift ObserveNetworking(const ObserveRequest& r, const LinuxPlaces& places, const Drift& dead);

/// A machine's /etc/resolv.conf as lab writes it for `servers` (Set-DnsClientServerAddress).
std::string ResolvConf(const std::vector<Ipv4>& servers);

/// The nameservers a resolv.conf names, in order.
std::vector<Ipv4> Nameservers(const std::string& resolv_conf);

}  // namespace lab::hv
