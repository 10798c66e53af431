// SET (Switch Embedded Teaming) as Hyper-V has it: the team lives in the virtual switch, is
// switch independent (the physical network knows nothing of it), and every member is active.
// Traffic is distributed per switch port, as Hyper-V's "HyperVPort" load balancing does: each
// port of the switch (a VM adapter's port, and the management OS's vEthernet) is bound to one
// team member, and its frames leave only through that member. (Hyper-V's default since Server
// 2016 is "Dynamic", which also splits a port's outbound flows; HyperVPort is the simple,
// faithful choice: one port, one member, so the network learns each MAC on one member.)
//
// The affinity is pure: the ports sorted by label, dealt round-robin over the members whose link
// is up, in member (file) order. It is recomputed on every reconcile, so a member going down hands
// its ports to the survivors and a member coming back gets its share again. The primary member
// (the first one up) is the one that takes frames the network floods (broadcast, multicast,
// unknown unicast), so a VM never receives a flooded frame twice.
#pragma once

#include <string>
#include <vector>

namespace lab::hv {

/// A port of a SET switch, bound to one member.
struct TeamPort {
  std::string label;                    // "vm/adapter", or "vEthernet" for the owner's own frames
  std::string ifname;                   // the port's interface on the bridge; empty for vEthernet
};

/// One member of a SET team, as the switch has it.
struct TeamMember {
  std::string name;                     // the owner's NIC or adapter
  bool link_up = false;                 // administratively up, with carrier
  bool primary = false;                 // the member up that takes flooded frames
  std::vector<std::string> ports;       // labels of the ports bound to it, sorted
};

/// The label of the owner's own port (the management OS's vEthernet).
inline constexpr const char* kOwnerPortLabel = "vEthernet";

/// HyperVPort affinity: `ports` sorted by label, dealt round-robin over the members whose
/// `link_up` is true (in `members` order); the first member up is the primary. With no member up,
/// no port is bound and there is no primary. Returns the members in `members` order.
std::vector<TeamMember> AssignTeam(const std::vector<std::string>& members, const std::vector<bool>& link_up,
                                   std::vector<TeamPort> ports);

/// "NIC1 up (middle/Ethernet, vEthernet), NIC2 down": a team as `lab link` and `lab status`
/// print it.
std::string DescribeTeam(const std::vector<TeamMember>& members);

}  // namespace lab::hv
