#include "engine/engine.h"

#include "images/images.h"

#include "engine/link.h"
#include "engine/facts.h"
#include "engine/placement.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>

#include <spdlog/spdlog.h>

#include "base/quote.h"
#include "base/text.h"
#include "engine/drift.h"
#include "engine/lifecycle.h"
#include "hv/sweep.h"

namespace lab::engine {

std::vector<std::pair<const MachineStatus*, int>> MachineTree(const LabStatus& st) {
  std::vector<const MachineStatus*> sorted;
  for (const auto& m : st.machines) sorted.push_back(&m);
  std::stable_sort(sorted.begin(), sorted.end(), [](const MachineStatus* a, const MachineStatus* b) {
    return a->name < b->name;
  });
  std::map<std::string, std::vector<const MachineStatus*>> children;  // by parent, by name
  for (const MachineStatus* m : sorted)
    if (m->kind == "vm") children[m->parent].push_back(m);
  std::vector<std::pair<const MachineStatus*, int>> out;
  std::set<const MachineStatus*> placed;
  std::function<void(const MachineStatus*, int)> walk = [&](const MachineStatus* m, int depth) {
    if (!placed.insert(m).second) return;
    out.emplace_back(m, depth);
    if (m->kind == "network") return;
    if (auto it = children.find(m->name); it != children.end())
      for (const MachineStatus* c : it->second) walk(c, depth + 1);
  };
  for (const MachineStatus* m : sorted)
    if (m->kind == "network") walk(m, 0);
  for (const MachineStatus* m : sorted)
    if (m->kind == "host") walk(m, 0);
  for (const MachineStatus* m : sorted) walk(m, 0);  // a VM whose parent is not recorded
  return out;
}

std::string NewUid() {
  uint64_t v = 0;
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::read(fd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) v = std::random_device{}();
  if (fd >= 0) ::close(fd);
  return Hex(v, 12);
}

Result<std::unique_ptr<Engine>> Engine::Open(EngineOptions options) {
  auto store = options.read_only ? state::Store::OpenReadOnly(options.state_dir) : state::Store::Open(options.state_dir);
  if (!store) return store.status();
  if (!options.hypervisor) options.hypervisor = [](const hv::LabContext& c) { return hv::MakeHypervisor(c); };
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

namespace {

/// `path` made absolute and normal, so the record names the file from any directory.
std::string AbsolutePath(const std::string& path) {
  if (path.empty()) return path;
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

/// Whether the recorded lab file `recorded` is `file` (absolute): the same path or the same file.
bool SameFile(const std::string& recorded, const std::string& file) {
  if (recorded == file) return true;
  std::error_code ec;
  return std::filesystem::equivalent(recorded, file, ec) && !ec;
}

/// Counts the plan's actions again after some were taken out.
/// Hyper-V's automatic start action: a VM the user stopped stays off when its parent starts
/// again and on `lab up`, and so does everything inside it. Takes every action that would make
/// or start something in such a VM out of the plan (removals stay: a VM gone from the file goes)
/// and says so in a note per VM the user stopped.
void HoldStopped(Plan& plan, const schema::Lab& lab, const state::Snapshot& snap, hv::Hypervisor& hv) {
  if (snap.stopped.empty()) return;
  std::set<std::string> held;  // the stopped VMs and every VM inside them
  for (const auto& m : lab.machines)
    if (snap.stopped.count(m.name) || held.count(m.parent)) held.insert(m.name);
  // The machine each resource lives in; a resource a shown plan would create has no spec, and
  // is placed by what it depends on (its partition, or its switch).
  std::map<std::string, std::string> machine_of;
  for (const auto& r : RecordedResources(snap)) machine_of[r.key] = MachineOf(r);
  for (const auto& a : plan.actions) {
    const Resource& r = a.resource;
    if (r.spec.is_object()) machine_of[r.key] = MachineOf(r);
    else if (r.kind == Kind::kPartition) machine_of[r.key] = r.key.substr(r.key.find('/') + 1);
    else if (!r.deps.empty() && machine_of.count(r.deps.front())) machine_of[r.key] = machine_of[r.deps.front()];
  }
  std::map<std::string, int> waiting;  // stopped VM -> its changes held with it
  std::vector<Action> kept;
  for (auto& a : plan.actions) {
    auto it = machine_of.find(a.resource.key);
    if (a.type == ActionType::kDelete || it == machine_of.end() || !held.count(it->second)) {
      kept.push_back(std::move(a));
      continue;
    }
    // Which stopped VM holds it: the outermost one on its way up.
    const schema::Machine* m = lab.FindMachine(it->second);
    std::string holder = it->second;
    while (m) {
      if (snap.stopped.count(m->name)) holder = m->name;
      m = m->parent.empty() ? nullptr : lab.FindMachine(m->parent);
    }
    // Found off (and what lives in it) is what stopped means; a new or changed spec is a change
    // that waits for the start.
    const bool changed = a.type == ActionType::kCreate || a.old.Hash() != a.resource.Hash();
    waiting[holder] += changed ? 1 : 0;
  }
  plan.actions = std::move(kept);
  // Whether a VM the user stopped really is off: a `lab stop` killed before it stopped the VM
  // leaves it marked and still running, and the note must not say "off" then.
  auto still_runs = [&](const std::string& name) {
    for (const auto& r : RecordedResources(snap))
      if (r.kind == Kind::kPartition && MachineOf(r) == name)
        return hv.PartitionRunning(r.spec.get<hv::PartitionSpec>(), snap.resources.at(r.key).facts);
    return false;
  };
  for (const auto& name : snap.stopped) {
    if (!lab.FindMachine(name)) continue;
    std::string note = still_runs(name)
                           ? "VM '" + name + "' still runs: a lab stop of it did not finish; " +
                                 ShellCommand({"lab", "stop", lab.name, name}) + " finishes it, " +
                                 ShellCommand({"lab", "start", lab.name, name}) + " keeps it running"
                           : "VM '" + name + "' is off (lab stop); " + ShellCommand({"lab", "start", lab.name, name}) +
                                 " to run it";
    if (int n = waiting[name]) note += " (" + std::to_string(n) + " change" + (n == 1 ? "" : "s") + " wait for it)";
    plan.notes.push_back(note);
  }
  plan.Count();
}

}  // namespace

Plan Engine::PlanFor(const schema::Lab& file_lab, const std::string& uid, const state::Snapshot& snap, hv::Hypervisor& hv,
                     const std::vector<state::JournalEntry>& interrupted, bool shown_only,
                     const MachineImages* images) {
  // The file as `lab move` placed its VMs; the file itself (not a copy of it) when nothing moved.
  std::optional<Placed> placed;
  if (!snap.placements.empty()) placed = ApplyPlacements(file_lab, snap.placements);
  const schema::Lab& lab = placed ? placed->lab : file_lab;
  PlanOptions options;
  options.profile = ProfileOf(lab);
  // Only recorded resources are compared by their specs; the others are created.
  NeedsSpec needs_spec;
  // Switches too once something is recorded: a switch under a new name may be a recorded one
  // renamed (plan.cc, FindRenames).
  if (shown_only)
    needs_spec = [&snap](const std::string& key) {
      return snap.resources.count(key) != 0 || (!snap.resources.empty() && key.rfind("switch/", 0) == 0);
    };
  // Only VMs whose settings change are asked whether they are saved (Save-VM).
  options.saved = [&snap, &hv](const std::string& key) {
    auto rec = snap.resources.find(key);
    if (rec == snap.resources.end()) return false;
    auto r = Resource::FromRecordJson(key, rec->second.spec);
    return r && r->kind == Kind::kPartition && hv.PartitionSaved(r->spec.get<hv::PartitionSpec>(), rec->second.facts);
  };
  Plan plan = ComputePlan(Desired(lab, uid, needs_spec, images), snap, Observe(hv, snap, interrupted), options);
  HoldStopped(plan, lab, snap, hv);
  // The lab's static rules (what validation does not already refuse), before the changes' own.
  hv::QemuHostFacts qemu;
  if (HasQemu(lab)) qemu = options_.qemu_host ? *options_.qemu_host : hv::ProbeQemuHost(options_.state_dir + "/qemu");
  RuleReport rules = CheckRules(lab, qemu);
  // Said once: how the qemu VMs this plan starts will run.
  for (const auto& a : plan.actions) {
    if (a.type == ActionType::kDelete || a.resource.kind != Kind::kPartition) continue;
    // A shown plan's new resources carry no spec: the lab file says which VMs are qemu VMs.
    const std::string name = a.resource.key.substr(a.resource.key.find('/') + 1);
    auto m = std::find_if(lab.machines.begin(), lab.machines.end(), [&](const auto& x) { return x.name == name; });
    if (m == lab.machines.end() || !m->IsQemu()) continue;
    plan.notes.push_back(qemu.accel == hv::model::Accelerator::kKvm
                             ? "qemu VMs run under KVM (" + qemu.why + ")"
                             : "qemu VMs run under QEMU's software emulation (TCG), slower than KVM: " + qemu.why);
    break;
  }
  plan.refusals.insert(plan.refusals.begin(), rules.errors.begin(), rules.errors.end());
  plan.notes.insert(plan.notes.begin(), rules.warnings.begin(), rules.warnings.end());
  if (placed) plan.notes.insert(plan.notes.begin(), placed->notes.begin(), placed->notes.end());
  return plan;
}

Result<MachineImages> Engine::MakeImages(const schema::Lab& lab, bool make, const ExecOptions& exec,
                                         std::vector<std::string>* notes) {
  MachineImages out;
  bool any = false;
  for (const auto& m : lab.machines) any = any || m.image != schema::kHostImage;
  if (!any) return out;  // a lab on the host's software never looks at the cache
  images::Cache cache(options_.state_dir);
  images::EnsureOptions o;
  o.make = make;
  o.refresh = exec.refresh_images;
  o.progress = exec.on_image;
  auto made = images::EnsureImages(lab, cache, o);
  if (!made) return made.status();
  for (const auto& [name, r] : *made) {
    MachineImage mi;
    mi.key = r.key;
    for (const auto& l : r.layers) mi.layers.push_back(l.string());
    out[name] = mi;
    if (!r.cached && notes)
      notes->push_back("image '" + name + "' is made first (" + (r.kind == "debian" || r.kind == "from" ? "build " : "import ") +
                       r.source + ")");
  }
  return out;
}

Result<Plan> Engine::PlanUp(const schema::Lab& lab) {
  auto snap = store_->Load(lab.name);
  if (!snap) return snap.status();
  std::string uid = snap->lab ? snap->lab->uid : NewUid();
  auto hv = MakeHypervisor(lab.name, uid);
  std::vector<std::string> image_notes;
  auto images = MakeImages(lab, /*make=*/false, {}, &image_notes);
  if (!images) return images.status();
  Plan plan = PlanFor(lab, uid, *snap, *hv, {}, /*shown_only=*/true, &*images);
  plan.notes.insert(plan.notes.begin(), image_notes.begin(), image_notes.end());
  if (snap->lab && !snap->resources.empty() && std::filesystem::path(snap->lab->file).is_absolute() &&
      !SameFile(snap->lab->file, AbsolutePath(lab.file)))
    plan.notes.insert(plan.notes.begin(), "lab '" + lab.name + "' is up from another file, " + snap->lab->file +
                                              "; lab up refuses this one unless --force");
  return plan;
}

/// The part of a plan acting on resources that live in `machines`.
static Plan Restrict(const Plan& plan, const std::set<std::string>& machines) {
  Plan out;
  out.notes = plan.notes;
  out.refusals = plan.refusals;
  for (const auto& a : plan.actions)
    if (machines.count(MachineOf(a.resource))) out.actions.push_back(a);
  out.Count();
  return out;
}

Result<ApplyResult> Engine::Up(const schema::Lab& lab, const std::function<void(const Plan&)>& on_plan,
                               const ExecOptions& exec, const std::set<std::string>* only, bool take_over) {
  auto lock = store_->Lock(lab.name);
  if (!lock) return lock.status();
  auto snap = store_->Load(lab.name);
  if (!snap) return snap.status();
  state::LabRecord rec = snap->lab.value_or(state::LabRecord{lab.name, NewUid(), "", 0, 0});
  const std::string file = AbsolutePath(lab.file);
  // One lab, one file (containerlab refuses to deploy over a running lab): another file naming
  // the same lab would remove what only that file has. A relative path recorded by an older
  // version names no file for sure, so it is not held against this one.
  if (!only && !take_over && snap->lab && !snap->resources.empty() && !rec.file.empty() &&
      std::filesystem::path(rec.file).is_absolute() && !SameFile(rec.file, file)) {
    std::error_code ec;
    const bool gone = !std::filesystem::exists(rec.file, ec);
    return Status::Error("lab '" + lab.name + "' is up from another file, " + rec.file +
                         (gone ? " (gone now: moved or deleted)" : "") + "; nothing was changed. Take it down first (" +
                         ShellCommand({"lab", "down", lab.name}) + "), give this file another 'lab:' name, or apply this file over it with lab up --force " +
                         "(what only the other file has is removed)");
  }
  if (!only) {
    rec.file = file;
    // The text as applied: the records, not the file, drive the verbs that follow.
    rec.source = ReadFile(file).value_or("");
  }
  auto hv = MakeHypervisor(lab.name, rec.uid);
  ApplyResult out;
  out.note = lock->takeover_note();
  // The images first (each under its own lock in the cache): the plan compares their keys.
  auto images = MakeImages(lab, /*make=*/!only, exec, nullptr);
  if (!images) return images.status();
  // Under the lock: actions still intended were begun by a process that died (killed mid-run).
  auto interrupted = store_->Intended(lab.name);
  const auto t_plan = std::chrono::steady_clock::now();
  out.plan = PlanFor(lab, rec.uid, *snap, *hv, interrupted, false, &*images);
  if (only) out.plan = Restrict(out.plan, *only);
  spdlog::debug("planned {} actions for lab '{}' in {:.1f} ms (records read, kernel observed, rules judged)",
                out.plan.actions.size(), lab.name,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_plan).count());
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
  // Which images the lab runs on: `lab image rm` refuses them, `lab image prune` keeps them.
  if (out.report.ok() && !only) {
    std::vector<state::ImageUse> uses;
    images::Cache cache(options_.state_dir);
    for (const auto& [name, mi] : *images) {
      if (mi.key.empty()) continue;
      uses.push_back(state::ImageUse{lab.name, mi.key, name, 0});
      cache.Touch(mi.key);
    }
    LAB_RETURN_IF_ERROR(store_->SetImageUses(lab.name, uses));
  }
  // A VM the user stopped that has left the lab is forgotten: one of that name added later is new.
  if (out.report.ok() && !only)
    for (const auto& name : snap->stopped)
      if (!lab.FindMachine(name)) LAB_RETURN_IF_ERROR(store_->SetStopped(lab.name, name, false));
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
                                    : HypervisorFactory([](const hv::LabContext& c) { return hv::MakeHypervisor(c); });
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

Result<RecordedLab> Engine::Recorded(const std::string& name) {
  auto rec = Find(name);
  if (!rec) return rec.status();
  RecordedLab out;
  out.record = *rec;
  const std::string& file = rec->file;
  auto text = ReadFile(file);
  std::optional<schema::LoadResult> from_file;
  if (!rec->source.empty()) {
    auto recorded = schema::Parse(rec->source, file);
    if (recorded.ok()) {
      out.lab = std::move(*recorded.lab);
      const std::string as_then = "; using the lab as its last 'lab up' recorded it";
      std::error_code ec;
      if (!std::filesystem::exists(file, ec))
        out.warnings.push_back("the lab file " + file + " is gone (moved or deleted)" + as_then +
                               " (lab up FILE from its new place records that)");
      else if (!text || *text != rec->source)
        out.warnings.push_back((from_file.emplace(schema::LoadFile(file)).ok()
                                    ? "the lab file " + file + " changed since its last 'lab up'"
                                    : "the lab file " + file + " no longer loads (" + ShellCommand({"lab", "validate", file}) + ")") +
                               as_then);
      return out;
    }
  }
  // Recorded before the text was kept, or a text this version no longer accepts: the file.
  if (!from_file) from_file = schema::LoadFile(file);
  if (!from_file->ok()) {
    std::string why = from_file->diagnostics.empty() ? "it does not load" : from_file->diagnostics.front().ToString();
    return Status::Error("lab '" + name + "': its file " + file + " no longer loads (" + why +
                         "), and its records hold no copy of it; fix the file or put it back, then run again");
  }
  out.lab = std::move(*from_file->lab);
  return out;
}

Result<RecordedLab> Engine::AsPlaced(const std::string& name) {
  auto recorded = Recorded(name);
  if (!recorded) return recorded.status();
  auto snap = store_->Load(name);
  if (!snap) return snap.status();
  if (snap->placements.empty()) return recorded;
  Placed placed = ApplyPlacements(recorded->lab, snap->placements);
  recorded->lab = std::move(placed.lab);
  for (auto& n : placed.notes) recorded->warnings.push_back(std::move(n));
  return recorded;
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
  hv::Seen seen;
  Observed found = ObserveDrift(*hv, *snap, {}, &seen);
  std::map<std::string, std::vector<std::string>> drift_of;  // machine -> its drift entries
  // VMs the user stopped, and the VMs inside them, are off as the user set them: not drift.
  std::set<std::string> held;
  for (const auto& r : resources)
    if (r.kind == Kind::kPartition)
      for (const auto& m : r.spec.value("lineage", std::vector<std::string>{}))
        if (snap->stopped.count(m)) held.insert(r.spec.value("name", std::string()));
  for (const auto& r : resources) {
    const std::string& facts = snap->resources.at(r.key).facts;
    std::string what = found.count(r.key) ? found.what(r.key) : "";
    if (found.count(r.key) && !held.count(MachineOf(r))) {
      st.drift.push_back(r.key + ": " + (what.empty() ? "not running" : what));
      // A network's stand-in is shown with its network.
      std::string owner = r.kind == Kind::kNetwork   ? "network/" + r.spec.value("name", std::string())
                          : r.kind == Kind::kStandIn ? "network/" + r.spec.value("network", std::string())
                                                     : MachineOf(r);
      drift_of[owner].push_back(st.drift.back());
    }
    // A machine whose links or addresses drifted still runs; one found dead or half made does not.
    // "not running", or "not running: " and why (a qemu VM's QEMU gone).
    bool alive = !found.count(r.key) || (what.rfind("not running", 0) != 0 && !IsPending(facts));
    if (r.kind == Kind::kPartition || r.kind == Kind::kNetwork) {
      MachineStatus m;
      m.name = r.spec.value("name", std::string());
      m.kind = r.kind == Kind::kNetwork ? "network" : (r.spec.value("is_host", false) ? "host" : "vm");
      auto lineage = r.spec.value("lineage", std::vector<std::string>{});
      m.parent = lineage.size() >= 2 ? lineage[lineage.size() - 2] : "";
      if (m.kind == "vm") m.driver = r.spec.value("driver", std::string(schema::kDriverPartition));
      m.state = !alive ? "off" : (r.kind == Kind::kPartition && hv->PartitionSaved(r.spec.get<hv::PartitionSpec>(), facts) ? "saved" : "running");
      auto facts_json = nlohmann::json::parse(facts, nullptr, false);
      // A pid of this machine: a partition's init, a qemu VM's QEMU. What lives inside a qemu VM
      // has pids of that guest, not of this machine: none shown.
      bool inside_guest = r.spec.contains("within") && !r.spec["within"].empty();
      if (!facts_json.is_discarded() && !inside_guest) {
        if (facts_json.contains("init")) m.pid = facts_json["init"].value("pid", 0);
        else if (facts_json.contains("qemu")) m.pid = facts_json["qemu"].value("pid", 0);
      }
      if (r.kind == Kind::kNetwork && r.spec.contains("gateway") && r.spec["gateway"].is_string()) {
        m.addresses.push_back("stand-in " + r.spec["gateway"].get<std::string>());
        if (auto subnet = Cidr::Parse(r.spec.value("subnet", std::string()))) m.network_prefix = subnet->prefix;
      }
      if (m.kind == "vm") m.checkpoints = hv->Checkpoints(r.spec.get<hv::PartitionSpec>());
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
      auto recorded = Recorded(lab);
      placed = recorded ? ApplyPlacements(recorded->lab, snap->placements).lab : schema::Lab{};
      if (recorded) st.warnings = recorded->warnings;
    }
    if (const schema::Machine* pm = placed->FindMachine(m.name)) m.parent = pm->parent;
  }
  std::error_code ec;
  if (!placed && !std::filesystem::exists(st.file, ec))
    st.warnings.push_back("the lab file " + st.file + " is gone (moved or deleted); the records still hold the lab");
  for (const auto& r : resources)
    if (r.kind == Kind::kSwitch && r.spec.value("embedded_teaming", false)) {
      auto sw = r.spec.get<hv::SwitchSpec>();
      if (auto team = hv->ObserveTeam(sw, TeamPorts(resources, sw))) {
        NameAsWritten(resources, sw.owner, &*team);
        st.teams.push_back(TeamStatus{sw.owner, sw.name, *team});
      }
    }
  auto machine = [&](const std::string& name) -> MachineStatus* {
    for (const char* k : {"host/", "vm/"})
      if (auto it = by_name.find(k + name); it != by_name.end()) return it->second;
    return nullptr;
  };
  // Addresses as found where the machine was looked into, marked where they differ from the
  // records; as recorded where it was not (off).
  auto ips = [](const std::vector<Cidr>& list) {
    std::vector<std::string> out;
    for (const auto& c : list) out.push_back(c.ToString());
    return out;
  };
  for (const auto& r : resources) {
    if (r.kind != Kind::kNic && r.kind != Kind::kAdapter && r.kind != Kind::kSwitch) continue;
    if (r.kind == Kind::kSwitch && !r.spec.value("management_port", false)) continue;
    MachineStatus* m = machine(MachineOf(r));
    if (!m) continue;
    auto ip = r.spec.value("ip", nlohmann::json());
    auto gw = r.spec.value("gateway", nlohmann::json());
    InterfaceStatus i;
    i.key = r.key;
    // The name as written: a NIC's or adapter's Hyper-V name (its alias) rather than its kernel name.
    const std::string alias = r.spec.value("alias", std::string());
    i.name = r.kind == Kind::kSwitch ? "vEthernet (" + r.spec.value("name", std::string()) + ")"
             : alias.empty()         ? r.spec.value("name", std::string())
                                     : alias;
    i.recorded = ip.is_string() ? ip.get<std::string>() : "";
    i.mac = r.spec.value("mac", std::string());
    i.switch_name = r.kind == Kind::kAdapter ? r.spec.value("switch_name", std::string())
                    : r.kind == Kind::kSwitch ? r.spec.value("name", std::string())
                                              : "";
    if (r.kind == Kind::kNic) i.network = r.spec.value("network", std::string());
    if (ip.is_string() && gw.is_string() &&
        std::find(m->gateways.begin(), m->gateways.end(), gw.get<std::string>()) == m->gateways.end())
      m->gateways.push_back(gw.get<std::string>());
    if (auto it = seen.interfaces.find(r.key); it != seen.interfaces.end()) {
      i.observed = true;
      i.up = it->second.up;
      i.addresses = ips(it->second.addresses);
      bool has = i.recorded.empty() || std::find(i.addresses.begin(), i.addresses.end(), i.recorded) != i.addresses.end();
      i.differs = !i.up || !has;
      std::string line = i.name + " " + (i.addresses.empty() ? std::string("(no address)") : Join(i.addresses, ", "));
      std::vector<std::string> marks;
      if (!has) marks.push_back("recorded " + i.recorded);
      if (!i.up) marks.push_back("link down");
      if (!marks.empty()) line += " (" + Join(marks, ", ") + ")";
      if (!i.addresses.empty() || !i.recorded.empty() || !marks.empty()) m->addresses.push_back(line);
    } else if (!i.recorded.empty()) {
      m->addresses.push_back(i.name + " " + i.recorded);
    }
    m->interfaces.push_back(std::move(i));
  }
  for (const auto& r : resources)
    if (r.kind == Kind::kDns)
      if (MachineStatus* m = machine(MachineOf(r)))
        m->dns = r.spec.value("servers", std::vector<std::string>{});
  for (auto& m : st.machines) {
    auto show = [](const std::vector<Ipv4>& list) {
      std::vector<std::string> out;
      for (const auto& g : list) out.push_back(g.ToString());
      return out;
    };
    if (auto it = seen.default_gateways.find(m.name); it != seen.default_gateways.end())
      m.default_routes = show(it->second);
    if (auto it = seen.dns_servers.find(m.name); it != seen.dns_servers.end()) m.dns_found = show(it->second);
    if (auto it = drift_of.find(m.kind == "network" ? "network/" + m.name : m.name); it != drift_of.end())
      m.drift = it->second;
  }
  return st;
}

namespace {

/// The recorded name of `machine`: itself, or the one that is the same ignoring case (Windows
/// compares names without case, so `lab exec LAB dc01` finds DC01; validation keeps them unique).
std::string RecordedName(const std::map<std::string, hv::PartitionSpec>& machines, const std::string& machine) {
  if (machines.count(machine)) return machine;
  for (const auto& [name, _] : machines)
    if (schema::FoldCase(name) == schema::FoldCase(machine)) return name;
  return machine;
}

}  // namespace

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

Result<std::string> Engine::Logs(const std::string& lab, const std::string& asked) {
  auto machines = RunningMachines(lab);
  if (!machines) return machines.status();
  const std::string machine = RecordedName(*machines, asked);
  if (!machines->count(machine)) {
    std::vector<std::string> names;
    for (const auto& [n, _] : *machines) names.push_back(n);
    return Status::Error("lab '" + lab + "' has no machine '" + machine + "' (it has: " + Join(names, ", ") + ")");
  }
  auto snap = store_->Load(lab);
  if (!snap) return snap.status();
  return MakeHypervisor(lab, snap->lab->uid)->RunLog(machine);
}

Result<int> Engine::Exec(const std::string& lab, const std::string& asked, const hv::ExecRequest& request) {
  auto machines = RunningMachines(lab);
  if (!machines) return machines.status();
  const std::string machine = RecordedName(*machines, asked);
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
    return Status::Error("VM '" + machine + "' is saved; resume it first: " + ShellCommand({"lab", "resume", lab, machine}));
  if (!hv->PartitionRunning(it->second, facts)) {
    if (it->second.is_host)
      return Status::Error("host '" + machine + "' is not running (drift); " + ShellCommand({"lab", "up", snap->lab->file}) +
                           " repairs it");
    // What to start first: the outermost VM on its way up that is off.
    for (const auto& up : it->second.lineage) {
      auto p = machines->find(up);
      if (up == machine || p == machines->end() || p->second.is_host) continue;
      if (!hv->PartitionRunning(p->second, snap->resources.at("partition/" + up).facts))
        return Status::Error("VM '" + machine + "' is off: '" + up + "', which it runs in, is off; start that first: " +
                             ShellCommand({"lab", "start", lab, up}));
    }
    return Status::Error("VM '" + machine + "' is off; start it first: " + ShellCommand({"lab", "start", lab, machine}));
  }
  return hv->Exec(it->second, request);
}

}  // namespace lab::engine
