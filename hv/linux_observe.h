// Drift of a lab's network objects, as the Linux realization sees them.
//
// Observes in bulk: one link dump and one address dump per namespace involved (each machine and
// network partition is opened once), and one listing per NAT table. Objects inside a machine
// found not running (or not observed at all) are skipped: they are remade with it.
#pragma once

#include <functional>
#include <string>

#include "hv/hypervisor.h"

namespace lab::hv {

/// Where the partitions of a lab live (their run directories, holding the namespace handles).
struct LinuxPlaces {
  std::function<std::string(const std::string&)> machine_run;
  std::function<std::string(const std::string&)> network_run;
};

/// Veths (NICs, adapters and their ports), bridges, interface addresses and NAT tables of the
/// request, compared with their specs. `dead`: what was already found (machines not running).
Drift ObserveNetworking(const ObserveRequest& r, const LinuxPlaces& places, const Drift& dead);

}  // namespace lab::hv
