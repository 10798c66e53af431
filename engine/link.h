// `lab link LAB MACHINE IFACE down|up`: fault injection on one interface of a running lab (a
// host's NIC, as pulling its cable; a VM's adapter likewise), and the SET switches teaming it
// reacting at once.
//
// The team reacts because `lab link` tells it to: after the link changes, every SET switch of
// that machine whose team holds the interface is reconciled (hv::Hypervisor::ReconcileTeam): the
// ports of a member that went down move to the members still up, and a member coming back gets
// its share of the ports again (hv/team.h), within the command, not at some later observation. Nothing in the lab's
// records changes (a link's state is not part of the lab file); the action is journaled.
//
// A link brought up gets back the configuration the cable pull took (Windows keeps an adapter's
// addresses and routes across it; Linux drops the routes through a link set down): its address
// and, with a gateway, the machine's default route, as `lab up` repairs drift (RepairNic,
// RepairAdapter, RepairSwitch for a vEthernet over the NIC). A link left down is drift that
// `lab status` reports and `lab up` sets up again.
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"

namespace lab::engine {

struct LinkRequest {
  std::string lab;
  std::string machine;
  std::string ifname;   // a NIC of the host, or an adapter of the VM
  bool up = false;
};

struct TeamReport {
  std::string switch_name;
  std::vector<hv::TeamMember> members;  // in the switch's uplink order
};

struct LinkReport {
  std::string what;                     // "NIC 'NIC1' of host 'hv1'"
  std::vector<TeamReport> teams;        // the SET switches that team the interface, after reacting
};

Result<LinkReport> SetLink(Engine& engine, const LinkRequest& request);

/// The ports of SET switch `sw` as the lab's records have them: each VM adapter on it
/// ("vm/adapter", its port interface) and, with a management port, the owner's vEthernet.
std::vector<hv::TeamPort> TeamPorts(const std::vector<Resource>& resources, const hv::SwitchSpec& sw);
/// `team` of a switch on `owner` as the lab file names things: each member (a NIC or adapter
/// of the owner) and each port's adapter ("vm/adapter") by its written name, not its kernel name.
void NameAsWritten(const std::vector<Resource>& resources, const std::string& owner, std::vector<hv::TeamMember>* team);

/// Binds the ports of every SET switch in `resources` whose owner runs (after `lab up` changed
/// the lab: adapters added or removed, switches remade). Returns the first failure.
Status ReconcileTeams(hv::Hypervisor& hv, const state::Snapshot& snap);

}  // namespace lab::engine
