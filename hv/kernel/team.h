// SET (Switch Embedded Teaming) realized in the switch itself. This kernel has no bonding or team
// driver, and Hyper-V's SET is not one either: the team lives in the virtual switch.
//
// A team is the uplinks of an external switch with embedded_teaming, in file order, all of them
// ports of the switch's bridge and all of them active, switch independent (hv/team.h): each port
// of the switch is bound to one member (HyperVPort affinity, recomputed from the members' links
// on every reconcile). The members learn no MACs (the switch floods frames for the network to
// all of them), and bridge_filter.h's FilterTeam keeps the team loop- and duplicate-free
// although the wire floods broadcasts to every member: no member-to-member forwarding, each
// port's frames out of its own member only, flooded frames taken from the primary member only,
// our own frames reflected by the wire dropped. Inbound unicast is taken on any member, so
// nothing is stranded when a port moves to another member: the wire relearns its MAC from the
// next frame it sends.
//
// The kernel is the record: links are read back every time and the bindings from the rules, so
// reconciling is idempotent and needs no state of its own. Callers serialize calls for one
// owner's table (as for bridge_filter.h); the team's filter goes with RemoveBridgeFilter(bridge).
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "hv/kernel/netlink.h"
#include "hv/team.h"

namespace lab::hv::kernel {

/// Binds `ports` to the members whose link is up now (hv::AssignTeam) and sets the team's filter
/// on `bridge` to match, in one transaction. The members need not have joined the bridge yet
/// (the rules name interfaces), so calling it before they join keeps the team loop-free from the
/// first frame. Returns the members in `members` order. Calling it again without a change of
/// links or ports changes nothing.
Result<std::vector<TeamMember>> ReconcileTeam(const NetNs& ns, const std::string& table, const std::string& comment,
                                              const std::string& bridge, const std::vector<std::string>& members,
                                              const std::vector<TeamPort>& ports);

/// The team as the kernel has it now, changing nothing: the members' links, the bindings its
/// rules hold for `ports`, and the primary (the first member up).
Result<std::vector<TeamMember>> ObserveTeam(const NetNs& ns, const std::string& table, const std::string& bridge,
                                            const std::vector<std::string>& members,
                                            const std::vector<TeamPort>& ports);

}  // namespace lab::hv::kernel
