#include "engine/lifecycle.h"

#include <algorithm>
#include <map>
#include <set>

#include "base/quote.h"
#include "base/text.h"
#include "engine/placement.h"
#include "hv/model.h"

namespace lab::engine {
namespace {

namespace model = hv::model;

struct Machine {
  Resource resource;
  hv::PartitionSpec spec;
  std::string facts;
};

model::Operation ModelOp(LifecycleOp op) {
  switch (op) {
    case LifecycleOp::kStop: return model::Operation::kStop;
    case LifecycleOp::kStart:
    case LifecycleOp::kResume: return model::Operation::kStart;
    case LifecycleOp::kSave: return model::Operation::kSave;
    case LifecycleOp::kCheckpoint: return model::Operation::kCreateCheckpoint;
    case LifecycleOp::kRestore: return model::Operation::kApplyCheckpoint;
    case LifecycleOp::kMove: return model::Operation::kLiveMigrate;
  }
  return model::Operation::kStop;
}

/// A VM that starts, or arrives on another host, says where it is, as Hyper-V does after a
/// migration: each adapter of the VMs in `subtree` that runs is announced on its switch (and the
/// switch it left, after a move, forgets its MAC). Reachable at once rather than when the
/// bridges' entries age out (300 s). A failure is reported, not fatal: the VM is there.
/// `through`: the hypervisor to announce with (a live migration's, still connected to the moved
/// VM's agent: a new connection right after would race the guest reopening its port), else a new one.
void Announce(Engine& engine, const LifecycleRequest& req, const std::set<std::string>& subtree,
              const std::map<std::string, hv::BridgeAt>& left, LifecycleReport& report,
              hv::Hypervisor* through = nullptr) {
  auto rec = engine.Find(req.lab);
  if (!rec) return;
  auto snap = engine.store().Load(req.lab);
  if (!snap) return;
  std::unique_ptr<hv::Hypervisor> made;
  if (!through) made = engine.MakeHypervisor(req.lab, rec->uid);
  hv::Hypervisor* hv = through ? through : made.get();
  int announced = 0;
  for (const auto& r : RecordedResources(*snap)) {
    if (r.kind != Kind::kAdapter) continue;
    auto a = r.spec.get<hv::AdapterSpec>();
    if (!subtree.count(a.vm)) continue;
    std::vector<hv::BridgeAt> flush{hv::BridgeAt{a.owner, a.switch_ifname}};
    auto was = left.find(a.vm + "/" + a.name);
    if (was != left.end() && (was->second.owner != a.owner || was->second.ifname != a.switch_ifname))
      flush.push_back(was->second);
    Status st = hv->AnnounceAdapter(a, flush);
    if (st.ok()) ++announced;
    else report.lines.push_back("warning: " + st.message());
  }
  if (req.op == LifecycleOp::kMove && announced > 0)
    report.lines.push_back("VM '" + req.machine + "' announced on its new switch (gratuitous ARP from " +
                           std::to_string(announced) + (announced == 1 ? " adapter" : " adapters") +
                           "; stale forwarding entries flushed)");
}

model::State StateOf(hv::Hypervisor& hv, const Machine& m) {
  if (!hv.PartitionRunning(m.spec, m.facts)) return model::State::kOff;
  return hv.PartitionSaved(m.spec, m.facts) ? model::State::kSaved : model::State::kRunning;
}

// The lab's recorded VMs, and the one named `machine` (an error naming the VMs if none is).
struct Found {
  std::vector<Machine> machines;
  const Machine* target = nullptr;
};
Result<Found> FindVm(const state::Snapshot& snap, const std::string& lab, const std::string& machine) {
  Found f;
  for (auto& r : RecordedResources(snap))
    if (r.kind == Kind::kPartition)
      f.machines.push_back(Machine{r, r.spec.get<hv::PartitionSpec>(), snap.resources.at(r.key).facts});
  std::vector<std::string> names;
  for (const auto& m : f.machines) {
    if (m.spec.name == machine) f.target = &m;
    if (!m.spec.is_host) names.push_back(m.spec.name);
  }
  if (!f.target)
    return Status::Error("lab '" + lab + "' has no machine '" + machine + "' (its VMs: " + Join(names, ", ") + ")");
  if (f.target->spec.is_host)
    return Status::Error("'" + machine + "' is a host, a physical machine of the lab; checkpoints are of VMs");
  return f;
}

/// Move-VM of running VM `target` as a live migration to `req.to`: the hypervisor carries it
/// over (Hypervisor::MigratePartition, with the VM and its adapters as the lab places them there),
/// then the records follow: its placement, the specs of what is recorded of it and inside it (as
/// the planner would make them there, so `lab up` finds nothing to change) and its new facts.
/// Journaled: an action begun and not done is an interrupted move; the next `lab move` or
/// `lab up` converges (until the VM runs at the destination it runs at the source).
Result<hv::LiveMigration> MigrateLive(Engine& engine, const LifecycleRequest& req, const std::string& uid, const schema::Lab& applied,
                   const state::Snapshot& snap, hv::Hypervisor& hv, const Machine& target,
                   const std::set<std::string>& subtree, const std::string& placement, const std::string& reason,
                   LifecycleReport& report) {
  auto placements = snap.placements;
  if (placement.empty()) placements.erase(req.machine);
  else placements[req.machine] = placement;
  // The images as recorded: the specs at the destination carry the same keys and layers.
  MachineImages images;
  for (const auto& [key, rec] : snap.resources)
    if (auto r = Resource::FromRecordJson(key, rec.spec); r && r->kind == Kind::kPartition) {
      auto p = r->spec.get<hv::PartitionSpec>();
      if (!p.image.empty()) images[p.image] = MachineImage{p.image_key, p.image_layers};
    }
  std::map<std::string, Resource> there;
  for (auto& r : Desired(ApplyPlacements(applied, placements).lab, uid, {}, &images)) there[r.key] = std::move(r);
  auto vm_there = there.find(target.resource.key);
  if (vm_there == there.end())
    return Status::Error("VM '" + req.machine + "' has no place on '" + req.to + "' in the lab as last applied");
  std::vector<hv::AdapterSpec> adapters;
  for (const auto& [key, r] : there)
    if (r.kind == Kind::kAdapter && r.spec.value("vm", std::string()) == req.machine)
      adapters.push_back(r.spec.get<hv::AdapterSpec>());

  auto id = engine.store().BeginAction(req.lab, "move", target.resource.key, reason);
  if (!id) return id.status();
  auto moved = hv.MigratePartition(target.spec, target.facts, vm_there->second.spec.get<hv::PartitionSpec>(), adapters);
  if (!moved) {
    (void)engine.store().FailAction(*id, moved.status().message());
    return moved.status();
  }
  auto record = [](const Resource& r, const std::string& facts) {
    return state::ResourceRecord{ToString(r.kind), r.key, r.deps.empty() ? "" : r.deps.front(), r.Hash(),
                                 r.ToRecordJson(), facts, 0};
  };
  // What is recorded of the VM and inside it, as placed there (its facts stay: it did not change).
  for (const auto& [key, rec] : snap.resources) {
    if (key == target.resource.key) continue;
    auto it = there.find(key);
    auto r = Resource::FromRecordJson(key, rec.spec);
    if (it == there.end() || !r || !subtree.count(MachineOf(*r)) || it->second.Hash() == rec.spec_hash) continue;
    auto step = engine.store().BeginAction(req.lab, "move", key, reason);
    if (!step) return step.status();
    LAB_RETURN_IF_ERROR(engine.store().CommitAction(*step, req.lab, record(it->second, rec.facts), ""));
  }
  LAB_RETURN_IF_ERROR(engine.store().CommitAction(*id, req.lab, record(vm_there->second, moved->facts), ""));
  // The placement last: until it is written, `lab move` of it again sees it where it was and
  // finds it arrived (the records are then written again).
  LAB_RETURN_IF_ERROR(engine.store().SetPlacement(req.lab, req.machine, placement));
  // An earlier move of it that stopped part way is finished now: `lab up` need not redo it.
  for (const auto& e : engine.store().Intended(req.lab)) {
    if (e.action != "move" || !snap.resources.count(e.key)) continue;
    auto r = Resource::FromRecordJson(e.key, snap.resources.at(e.key).spec);
    if (r && subtree.count(MachineOf(*r)))
      LAB_RETURN_IF_ERROR(engine.store().FailAction(e.id, "interrupted: finished by a later lab move"));
  }
  report.lines.push_back("move " + vm_there->second.display);
  return *moved;
}

}  // namespace

const char* ToString(LifecycleOp op) {
  switch (op) {
    case LifecycleOp::kStop: return "stop";
    case LifecycleOp::kStart: return "start";
    case LifecycleOp::kSave: return "save";
    case LifecycleOp::kResume: return "resume";
    case LifecycleOp::kCheckpoint: return "checkpoint";
    case LifecycleOp::kRestore: return "restore";
    case LifecycleOp::kMove: return "move";
  }
  return "?";
}

std::string MachineOf(const Resource& r) {
  switch (r.kind) {
    case Kind::kPartition: return r.spec.value("name", std::string());
    case Kind::kNic:
    case Kind::kDns:
    case Kind::kRun: return r.spec.value("machine", std::string());
    case Kind::kSwitch:
    case Kind::kNat: return r.spec.value("owner", std::string());
    case Kind::kAdapter: return r.spec.value("vm", std::string());
    default: return "";
  }
}

Result<std::vector<hv::CheckpointInfo>> ListCheckpoints(Engine& engine, const std::string& lab,
                                                        const std::string& machine) {
  auto rec = engine.Find(lab);
  if (!rec) return rec.status();
  auto snap = engine.store().Load(lab);
  if (!snap) return snap.status();
  auto found = FindVm(*snap, lab, machine);
  if (!found) return found.status();
  return engine.MakeHypervisor(lab, rec->uid)->CheckpointDetails(found->target->spec);
}

Result<std::vector<std::string>> RemoveCheckpoint(Engine& engine, const std::string& lab, const std::string& machine,
                                                  const std::string& name) {
  auto rec = engine.Find(lab);
  if (!rec) return rec.status();
  auto lock = engine.store().Lock(lab);
  if (!lock) return lock.status();
  auto snap = engine.store().Load(lab);
  if (!snap) return snap.status();
  auto found = FindVm(*snap, lab, machine);
  if (!found) return found.status();
  auto hv = engine.MakeHypervisor(lab, rec->uid);
  auto has = [&hv, &name](const Machine& m) {
    auto all = hv->Checkpoints(m.spec);
    return std::find(all.begin(), all.end(), name) != all.end();
  };
  const Machine* target = found->target;
  if (!has(*target)) {
    auto all = hv->Checkpoints(target->spec);
    return Status::Error("VM '" + machine + "' has no checkpoint '" + name + "' (" +
                         (all.empty() ? std::string("it has none") : "it has: " + Join(all, ", ")) +
                         "); nothing was changed. `" + ShellCommand({"lab", "checkpoints", lab, machine}) + "` lists them");
  }
  // The VMs inside that have it, deepest first; the VM itself last, so while its checkpoint is
  // listed the next run still finds (and removes) what is left of it inside.
  std::vector<const Machine*> doomed;
  for (const auto& m : found->machines)
    if (&m != target && std::count(m.spec.lineage.begin(), m.spec.lineage.end(), machine) && has(m))
      doomed.push_back(&m);
  std::sort(doomed.begin(), doomed.end(),
            [](const Machine* a, const Machine* b) { return a->spec.lineage.size() > b->spec.lineage.size(); });
  doomed.push_back(target);
  std::vector<std::string> lines;
  for (const Machine* m : doomed) {
    auto id = engine.store().BeginAction(lab, "remove checkpoint", m->resource.key,
                                         "lab checkpoint rm " + machine + " " + name);
    if (!id) return id.status();
    Status st = hv->RemoveCheckpoint(m->spec, name);
    if (!st.ok()) {
      (void)engine.store().FailAction(*id, st.message());
      return st;
    }
    LAB_RETURN_IF_ERROR(engine.store().CommitAction(*id, lab, std::nullopt, ""));
    lines.push_back("removed checkpoint '" + name + "' of " + m->resource.display);
  }
  return lines;
}

Result<LifecycleReport> RunLifecycle(Engine& engine, const LifecycleRequest& asked, const ExecOptions& exec) {
  LifecycleRequest req = asked;  // its machine becomes the recorded name (found ignoring case)
  // The records drive the verb: the lab as last applied, whether or not its file moved.
  auto recorded = engine.Recorded(req.lab);
  if (!recorded) return recorded.status();
  const schema::Lab& applied = recorded->lab;
  auto profile = model::ParseProfile(applied.compatibility).value_or(model::Profile::kV8);
  auto run_first = [&req](const std::string& verb, const std::string& machine) {
    return "run `" + ShellCommand({"lab", verb, req.lab, machine}) + "` first";
  };

  LifecycleReport report;
  report.warnings = recorded->warnings;
  std::set<std::string> subtree;  // the machine and every VM inside it
  std::map<std::string, hv::BridgeAt> left;  // "vm/adapter" -> its switch's bridge before this command
  {
    auto lock = engine.store().Lock(req.lab);
    if (!lock) return lock.status();
    auto snap = engine.store().Load(req.lab);
    if (!snap) return snap.status();
    auto hv = engine.MakeHypervisor(req.lab, recorded->record.uid);

    std::vector<Machine> machines;
    const Machine* target = nullptr;
    for (auto& r : RecordedResources(*snap))
      if (r.kind == Kind::kPartition) {
        auto spec = r.spec.get<hv::PartitionSpec>();
        machines.push_back(Machine{r, spec, snap->resources.at(r.key).facts});
      }
    std::vector<std::string> names;
    for (const auto& m : machines) {
      if (m.spec.name == req.machine) target = &m;
      if (!m.spec.is_host) names.push_back(m.spec.name);
    }
    // As Windows compares names: `lab stop LAB dc01` acts on DC01 (validation keeps them unique).
    for (const auto& m : machines)
      if (!target && schema::FoldCase(m.spec.name) == schema::FoldCase(req.machine)) target = &m;
    if (target) req.machine = target->spec.name;
    if (!target)
      return Status::Error("lab '" + req.lab + "' has no machine '" + req.machine + "' (its VMs: " + Join(names, ", ") +
                           ")");
    if (target->spec.is_host)
      return Status::Error("'" + req.machine + "' is a host, a physical machine of the lab; lifecycle commands act on VMs");
    auto find = [&machines](const std::string& name) -> const Machine* {
      for (const auto& m : machines)
        if (m.spec.name == name) return &m;
      return nullptr;
    };

    for (const auto& r : RecordedResources(*snap))
      if (r.kind == Kind::kAdapter) {
        auto a = r.spec.get<hv::AdapterSpec>();
        left[a.vm + "/" + a.name] = hv::BridgeAt{a.owner, a.switch_ifname};
      }

    std::vector<const Machine*> inside;  // the target and its nested VMs, deepest first
    bool children_running = false;
    for (const auto& m : machines)
      if (std::count(m.spec.lineage.begin(), m.spec.lineage.end(), req.machine)) {
        inside.push_back(&m);
        subtree.insert(m.spec.name);
        if (&m != target && StateOf(*hv, m) == model::State::kRunning) children_running = true;
      }
    std::sort(inside.begin(), inside.end(),
              [](const Machine* a, const Machine* b) { return a->spec.lineage.size() > b->spec.lineage.size(); });

    model::VmFacts vm;
    vm.name = req.machine;
    vm.state = StateOf(*hv, *target);
    vm.expose_virtualization_extensions = target->spec.expose_virtualization_extensions;
    vm.dynamic_memory = target->spec.dynamic_memory;
    vm.version = target->spec.version;
    vm.hypervisor_running = vm.state == model::State::kRunning && vm.expose_virtualization_extensions &&
                            children_running;

    // ---- Every precondition, before anything changes. ----
    // What the VM runs inside must run: the outermost machine on its way up that does not.
    auto ancestors_refusal = [&](bool saved_matters) -> Status {
      const auto& lineage = target->spec.lineage;
      for (size_t i = 0; i + 1 < lineage.size(); ++i) {
        const Machine* up = find(lineage[i]);
        if (!up) continue;
        const bool parent = i + 2 == lineage.size();
        const std::string who = parent ? "its parent '" + up->spec.name + "'"
                                       : "'" + up->spec.name + "', which it runs inside,";
        model::State s = StateOf(*hv, *up);
        if (s == model::State::kOff)
          return Status::Error(up->spec.is_host
                                   ? "VM '" + req.machine + "': its host '" + up->spec.name +
                                         "' is not running (drift); run `" + ShellCommand({"lab", "up", recorded->record.file}) + "` first"
                                   : "VM '" + req.machine + "': " + who + " is off; " + run_first("start", up->spec.name));
        if (s == model::State::kSaved && saved_matters)
          return Status::Error("VM '" + req.machine + "': " + who + " is saved; " + run_first("resume", up->spec.name));
      }
      return Status::Ok();
    };
    std::string from;
    std::vector<const Machine*> restored;  // restore: the VMs inside that have the checkpoint
    switch (req.op) {
      case LifecycleOp::kStart:
      case LifecycleOp::kResume:
      case LifecycleOp::kRestore:  // it starts again after the restore
        LAB_RETURN_IF_ERROR(ancestors_refusal(true));
        break;
      case LifecycleOp::kStop:
      case LifecycleOp::kSave:
        // A frozen parent freezes the VMs inside it: they can neither stop nor save on their own.
        for (size_t i = 0; i + 1 < target->spec.lineage.size(); ++i)
          if (const Machine* up = find(target->spec.lineage[i]); up && StateOf(*hv, *up) == model::State::kSaved)
            return Status::Error("VM '" + req.machine + "': '" + up->spec.name + "', which it runs inside, is saved; " +
                                 run_first("resume", up->spec.name));
        break;
      default: break;
    }
    if (req.op == LifecycleOp::kResume && vm.state != model::State::kSaved)
      return Status::Error("VM '" + req.machine + "' is " + model::ToString(vm.state) + ", not saved" +
                           (vm.state == model::State::kOff ? "; " + ShellCommand({"lab", "start", req.lab, req.machine}) + " runs it"
                                                             : ""));
    if (req.op == LifecycleOp::kRestore || req.op == LifecycleOp::kCheckpoint) {
      auto has = [&hv](const Machine& m, const std::string& name) {
        auto all = hv->Checkpoints(m.spec);
        return std::find(all.begin(), all.end(), name) != all.end();
      };
      if (req.op == LifecycleOp::kRestore) {
        if (!has(*target, req.checkpoint)) {
          auto all = hv->Checkpoints(target->spec);
          return Status::Error("VM '" + req.machine + "' has no checkpoint '" + req.checkpoint + "' (" +
                               (all.empty() ? std::string("it has none") : "it has: " + Join(all, ", ")) +
                               "); nothing was changed. `" +
                               ShellCommand({"lab", "checkpoint", req.lab, req.machine, req.checkpoint}) + "` makes one");
        }
        // Its nested VMs' disks live inside its disk (on Hyper-V): they go back with it.
        for (const Machine* m : inside)
          if (m != target) {
            if (has(*m, req.checkpoint)) restored.push_back(m);
            else report.lines.push_back("note: VM '" + m->spec.name + "' has no checkpoint '" + req.checkpoint +
                                        "' (made after it); its disk is kept as it is");
          }
      } else {
        if (has(*target, req.checkpoint))
          return Status::Error("VM '" + req.machine + "' already has a checkpoint '" + req.checkpoint +
                               "'; nothing was changed. Name this one differently");
        // A VM inside with a checkpoint of that name: made by an earlier run of this same command
        // that stopped part way (the journal says so) is kept; any other is the user's own.
        std::set<std::string> earlier;
        for (const auto& e : engine.store().Journal(req.lab, 10000))
          if (e.action == "checkpoint" && e.status == "done" &&
              e.reason == "lab checkpoint " + req.machine + " " + req.checkpoint)
            earlier.insert(e.key);
        for (const Machine* m : inside)
          if (m != target && has(*m, req.checkpoint) && !earlier.count(m->resource.key))
            return Status::Error("VM '" + m->spec.name + "', inside '" + req.machine + "', already has a checkpoint '" +
                                 req.checkpoint + "' of its own; nothing was changed. A checkpoint of '" + req.machine +
                                 "' covers the VMs inside it: name it differently");
      }
    }
    if (req.op == LifecycleOp::kMove) {
      // Move-VM: where the VM runs now (the file, or an earlier move), and whether it can go.
      Placed placed = ApplyPlacements(applied, snap->placements);
      const schema::Machine* now = placed.lab.FindMachine(req.machine);
      if (!now) return Status::Error("VM '" + req.machine + "' is no longer in the lab as last applied");
      from = now->parent;
      if (from == req.to) {
        report.lines.push_back("VM '" + req.machine + "' already runs on '" + req.to + "'");
        return report;
      }
      std::string why = CheckPlacement(placed.lab, req.machine, req.to);
      if (!why.empty()) return Status::Error("cannot move VM '" + req.machine + "' to '" + req.to + "': " + why);
      if (vm.state == model::State::kSaved)
        return Status::Error("VM '" + req.machine + "' is saved: its frozen processes cannot change host; resume it (" +
                             ShellCommand({"lab", "resume", req.lab, req.machine}) + ") or stop it (lab stop) first, then move it");
    }
    const bool move_running = req.op == LifecycleOp::kMove && vm.state == model::State::kRunning;
    // Live migration (Move-VM of a running VM): a qemu VM on an image carries its memory over
    // to a QEMU on the destination. A qemu VM on the host's software (a 9p root) cannot, and a
    // partition's processes cannot change kernel namespaces: both move by quick migration.
    const bool live = move_running && target->spec.IsQemu() && !target->spec.image.empty();

    // Restore turns a running VM off first (Restore-VMCheckpoint applies to a VM that is off).
    bool stop_first = req.op == LifecycleOp::kRestore && vm.state != model::State::kOff;
    if (stop_first) {
      auto stop = model::CheckTransition(vm, model::Operation::kStop, profile);
      LAB_RETURN_IF_ERROR(stop.ToStatus());
      vm.state = model::State::kOff;
      vm.hypervisor_running = false;
    }
    auto verdict = model::CheckTransition(vm, ModelOp(req.op), profile);
    LAB_RETURN_IF_ERROR(verdict.ToStatus());
    for (const auto& v : verdict.violations) report.lines.push_back("note: " + v.message);
    for (const auto& e : verdict.effects) report.lines.push_back("note: " + e);

    // ---- The changes, each journaled: a run that stops part way is continued by the next. ----
    const std::string reason = "lab " + std::string(ToString(req.op)) + " " + req.machine +
                               (req.checkpoint.empty() ? "" : " " + req.checkpoint);
    auto journaled = [&](const Machine& m, const std::string& action, const std::function<Status()>& fn) -> Status {
      auto id = engine.store().BeginAction(req.lab, action, m.resource.key, reason);
      if (!id) return id.status();
      Status st = fn();
      if (!st.ok()) {
        (void)engine.store().FailAction(*id, st.message());
        return st;
      }
      report.lines.push_back(action + " " + m.resource.display);
      // The record stays: the VM is still part of the lab, and `lab up`/`lab start` finds it off.
      return engine.store().CommitAction(*id, req.lab, std::nullopt, "");
    };
    auto stop_inside = [&]() -> Status {
      for (const Machine* m : inside)
        if (StateOf(*hv, *m) != model::State::kOff)
          LAB_RETURN_IF_ERROR(journaled(*m, "stop", [&] { return hv->StopPartition(m->spec, m->facts); }));
      return Status::Ok();
    };

    switch (req.op) {
      case LifecycleOp::kStop:
        // The user's intent first: a stop that ends part way still leaves the VM off on `lab up`.
        LAB_RETURN_IF_ERROR(engine.store().SetStopped(req.lab, req.machine, true));
        LAB_RETURN_IF_ERROR(stop_inside());
        report.lines.push_back("VM '" + req.machine + "' stays off (also when what it runs on restarts, and on lab up); " +
                               ShellCommand({"lab", "start", req.lab, req.machine}) + " runs it");
        break;
      case LifecycleOp::kRestore:
        if (stop_first) LAB_RETURN_IF_ERROR(stop_inside());
        LAB_RETURN_IF_ERROR(journaled(*target, "restore", [&] {
          return hv->RestoreCheckpoint(target->spec, req.checkpoint);
        }));
        for (const Machine* m : restored)
          LAB_RETURN_IF_ERROR(journaled(*m, "restore", [&] { return hv->RestoreCheckpoint(m->spec, req.checkpoint); }));
        break;
      case LifecycleOp::kSave:
        LAB_RETURN_IF_ERROR(journaled(*target, "save", [&] { return hv->SavePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kResume:
        LAB_RETURN_IF_ERROR(
            journaled(*target, "resume", [&] { return hv->ResumePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kStart:
        LAB_RETURN_IF_ERROR(engine.store().SetStopped(req.lab, req.machine, false));
        if (vm.state == model::State::kSaved)
          LAB_RETURN_IF_ERROR(
              journaled(*target, "resume", [&] { return hv->ResumePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kMove: {
        const schema::Machine* in_file = applied.FindMachine(req.machine);
        const std::string placement = in_file && in_file->parent == req.to ? "" : req.to;  // back home: forget it
        if (live) {
          auto moved = MigrateLive(engine, req, recorded->record.uid, applied, *snap, *hv, *target, subtree,
                                   placement, reason, report);
          if (!moved) return moved.status();
          report.lines.push_back("VM '" + req.machine + "' now runs on '" + req.to + "' (was on '" + from + "'): " +
                                 (moved->earlier ? std::string("moved live by an earlier run that stopped part way")
                                                 : "live migration in " + std::to_string(moved->total_ms) +
                                                       " ms (downtime " + std::to_string(moved->downtime_ms) + " ms)"));
          break;
        }
        // Quick migration: off on the source (what runs inside with it), on at the destination.
        if (move_running) LAB_RETURN_IF_ERROR(stop_inside());
        LAB_RETURN_IF_ERROR(journaled(*target, "move", [&] { return engine.store().SetPlacement(req.lab, req.machine, placement); }));
        report.lines.push_back("VM '" + req.machine + "' now runs on '" + req.to + "' (was on '" + from + "')" +
                               (move_running ? ": stopped there, started here with its disk" : ", and stays off") +
                               (move_running && target->spec.IsQemu()
                                    ? " (quick migration: a qemu VM on the host's software, image: host, cannot migrate live)"
                                    : ""));
        break;
      }
      case LifecycleOp::kCheckpoint: {
        // The VMs inside first, the VM itself last: its checkpoint existing means all are made.
        auto present = [&hv](const Machine& m, const std::string& name) {
          auto all = hv->Checkpoints(m.spec);
          return std::find(all.begin(), all.end(), name) != all.end();
        };
        for (const Machine* m : inside)
          if (!(m != target && present(*m, req.checkpoint)))
            LAB_RETURN_IF_ERROR(journaled(*m, "checkpoint", [&] {
              return hv->CreateCheckpoint(m->spec, m->facts, req.checkpoint);
            }));
        break;
      }
    }
    // A start goes through the planner even when the VM runs: a start that stopped part way
    // (a VM inside it not made) is continued by the same command.
    if (live) {
      Announce(engine, req, subtree, left, report, hv.get());  // the VM runs there already: nothing to start
      return report;
    } else if (!(req.op == LifecycleOp::kRestore || (req.op == LifecycleOp::kStart && vm.state != model::State::kSaved) ||
                 move_running)) {
      return report;
    }
    if (req.op == LifecycleOp::kRestore && snap->stopped.count(req.machine))
      report.lines.push_back("VM '" + req.machine + "' stays off (lab stop); " +
                             ShellCommand({"lab", "start", req.lab, req.machine}) + " runs it");
  }  // the lock is released: Up takes it again

  // Start-VM: the planner makes the VM and what lives in it again, around its kept disk. VMs
  // inside it that the user stopped stay off (Engine::Up).
  auto up = engine.Up(applied, nullptr, exec, &subtree);
  if (!up) return up.status();
  report.applied = true;
  report.apply = std::move(*up);
  if (report.apply.report.ok()) Announce(engine, req, subtree, left, report);
  return report;
}

}  // namespace lab::engine
