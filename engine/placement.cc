#include "engine/placement.h"

#include <algorithm>

#include "base/text.h"
#include "schema/reader.h"

namespace lab::engine {
namespace {

using schema::Machine;
using schema::MachineKind;

std::string Q(const std::string& s) { return "'" + s + "'"; }

/// [begin, end) of `machines[i]` and everything inside it, in pre-order.
std::pair<size_t, size_t> Subtree(const std::vector<Machine>& machines, size_t i) {
  size_t j = i + 1;
  while (j < machines.size() && machines[j].depth > machines[i].depth) ++j;
  return {i, j};
}

size_t IndexOf(const std::vector<Machine>& machines, const std::string& name) {
  for (size_t i = 0; i < machines.size(); ++i)
    if (machines[i].name == name) return i;
  return machines.size();
}

}  // namespace

std::string CheckPlacement(const schema::Lab& lab, const std::string& vm, const std::string& host) {
  const Machine* m = lab.FindMachine(vm);
  if (!m) return "lab " + Q(lab.name) + " has no machine " + Q(vm);
  if (m->kind == MachineKind::kHost) return Q(vm) + " is a host, a physical machine of the lab; only VMs move";
  std::vector<std::string> hosts;
  for (const auto& x : lab.machines)
    if (x.kind == MachineKind::kHost) hosts.push_back(x.name);
  const Machine* h = lab.FindMachine(host);
  if (!h || h->kind != MachineKind::kHost)
    return Q(host) + " is not a host of lab " + Q(lab.name) + "; its hosts are " + Join(hosts, ", ");
  const Machine* parent = lab.FindMachine(m->parent);
  if (parent && parent->kind != MachineKind::kHost)
    return "VM " + Q(vm) + " is nested inside " + Q(m->parent) + " and moves with it; move " + Q(m->parent) +
           " instead";
  for (const auto& a : m->adapters) {
    const schema::Switch* sw = h->FindSwitch(a.switch_name);
    if (!sw)
      return "host " + Q(host) + " has no switch " + Q(a.switch_name) + " for adapter " + Q(a.name) + " of " + Q(vm) +
             " (Move-VM needs the same switches on the destination); add it under hosts." + host +
             ".switches or move the VM to a host that has it";
  }
  // Everything else the file's rules say (addresses on the destination's subnets, duplicates),
  // as validation would say it had the file put the VM there.
  schema::ParseContext ctx;
  ctx.file = lab.file;
  schema::Validate(MoveMachine(lab, vm, host), ctx);
  std::vector<std::string> msgs;
  for (const auto& d : ctx.diagnostics)
    if (d.severity == schema::Severity::kError) msgs.push_back(d.message);  // warnings do not refuse a move
  if (!msgs.empty()) return "on host " + Q(host) + ", " + Join(msgs, "; ");
  return "";
}

schema::Lab MoveMachine(const schema::Lab& lab, const std::string& vm, const std::string& host) {
  schema::Lab out = lab;
  auto& ms = out.machines;
  size_t i = IndexOf(ms, vm);
  if (i == ms.size() || IndexOf(ms, host) == ms.size()) return out;
  const std::string from = ms[i].parent;
  if (from == host) return out;
  auto [b, e] = Subtree(ms, i);
  std::vector<Machine> moved(ms.begin() + static_cast<long>(b), ms.begin() + static_cast<long>(e));
  ms.erase(ms.begin() + static_cast<long>(b), ms.begin() + static_cast<long>(e));
  // Depths follow the new parent (a host: its VMs are at depth 1).
  const int shift = ms[IndexOf(ms, host)].depth + 1 - moved.front().depth;
  for (auto& m : moved) m.depth += shift;
  moved.front().parent = host;
  size_t hi = IndexOf(ms, host);
  size_t at = Subtree(ms, hi).second;  // after the host's last machine: children keep file order
  ms.insert(ms.begin() + static_cast<long>(at), moved.begin(), moved.end());
  for (auto& m : ms) {
    if (m.name == from) m.vms.erase(std::remove(m.vms.begin(), m.vms.end(), vm), m.vms.end());
    if (m.name == host) m.vms.push_back(vm);
  }
  return out;
}

Placed ApplyPlacements(const schema::Lab& lab, const std::map<std::string, std::string>& placements) {
  Placed out{lab, {}};
  for (const auto& [vm, host] : placements) {
    const Machine* m = out.lab.FindMachine(vm);
    if (m && m->parent == host) continue;  // the file now puts it there itself
    std::string why = CheckPlacement(out.lab, vm, host);
    if (!why.empty()) {
      out.notes.push_back("VM " + Q(vm) + " was moved to " + Q(host) + " (lab move), which no longer holds: " + why +
                          "; it runs where the lab file puts it");
      continue;
    }
    out.lab = MoveMachine(out.lab, vm, host);
  }
  return out;
}

}  // namespace lab::engine
