// SET teams (see team.h): the affinity from hv/team.h, the rules from bridge_filter.h.
#include "hv/kernel/team.h"

#include <algorithm>

#include "hv/kernel/bridge_filter.h"

namespace lab::hv::kernel {
namespace {

/// The members' links, in `members` order: administratively up, with carrier.
Result<std::vector<bool>> LinksUp(const NetNs& ns, const std::vector<std::string>& members) {
  auto nl = Netlink::In(ns);
  if (!nl.ok()) return nl.status();
  auto links = nl->Links();
  if (!links.ok()) return links.status();
  std::vector<bool> up;
  for (const auto& m : members) {
    auto it = std::find_if(links->begin(), links->end(), [&](const LinkInfo& l) { return l.name == m; });
    up.push_back(it != links->end() && it->up && it->carrier);
  }
  return up;
}

}  // namespace

Result<std::vector<TeamMember>> ReconcileTeam(const NetNs& ns, const std::string& table, const std::string& comment,
                                              const std::string& bridge, const std::vector<std::string>& members,
                                              const std::vector<TeamPort>& ports) {
  auto up = LinksUp(ns, members);
  if (!up.ok()) return up.status();
  auto team = AssignTeam(members, *up, ports);
  TeamFilter filter;
  filter.members = members;
  for (const auto& m : team) {
    if (m.primary) filter.primary = m.name;
    for (const auto& label : m.ports) {
      auto port = std::find_if(ports.begin(), ports.end(), [&](const TeamPort& p) { return p.label == label; });
      if (port->ifname.empty()) filter.owner_member = m.name;
      else filter.port_member.emplace_back(port->ifname, m.name);
    }
  }
  LAB_RETURN_IF_ERROR(FilterTeam(ns, table, comment, bridge, filter));
  return team;
}

Result<std::vector<TeamMember>> ObserveTeam(const NetNs& ns, const std::string& table, const std::string& bridge,
                                            const std::vector<std::string>& members,
                                            const std::vector<TeamPort>& ports) {
  auto up = LinksUp(ns, members);
  if (!up.ok()) return up.status();
  auto filter = ReadTeamFilter(ns, table, bridge);
  if (!filter.ok()) return filter.status();
  std::vector<TeamMember> team = AssignTeam(members, *up, {});
  std::vector<TeamPort> sorted = ports;
  std::sort(sorted.begin(), sorted.end(), [](const TeamPort& a, const TeamPort& b) { return a.label < b.label; });
  for (const auto& p : sorted) {
    std::string member = filter->owner_member;
    if (!p.ifname.empty()) {
      member.clear();
      for (const auto& [port, m] : filter->port_member)
        if (port == p.ifname) member = m;
    }
    for (auto& m : team)
      if (m.name == member) m.ports.push_back(p.label);
  }
  return team;
}

}  // namespace lab::hv::kernel
