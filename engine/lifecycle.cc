#include "engine/lifecycle.h"

#include <algorithm>
#include <set>

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

model::State StateOf(hv::Hypervisor& hv, const Machine& m) {
  if (!hv.PartitionRunning(m.spec, m.facts)) return model::State::kOff;
  return hv.PartitionSaved(m.spec, m.facts) ? model::State::kSaved : model::State::kRunning;
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

Result<LifecycleReport> RunLifecycle(Engine& engine, const LifecycleRequest& req, const ExecOptions& exec) {
  auto rec = engine.Find(req.lab);
  if (!rec) return rec.status();
  auto file = schema::LoadFile(rec->file);
  if (!file.ok())
    return Status::Error("lab '" + req.lab + "': its file " + rec->file + " no longer loads; fix it (lab validate)");
  auto profile = model::ParseProfile(file.lab->compatibility).value_or(model::Profile::kV8);

  LifecycleReport report;
  std::set<std::string> subtree;  // the machine and every VM inside it
  {
    auto lock = engine.store().Lock(req.lab);
    if (!lock) return lock.status();
    auto snap = engine.store().Load(req.lab);
    if (!snap) return snap.status();
    auto hv = engine.MakeHypervisor(req.lab, rec->uid);

    std::vector<Machine> machines;
    const Machine* target = nullptr;
    for (auto& r : RecordedResources(*snap))
      if (r.kind == Kind::kPartition) {
        auto spec = r.spec.get<hv::PartitionSpec>();
        machines.push_back(Machine{r, spec, snap->resources.at(r.key).facts});
      }
    for (const auto& m : machines)
      if (m.spec.name == req.machine) target = &m;
    if (!target) return Status::Error("lab '" + req.lab + "' has no machine '" + req.machine + "'");
    if (target->spec.is_host)
      return Status::Error("'" + req.machine + "' is a host, a physical machine of the lab; lifecycle commands act on VMs");

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
    // Move-VM: where the VM runs now (the file, or an earlier move), and whether it can go.
    std::string from;
    if (req.op == LifecycleOp::kMove) {
      Placed placed = ApplyPlacements(*file.lab, snap->placements);
      const schema::Machine* now = placed.lab.FindMachine(req.machine);
      if (!now) return Status::Error("VM '" + req.machine + "' is no longer in the lab file " + rec->file);
      from = now->parent;
      if (from == req.to) {
        report.lines.push_back("VM '" + req.machine + "' already runs on '" + req.to + "'");
        return report;
      }
      std::string why = CheckPlacement(placed.lab, req.machine, req.to);
      if (!why.empty()) return Status::Error("cannot move VM '" + req.machine + "' to '" + req.to + "': " + why);
      if (vm.state == model::State::kSaved)
        return Status::Error("VM '" + req.machine + "' is saved: its frozen processes cannot change host; resume it (lab resume " +
                             req.lab + " " + req.machine + ") or stop it (lab stop) first, then move it");
    }
    const bool move_running = req.op == LifecycleOp::kMove && vm.state == model::State::kRunning;
    if (req.op == LifecycleOp::kResume && vm.state != model::State::kSaved)
      return Status::Error("VM '" + req.machine + "' is " + model::ToString(vm.state) + ", not saved");

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

    auto journaled = [&](const Machine& m, const std::string& action, const std::function<Status()>& fn) -> Status {
      auto id = engine.store().BeginAction(req.lab, action, m.resource.key, "lab " + action + " " + req.machine);
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

    switch (req.op) {
      case LifecycleOp::kStop:
      case LifecycleOp::kRestore:
        if (req.op == LifecycleOp::kStop || stop_first)
          for (const Machine* m : inside)
            if (StateOf(*hv, *m) != model::State::kOff)
              LAB_RETURN_IF_ERROR(journaled(*m, "stop", [&] { return hv->StopPartition(m->spec, m->facts); }));
        if (req.op == LifecycleOp::kRestore)
          LAB_RETURN_IF_ERROR(journaled(*target, "restore", [&] {
            return hv->RestoreCheckpoint(target->spec, req.checkpoint);
          }));
        break;
      case LifecycleOp::kSave:
        LAB_RETURN_IF_ERROR(journaled(*target, "save", [&] { return hv->SavePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kResume:
        LAB_RETURN_IF_ERROR(
            journaled(*target, "resume", [&] { return hv->ResumePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kStart:
        if (vm.state == model::State::kSaved)
          LAB_RETURN_IF_ERROR(
              journaled(*target, "resume", [&] { return hv->ResumePartition(target->spec, target->facts); }));
        break;
      case LifecycleOp::kMove: {
        // Quick migration: off on the source (what runs inside with it), on at the destination.
        if (move_running)
          for (const Machine* m : inside)
            if (StateOf(*hv, *m) != model::State::kOff)
              LAB_RETURN_IF_ERROR(journaled(*m, "stop", [&] { return hv->StopPartition(m->spec, m->facts); }));
        const schema::Machine* in_file = file.lab->FindMachine(req.machine);
        const std::string placement = in_file && in_file->parent == req.to ? "" : req.to;  // back home: forget it
        LAB_RETURN_IF_ERROR(journaled(*target, "move", [&] { return engine.store().SetPlacement(req.lab, req.machine, placement); }));
        report.lines.push_back("VM '" + req.machine + "' now runs on '" + req.to + "' (was on '" + from + "')" +
                               (move_running ? ": stopped there, started here with its disk" : ", and stays off"));
        break;
      }
      case LifecycleOp::kCheckpoint:
        LAB_RETURN_IF_ERROR(journaled(*target, "checkpoint", [&] {
          return hv->CreateCheckpoint(target->spec, target->facts, req.checkpoint);
        }));
        break;
    }
    if (!(req.op == LifecycleOp::kRestore || (req.op == LifecycleOp::kStart && vm.state == model::State::kOff) ||
          move_running))
      return report;
  }  // the lock is released: Up takes it again

  // Start-VM: the planner makes the VM and what lives in it again, around its kept disk.
  auto up = engine.Up(*file.lab, nullptr, exec, &subtree);
  if (!up) return up.status();
  report.applied = true;
  report.apply = std::move(*up);
  return report;
}

}  // namespace lab::engine
