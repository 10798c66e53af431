#include "engine/engine.h"

#include "engine/link.h"
#include "engine/facts.h"
#include "engine/placement.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "base/text.h"
#include "engine/drift.h"
#include "engine/lifecycle.h"
#include "hv/sweep.h"

namespace lab::engine {

std::string NewUid() {
  uint64_t v = 0;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::read(fd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) v = std::random_device{}();
  if (fd >= 0) ::close(fd);
  return Hex(v, 12);
}

Result<std::unique_ptr<Engine>> Engine::Open(EngineOptions options) {
  auto store = state::Store::Open(options.state_dir);
  if (!store) return store.status();
  if (!options.hypervisor) options.hypervisor = [](const hv::LabContext& c) { return hv::MakeLinuxHypervisor(c); };
  return std::unique_ptr<Engine>(new Engine(std::move(options), std::move(*store)));
}

std::unique_ptr<hv::Hypervisor> Engine::MakeHypervisor(const std::string& lab, const std::string& uid) {
  hv::LabContext ctx;
  ctx.lab = lab;
  ctx.uid = uid;
  ctx.run_root = options_.run_dir;
  ctx.state_root = options_.state_dir;
  ctx.init_path = options_.init_path;
  return options_.hypervisor(ctx);
}

Observed Engine::Observe(hv::Hypervisor& hv, const state::Snapshot& snap,
                         const std::vector<state::JournalEntry>& interrupted) {
  return ObserveDrift(hv, snap, interrupted);
}

Plan Engine::PlanFor(const schema::Lab& file_lab, const std::string& uid, const state::Snapshot& snap, hv::Hypervisor& hv,
                     const std::vector<state::JournalEntry>& interrupted, bool shown_only) {
  // The file as `lab move` placed its VMs; the file itself (not a copy of it) when nothing moved.
  std::optional<Placed> placed;
  if (!snap.placements.empty()) placed = ApplyPlacements(file_lab, snap.placements);
  const schema::Lab& lab = placed ? placed->lab : file_lab;
  PlanOptions options;
  options.profile = ProfileOf(lab);
  // Only recorded resources are compared by their specs; the others are created.
  NeedsSpec needs_spec;
  if (shown_only) needs_spec = [&snap](const std::string& key) { return snap.resources.count(key) != 0; };
  Plan plan = ComputePlan(Desired(lab, uid, needs_spec), snap, Observe(hv, snap, interrupted), options);
  // The lab's static rules (what validation does not already refuse), before the changes' own.
  RuleReport rules = CheckRules(lab);
  plan.refusals.insert(plan.refusals.begin(), rules.errors.begin(), rules.errors.end());
  plan.notes.insert(plan.notes.begin(), rules.warnings.begin(), rules.warnings.end());
  if (placed) plan.notes.insert(plan.notes.begin(), placed->notes.begin(), placed->notes.end());
  return plan;
}

Result<Plan> Engine::PlanUp(const schema::Lab& lab) {
  auto snap = store_->Load(lab.name);
  if (!snap) return snap.status();
  std::string uid = snap->lab ? snap->lab->uid : NewUid();
  auto hv = MakeHypervisor(lab.name, uid);
  return PlanFor(lab, uid, *snap, *hv, {}, /*shown_only=*/true);
}

/// The part of a plan acting on resources that live in `machines`.
static Plan Restrict(const Plan& plan, const std::set<std::string>& machines) {
  Plan out;
  out.notes = plan.notes;
  out.refusals = plan.refusals;
  for (const auto& a : plan.actions)
    if (machines.count(MachineOf(a.resource))) {
      out.actions.push_back(a);
      if (a.type == ActionType::kCreate) ++out.add;
      if (a.type == ActionType::kUpdate) ++out.change;
      if (a.type == ActionType::kReplace) ++out.add, ++out.destroy;
      if (a.type == ActionType::kDelete) ++out.destroy;
    }
  return out;
}

Result<ApplyResult> Engine::Up(const schema::Lab& lab, const std::function<void(const Plan&)>& on_plan,
                               const ExecOptions& exec, const std::set<std::string>* only) {
  auto lock = store_->Lock(lab.name);
  if (!lock) return lock.status();
  auto snap = store_->Load(lab.name);
  if (!snap) return snap.status();
  state::LabRecord rec = snap->lab.value_or(state::LabRecord{lab.name, NewUid(), "", 0, 0});
  rec.file = lab.file;
  auto hv = MakeHypervisor(lab.name, rec.uid);
  ApplyResult out;
  out.note = lock->takeover_note();
  // Under the lock: actions still intended were begun by a process that died (killed mid-run).
  auto interrupted = store_->Intended(lab.name);
  out.plan = PlanFor(lab, rec.uid, *snap, *hv, interrupted);
  if (only) out.plan = Restrict(out.plan, *only);
  if (on_plan) on_plan(out.plan);
  if (!out.plan.refusals.empty())
    return Status::Error("the rules refuse this plan; nothing was changed: " + Join(out.plan.refusals, "; "));
  LAB_RETURN_IF_ERROR(store_->PutLab(rec));
  if (!out.plan.empty()) out.report = Execute(out.plan, lab.name, *hv, *store_, exec);
  // Adapters came or went, switches were remade: the SET switches bind their ports anew.
  if (!out.plan.empty() && out.report.ok()) {
    auto after = store_->Load(lab.name);
    if (!after) return after.status();
    LAB_RETURN_IF_ERROR(ReconcileTeams(*hv, *after).Prefixed("lab up"));
  }
  // What they left behind has been remade: they need no redoing any more.
  if (out.report.ok() && !interrupted.empty() && !only)
    LAB_RETURN_IF_ERROR(store_->SettleInterrupted(lab.name, interrupted.back().id));
  return out;
}

Result<ApplyResult> Engine::Down(const std::string& lab, const std::function<void(const Plan&)>& on_plan,
                                 const ExecOptions& exec) {
  auto lock = store_->Lock(lab);
  if (!lock) return lock.status();
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  ApplyResult out;
  out.note = lock->takeover_note();
  if (!snap->lab) {
    // Nothing recorded (the database was deleted, or never knew it): whatever carries the lab's
    // marks on this machine is still the lab's.
    auto swept = SweepByMarks(options_, lab);
    if (!swept) return swept.status();
    out.swept = *swept;
    return out;
  }
  auto hv = MakeHypervisor(lab, snap->lab->uid);
  out.plan = ComputePlan({}, *snap, {});
  if (on_plan) on_plan(out.plan);
  // Complete or not, a down ends with SweepOne's RemoveLabRoot (this run's or the next's).
  hv->TearingDownLab();
  out.report = Execute(out.plan, lab, *hv, *store_, exec);
  if (!out.report.ok()) return out;
  // `hv` lives on until the end: what its teardown still holds (the lab's network namespaces,
  // freed by the kernel in a worker once released) goes after the rest of the work, not during.
  // What carries the lab's mark but no record (a partition a killed run of an older lab made
  // before noting it): down is the end of the lab, so it goes too, found by the mark.
  bool found = false;
  auto rest = SweepOne(options_, lab, snap->lab->uid, &found);
  if (!rest) return rest.status();
  if (found) out.swept.push_back(*rest);
  // Earlier incarnations of the lab whose records were lost (their disks are in this state dir).
  for (const auto& uid : hv::FindLabUids(lab, {options_.state_dir + "/disks"}))
    if (uid != snap->lab->uid) {
      auto swept = SweepOne(options_, lab, uid);
      if (!swept) return swept.status();
      out.swept.push_back(*swept);
    }
  LAB_RETURN_IF_ERROR(store_->DeleteLab(lab));
  hv.reset();
  return out;
}

Result<std::string> Engine::SweepOne(const EngineOptions& options, const std::string& lab, const std::string& uid,
                                     bool* found) {
  hv::LabContext ctx;
  ctx.lab = lab;
  ctx.uid = uid;
  ctx.run_root = options.run_dir;
  ctx.state_root = options.state_dir;
  ctx.init_path = options.init_path;
  hv::Swept swept;
  LAB_RETURN_IF_ERROR(hv::SweepLab(ctx, &swept));
  if (found) *found = !swept.empty();
  // The lab's top-level directories and cgroups are gone; this releases what labs share.
  auto factory = options.hypervisor ? options.hypervisor
                                    : HypervisorFactory([](const hv::LabContext& c) { return hv::MakeLinuxHypervisor(c); });
  LAB_RETURN_IF_ERROR(factory(ctx)->RemoveLabRoot());
  return ctx.Mark() + " (" + swept.Describe() + ")";
}

Result<std::vector<std::string>> Engine::SweepByMarks(const EngineOptions& options, const std::string& lab) {
  std::vector<std::string> out;
  for (const auto& uid : hv::FindLabUids(lab, {options.run_dir, options.state_dir + "/disks"})) {
    auto one = SweepOne(options, lab, uid);
    if (!one) return one.status();
    out.push_back(*one);
  }
  return out;
}

Result<state::LabRecord> Engine::Find(const std::string& lab) {
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  if (!snap->lab) return Status::Error("lab '" + lab + "' is not up (no record of it in " + options_.state_dir + ")");
  return *snap->lab;
}

std::vector<state::LabRecord> Engine::Labs() { return store_->ListLabs(); }

Result<LabStatus> Engine::Status(const std::string& lab) {
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  if (!snap->lab) return Status::Error("lab '" + lab + "' is not up (no record of it in " + options_.state_dir + ")");
  auto hv = MakeHypervisor(lab, snap->lab->uid);
  LabStatus st;
  st.lab = lab;
  st.uid = snap->lab->uid;
  st.file = snap->lab->file;
  st.resources = snap->resources.size();
  auto resources = RecordedResources(*snap);
  std::map<std::string, MachineStatus*> by_name;
  Observed found = Observe(*hv, *snap);
  for (const auto& r : resources) {
    const std::string& facts = snap->resources.at(r.key).facts;
    std::string what = found.count(r.key) ? found.what(r.key) : "";
    if (found.count(r.key)) st.drift.push_back(r.key + ": " + (what.empty() ? "not running" : what));
    // A machine whose links or addresses drifted still runs; one found dead or half made does not.
    bool alive = !found.count(r.key) || (what != "not running" && !IsPending(facts));
    if (r.kind == Kind::kPartition || r.kind == Kind::kNetwork) {
      MachineStatus m;
      m.name = r.spec.value("name", std::string());
      m.kind = r.kind == Kind::kNetwork ? "network" : (r.spec.value("is_host", false) ? "host" : "vm");
      auto lineage = r.spec.value("lineage", std::vector<std::string>{});
      m.parent = lineage.size() >= 2 ? lineage[lineage.size() - 2] : "";
      m.state = !alive ? "off" : (r.kind == Kind::kPartition && hv->PartitionSaved(r.spec.get<hv::PartitionSpec>(), facts) ? "saved" : "running");
      auto facts_json = nlohmann::json::parse(facts, nullptr, false);
      if (!facts_json.is_discarded() && facts_json.contains("init")) m.pid = facts_json["init"].value("pid", 0);
      if (r.kind == Kind::kNetwork && r.spec.contains("gateway") && r.spec["gateway"].is_string())
        m.addresses.push_back("stand-in " + r.spec["gateway"].get<std::string>());
      st.machines.push_back(m);
    }
  }
  // A VM moved while off (lab move) is recorded on its old host until it starts on the new one:
  // show where it will start, as the file and the moves place it.
  std::optional<schema::Lab> placed;
  for (auto& m : st.machines) {
    by_name[m.kind + "/" + m.name] = &m;
    if (m.kind != "vm" || m.state != "off") continue;
    if (!placed) {
      auto file = schema::LoadFile(st.file);
      placed = file.ok() ? ApplyPlacements(*file.lab, snap->placements).lab : schema::Lab{};
    }
    if (const schema::Machine* pm = placed->FindMachine(m.name)) m.parent = pm->parent;
  }
  for (const auto& r : resources)
    if (r.kind == Kind::kSwitch && r.spec.value("embedded_teaming", false)) {
      auto sw = r.spec.get<hv::SwitchSpec>();
      if (auto team = hv->ObserveTeam(sw, TeamPorts(resources, sw)))
        st.teams.push_back(TeamStatus{sw.owner, sw.name, *team});
    }
  auto machine = [&](const std::string& name) -> MachineStatus* {
    for (const char* k : {"host/", "vm/"})
      if (auto it = by_name.find(k + name); it != by_name.end()) return it->second;
    return nullptr;
  };
  for (const auto& r : resources) {
    auto ip = r.spec.value("ip", nlohmann::json());
    if (!ip.is_string()) continue;
    if (r.kind == Kind::kNic)
      if (auto* m = machine(r.spec.value("machine", std::string())))
        m->addresses.push_back(r.spec.value("name", std::string()) + " " + ip.get<std::string>());
    if (r.kind == Kind::kAdapter)
      if (auto* m = machine(r.spec.value("vm", std::string())))
        m->addresses.push_back(r.spec.value("name", std::string()) + " " + ip.get<std::string>());
    if (r.kind == Kind::kSwitch)
      if (auto* m = machine(r.spec.value("owner", std::string())))
        m->addresses.push_back("vEthernet (" + r.spec.value("name", std::string()) + ") " + ip.get<std::string>());
  }
  return st;
}

Result<std::map<std::string, hv::PartitionSpec>> Engine::RunningMachines(const std::string& lab) {
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  if (!snap->lab) return Status::Error("lab '" + lab + "' is not up; run `lab up FILE` first");
  std::map<std::string, hv::PartitionSpec> out;
  for (const auto& r : RecordedResources(*snap))
    if (r.kind == Kind::kPartition) {
      auto spec = r.spec.get<hv::PartitionSpec>();
      out[spec.name] = spec;
    }
  return out;
}

Result<std::vector<CheckOutcome>> Engine::Check(const schema::Lab& lab) {
  auto machines = RunningMachines(lab.name);
  if (!machines) return machines.status();
  auto snap = store_->Load(lab.name);
  if (!snap) return snap.status();
  auto hv = MakeHypervisor(lab.name, snap->lab->uid);
  return RunChecks(lab.checks, *machines, *hv, std::max(options_.jobs, 4));
}

Result<std::string> Engine::Logs(const std::string& lab, const std::string& machine) {
  auto machines = RunningMachines(lab);
  if (!machines) return machines.status();
  if (!machines->count(machine)) {
    std::vector<std::string> names;
    for (const auto& [n, _] : *machines) names.push_back(n);
    return Status::Error("lab '" + lab + "' has no machine '" + machine + "' (it has: " + Join(names, ", ") + ")");
  }
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  return MakeHypervisor(lab, snap->lab->uid)->RunLog(machine);
}

Result<int> Engine::Exec(const std::string& lab, const std::string& machine, const std::vector<std::string>& argv) {
  auto machines = RunningMachines(lab);
  if (!machines) return machines.status();
  auto it = machines->find(machine);
  if (it == machines->end()) {
    std::vector<std::string> names;
    for (const auto& [n, _] : *machines) names.push_back(n);
    return Status::Error("lab '" + lab + "' has no machine '" + machine + "' (it has: " + Join(names, ", ") + ")");
  }
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  auto hv = MakeHypervisor(lab, snap->lab->uid);
  const auto& facts = snap->resources.at("partition/" + machine).facts;
  // A saved VM's processes are frozen: a command joining it would hang until it is resumed.
  if (hv->PartitionSaved(it->second, facts))
    return Status::Error("VM '" + machine + "' is saved; resume it first: lab resume " + lab + " " + machine);
  if (!hv->PartitionRunning(it->second, facts))
    return it->second.is_host
               ? Status::Error("host '" + machine + "' is not running (drift); lab up " + snap->lab->file + " repairs it")
               : Status::Error("VM '" + machine + "' is off; start it first: lab start " + lab + " " + machine);
  return hv->Exec(it->second, argv);
}

}  // namespace lab::engine
