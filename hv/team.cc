// SET affinity (see team.h): pure, no I/O.
#include "hv/team.h"

#include <algorithm>

namespace lab::hv {

std::vector<TeamMember> AssignTeam(const std::vector<std::string>& members, const std::vector<bool>& link_up,
                                   std::vector<TeamPort> ports) {
  std::vector<TeamMember> team;
  std::vector<size_t> up;
  for (size_t i = 0; i < members.size(); ++i) {
    bool is_up = i < link_up.size() && link_up[i];
    team.push_back(TeamMember{members[i], is_up, false, {}});
    if (is_up) up.push_back(i);
  }
  if (up.empty()) return team;
  team[up.front()].primary = true;
  std::sort(ports.begin(), ports.end(), [](const TeamPort& a, const TeamPort& b) { return a.label < b.label; });
  for (size_t p = 0; p < ports.size(); ++p) team[up[p % up.size()]].ports.push_back(ports[p].label);
  return team;
}

std::string DescribeTeam(const std::vector<TeamMember>& members) {
  std::string out;
  for (const auto& m : members) {
    if (!out.empty()) out += ", ";
    out += m.name + (m.link_up ? " up" : " down");
    if (!m.link_up) continue;
    std::string ports;
    for (const auto& p : m.ports) ports += (ports.empty() ? "" : ", ") + p;
    out += " (" + (ports.empty() ? std::string("no ports") : ports) + ")";
  }
  return out;
}

}  // namespace lab::hv
