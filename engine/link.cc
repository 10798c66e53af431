#include "engine/link.h"

#include <algorithm>
#include <map>

#include "base/quote.h"
#include "base/text.h"
#include "engine/lifecycle.h"

namespace lab::engine {

std::vector<hv::TeamPort> TeamPorts(const std::vector<Resource>& resources, const hv::SwitchSpec& sw) {
  std::vector<hv::TeamPort> ports;
  if (sw.management_port) ports.push_back(hv::TeamPort{hv::kOwnerPortLabel, ""});
  for (const auto& r : resources) {
    if (r.kind != Kind::kAdapter) continue;
    auto a = r.spec.get<hv::AdapterSpec>();
    if (a.owner == sw.owner && a.switch_name == sw.name) ports.push_back(hv::TeamPort{a.vm + "/" + a.name, a.port});
  }
  return ports;
}

void NameAsWritten(const std::vector<Resource>& resources, const std::string& owner, std::vector<hv::TeamMember>* team) {
  // kernel name -> as written, of the owner's interfaces and of each VM's adapters ("vm/name").
  std::map<std::string, std::string> members, ports;
  for (const auto& r : resources) {
    if (r.kind != Kind::kNic && r.kind != Kind::kAdapter) continue;
    const std::string alias = r.spec.value("alias", std::string());
    if (alias.empty()) continue;
    const std::string kernel = r.spec.value("name", std::string());
    if (MachineOf(r) == owner) members[kernel] = alias;
    if (r.kind == Kind::kAdapter) ports[MachineOf(r) + "/" + kernel] = MachineOf(r) + "/" + alias;
  }
  for (auto& m : *team) {
    if (auto it = members.find(m.name); it != members.end()) m.name = it->second;
    for (auto& p : m.ports)
      if (auto it = ports.find(p); it != ports.end()) p = it->second;
  }
}

Status ReconcileTeams(hv::Hypervisor& hv, const state::Snapshot& snap) {
  auto resources = RecordedResources(snap);
  for (const auto& r : resources) {
    if (r.kind != Kind::kSwitch || !r.spec.value("embedded_teaming", false)) continue;
    auto sw = r.spec.get<hv::SwitchSpec>();
    auto owner = std::find_if(resources.begin(), resources.end(), [&](const Resource& p) {
      return p.kind == Kind::kPartition && p.spec.value("name", std::string()) == sw.owner;
    });
    if (owner == resources.end()) continue;
    auto facts = snap.resources.find(owner->key);
    if (!hv.PartitionRunning(owner->spec.get<hv::PartitionSpec>(), facts == snap.resources.end() ? "" : facts->second.facts))
      continue;
    auto team = hv.ReconcileTeam(sw, TeamPorts(resources, sw));
    if (!team) return team.status();
  }
  return Status::Ok();
}

Result<LinkReport> SetLink(Engine& engine, const LinkRequest& asked) {
  LinkRequest req = asked;
  auto rec = engine.Find(req.lab);
  if (!rec) return rec.status();
  auto lock = engine.store().Lock(req.lab);
  if (!lock) return lock.status();
  auto snap = engine.store().Load(req.lab);
  if (!snap) return snap.status();
  auto resources = RecordedResources(*snap);

  // Machines and interfaces are found by their names as written, ignoring case (as Windows
  // compares them); an interface also by its kernel name (docs/names.md).
  for (const auto& r : resources)
    if (r.kind == Kind::kPartition) {
      std::string name = r.spec.value("name", std::string());
      if (name != req.machine && schema::FoldCase(name) == schema::FoldCase(req.machine)) req.machine = name;
    }
  const Resource* machine = nullptr;
  std::vector<std::string> names;  // the machine's NICs and adapters, for the error
  const Resource* iface = nullptr;
  for (const auto& r : resources) {
    if (r.kind == Kind::kPartition && r.spec.value("name", std::string()) == req.machine) machine = &r;
    if ((r.kind == Kind::kNic || r.kind == Kind::kAdapter) && MachineOf(r) == req.machine) {
      std::string kernel = r.spec.value("name", std::string());
      std::string alias = r.spec.value("alias", std::string());
      names.push_back(alias.empty() ? kernel : alias);
      if (kernel == req.ifname || schema::FoldCase(names.back()) == schema::FoldCase(req.ifname)) iface = &r;
    }
  }
  // The kernel's name of the interface, which the hypervisor and the switches' uplinks use.
  const std::string ifname = iface ? iface->spec.value("name", std::string()) : req.ifname;
  if (iface && !iface->spec.value("alias", std::string()).empty()) req.ifname = iface->spec.value("alias", std::string());
  if (!machine) return Status::Error("lab '" + req.lab + "' has no machine '" + req.machine + "'");
  auto spec = machine->spec.get<hv::PartitionSpec>();
  LinkReport report;
  report.what = (iface && iface->kind == Kind::kNic ? "NIC '" : "adapter '") + req.ifname + "' of " +
                (spec.is_host ? "host '" : "VM '") + req.machine + "'";
  if (!iface)
    return Status::Error((spec.is_host ? "host '" : "VM '") + req.machine + "' has no NIC or adapter '" + req.ifname +
                         "'" + (names.empty() ? "" : " (it has: " + Join(names, ", ") + ")"));

  auto hv = engine.MakeHypervisor(req.lab, rec->uid);
  const std::string& facts = snap->resources.at(machine->key).facts;
  if (!hv->PartitionRunning(spec, facts))
    return Status::Error(report.what + ": the machine is off; start it first: " +
                         ShellCommand({"lab", "start", req.lab, req.machine}));

  std::string action = std::string("link ") + (req.up ? "up" : "down");
  auto id = engine.store().BeginAction(req.lab, action, iface->key, "lab link " + req.machine + " " + req.ifname);
  if (!id) return id.status();
  Status st = hv->SetLink(spec, ifname, req.up);
  // Plugged back in, the interface has its configuration again, as Windows keeps it across a
  // cable pull: Linux dropped the routes through it when it went down (the default route).
  if (st.ok() && req.up) st = iface->kind == Kind::kNic ? hv->RepairNic(iface->spec.get<hv::NicSpec>())
                                                        : hv->RepairAdapter(iface->spec.get<hv::AdapterSpec>());
  for (const auto& r : resources) {
    if (!st.ok() || !req.up) break;
    if (r.kind != Kind::kSwitch || MachineOf(r) != req.machine) continue;
    auto sw = r.spec.get<hv::SwitchSpec>();
    // A vEthernet over the NIC (external switch, management OS) holds the address and route.
    if (sw.management_port && std::find(sw.uplinks.begin(), sw.uplinks.end(), ifname) != sw.uplinks.end())
      st = hv->RepairSwitch(sw);
  }
  // The SET switches teaming this interface move its ports to the members up, now.
  for (const auto& r : resources) {
    if (!st.ok()) break;
    if (r.kind != Kind::kSwitch || MachineOf(r) != req.machine) continue;
    auto sw = r.spec.get<hv::SwitchSpec>();
    if (!sw.embedded_teaming || std::find(sw.uplinks.begin(), sw.uplinks.end(), ifname) == sw.uplinks.end())
      continue;
    auto team = hv->ReconcileTeam(sw, TeamPorts(resources, sw));
    if (!team) {
      st = team.status();
      continue;
    }
    NameAsWritten(resources, req.machine, &*team);
    report.teams.push_back(TeamReport{sw.name, *team});
  }
  // The kernel's name of the interface, where a lower layer quoted it, as the lab file writes it.
  if (!st.ok() && ifname != req.ifname) st = Status::Error(ReplaceQuoted(st.message(), ifname, req.ifname));
  if (!st.ok()) {
    (void)engine.store().FailAction(*id, st.message());
    return st;
  }
  LAB_RETURN_IF_ERROR(engine.store().CommitAction(*id, req.lab, std::nullopt, ""));
  return report;
}

}  // namespace lab::engine
