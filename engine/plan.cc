#include "engine/plan.h"

#include <algorithm>
#include <functional>
#include <map>
#include <string_view>
#include <unordered_set>

#include "base/text.h"

namespace lab::engine {
namespace {

using nlohmann::json;

bool UpdatableInPlace(const Resource& before, const Resource& after) {
  switch (after.kind) {
    case Kind::kDns:
    case Kind::kNat:
    case Kind::kStandIn: return true;
    case Kind::kAdapter: {
      // Set-VMNetworkAdapter -MacAddressSpoofing changes a connected adapter; anything else remakes it.
      json a = before.spec, b = after.spec;
      a.erase("mac_address_spoofing");
      b.erase("mac_address_spoofing");
      return a == b && before.deps == after.deps;
    }
    default: return false;
  }
}

/// Kinds whose drifted settings the hypervisor puts back without remaking the object.
bool RepairableInPlace(Kind k) {
  return k == Kind::kNic || k == Kind::kAdapter || k == Kind::kSwitch || k == Kind::kDns;
}

/// What a repair in place does, as the plan says it.
std::string RepairHow(Kind k) {
  if (k == Kind::kDns) return "write resolv.conf again, in place (Set-DnsClientServerAddress)";
  return "put back in place: link up, address and default route set again (nothing is remade)";
}

/// "ip 10.0.0.2/24 -> 10.0.0.3/24, gateway (none) -> 10.0.0.1" from two spec objects.
std::string DescribeChange(const Resource& before, const Resource& after) {
  std::vector<std::string> parts;
  auto show = [](const json& v) {
    if (v.is_null()) return std::string("(none)");
    std::string s = v.is_string() ? v.get<std::string>() : v.dump();
    return s.size() > 40 ? s.substr(0, 37) + "..." : s;
  };
  for (const auto& [k, v] : after.spec.items()) {
    json old = before.spec.contains(k) ? before.spec[k] : json();
    if (old != v) parts.push_back(k + " " + show(old) + " -> " + show(v));
  }
  for (const auto& [k, v] : before.spec.items())
    if (!after.spec.contains(k)) parts.push_back(k + " removed");
  if (parts.empty() && before.deps != after.deps) parts.push_back("now depends on " + Join(after.deps, ", "));
  return Join(parts, ", ");
}

namespace model = hv::model;

/// How a changed VM is changed, as the rules model decides it.
struct VmChangeDecision {
  ActionType type = ActionType::kReplace;
  std::string reason;
  std::vector<std::string> refusals, notes;
};

/// The spec keys the rules model knows how to change on a VM (Set-VMProcessor, Set-VMMemory,
/// Update-VMVersion); a change to any other key remakes the VM.
bool OnlySettingsDiffer(const json& before, const json& after) {
  json a = before, b = after;
  for (const char* k : {"expose_virtualization_extensions", "dynamic_memory", "memory_bytes", "version"}) {
    a.erase(k);
    b.erase(k);
  }
  return a == b;
}

/// A hypervisor runs inside `vm`: it exposes its extensions and a recorded VM below it runs.
bool HypervisorRunsInside(const Resource& vm, const std::map<std::string, Resource>& old, const Observed& broken) {
  if (!vm.spec.value("expose_virtualization_extensions", false)) return false;
  const std::string name = vm.spec.value("name", std::string());
  for (const auto& [key, r] : old) {
    if (r.kind != Kind::kPartition || key == vm.key || broken.count(key)) continue;
    auto lineage = r.spec.value("lineage", std::vector<std::string>{});
    if (std::find(lineage.begin(), lineage.end(), name) != lineage.end()) return true;
  }
  return false;
}

VmChangeDecision DecideVmChange(const Resource& before, const Resource& after, const std::map<std::string, Resource>& old,
                                const Observed& broken, const PlanOptions& options) {
  const model::Profile profile = options.profile;
  VmChangeDecision d;
  model::VmFacts vm;
  vm.name = before.spec.value("name", std::string());
  const bool saved = options.saved && options.saved(before.key);
  vm.state = saved ? model::State::kSaved : model::State::kRunning;
  vm.expose_virtualization_extensions = before.spec.value("expose_virtualization_extensions", false);
  vm.dynamic_memory = before.spec.value("dynamic_memory", false);
  vm.version = before.spec.value("version", std::string("9.0"));
  vm.hypervisor_running = HypervisorRunsInside(before, old, broken);
  model::VmChange change;
  bool expose = after.spec.value("expose_virtualization_extensions", false);
  bool dynamic = after.spec.value("dynamic_memory", false);
  if (expose != vm.expose_virtualization_extensions) change.expose_virtualization_extensions = expose;
  if (dynamic != vm.dynamic_memory) change.dynamic_memory = dynamic;
  change.resize_memory = before.spec.value("memory_bytes", uint64_t{0}) != after.spec.value("memory_bytes", uint64_t{0});
  change.update_version = before.spec.value("version", std::string()) != after.spec.value("version", std::string());
  model::ChangePlan cp = model::PlanChange(vm, change, profile);
  for (const auto& v : cp.violations)
    (v.severity == model::Severity::kError ? d.refusals : d.notes).push_back(v.message + " [" + v.rule + "]");
  const std::string what = DescribeChange(before, after);
  bool restart = std::find(cp.steps.begin(), cp.steps.end(), model::Operation::kStop) != cp.steps.end();
  // A saved VM loses its saved state to the stop, and the plan says so (Hyper-V asks for
  // Remove-VMSavedState before a change that needs the VM off).
  const std::string unsaved = saved ? "; saved state removed: Remove-VMSavedState" : "";
  if (!OnlySettingsDiffer(before.spec, after.spec)) {
    d.reason = what + ": only while the VM is off: stop, set, start (its disk is kept)" + unsaved;
  } else if (restart) {
    d.reason = what + ": " + cp.reason + " (its disk is kept)" + unsaved;
  } else {
    d.type = ActionType::kUpdate;
    d.reason = what + ": in place, the VM keeps running (Set-VMMemory)";
  }
  return d;
}

}  // namespace

const char* Symbol(ActionType t) {
  switch (t) {
    case ActionType::kCreate: return "+";
    case ActionType::kUpdate: return "~";
    case ActionType::kReplace: return "-/+";
    case ActionType::kDelete: return "-";
  }
  return "?";
}

const char* ToString(ActionType t) {
  switch (t) {
    case ActionType::kCreate: return "create";
    case ActionType::kUpdate: return "update";
    case ActionType::kReplace: return "replace";
    case ActionType::kDelete: return "delete";
  }
  return "?";
}

std::string Plan::Summary() const {
  if (actions.empty()) return "No changes.";
  return "Plan: " + std::to_string(add) + " to add, " + std::to_string(change) + " to change, " +
         std::to_string(destroy) + " to destroy.";
}

std::string RenderPlanText(const Plan& plan) {
  std::string out;
  for (const auto& a : plan.actions) {
    std::string sym = Symbol(a.type);
    out += "  " + sym + " " + std::string(4 - sym.size(), ' ') + a.resource.display + "\n";
    if (a.type != ActionType::kCreate) out += "        " + a.reason + "\n";
  }
  for (const auto& n : plan.notes) out += "  note: " + n + "\n";
  for (const auto& r : plan.refusals) out += "  refused: " + r + "\n";
  return out + plan.Summary() + "\n";
}

std::vector<std::string> Restarts(const Plan& plan) {
  // Actions come parents first: a VM remade because its parent is remade is a restart only if
  // the parent's is (a VM inside one found off is off too).
  std::vector<std::string> out;
  std::set<std::string> restarted;
  const std::string kWith = "remade with ";
  for (const auto& a : plan.actions) {
    if (a.type != ActionType::kReplace || a.resource.kind != Kind::kPartition) continue;
    if (a.reason.find("not running") != std::string::npos) continue;
    if (a.reason.rfind(kWith, 0) == 0 &&
        !restarted.count(a.reason.substr(kWith.size(), a.reason.find(';') - kWith.size())))
      continue;
    restarted.insert(a.resource.key);
    out.push_back(a.resource.display + ": " + a.reason);
  }
  return out;
}

std::vector<Resource> RecordedResources(const state::Snapshot& recorded) {
  std::vector<Resource> out;
  for (const auto& [key, rec] : recorded.resources)
    if (auto r = Resource::FromRecordJson(key, rec.spec)) out.push_back(std::move(*r));
  return out;
}

Plan ComputePlan(std::vector<Resource> desired, const state::Snapshot& recorded, const Observed& broken,
                 const PlanOptions& options) {
  Plan plan;
  plan.actions.reserve(desired.size());
  std::map<std::string, Resource> old;
  for (auto& r : RecordedResources(recorded)) old.emplace(r.key, std::move(r));
  // Keys are held as views, not copies (20,000 strings for a 10,000-VM lab): into `desired`,
  // which is left as it is until every action is decided, and into `old`, whose nodes stay put.
  std::unordered_set<std::string_view> wanted;
  wanted.reserve(desired.size());
  for (const auto& r : desired) wanted.insert(r.key);

  // Resources being (re)made: anything whose dependency is (re)made must be remade with it,
  // because it lives inside it (a veth inside a partition, a table inside a namespace).
  std::unordered_set<std::string_view> remade;
  remade.reserve(desired.size());
  std::vector<size_t> from;  // the desired resource of each action, moved in once all are decided
  from.reserve(desired.size());
  for (size_t i = 0; i < desired.size(); ++i) {
    const Resource& r = desired[i];
    auto it = old.find(r.key);
    Action a;
    std::string_view remade_dep;
    for (const auto& d : r.deps)
      if (remade.count(d)) remade_dep = d;
    if (it == old.end()) {
      a.type = ActionType::kCreate;
      a.reason = "not made yet";
      remade.insert(r.key);
    } else {
      a.old = it->second;
      a.old_facts = recorded.resources.at(r.key).facts;
      if (!remade_dep.empty()) {
        a.type = ActionType::kReplace;
        a.reason = "remade with " + std::string(remade_dep);
        if (r.kind == Kind::kPartition && options.saved && options.saved(r.key))
          a.reason += "; saved state removed: Remove-VMSavedState";
        remade.insert(r.key);
      } else if (broken.count(r.key) && broken.in_place(r.key) && RepairableInPlace(r.kind) &&
                 it->second.Hash() == r.Hash()) {
        // The object is there with settings gone: put them back, keep it (and what uses it).
        a.type = ActionType::kUpdate;
        a.repair = true;
        a.reason = "drift: " + broken.what(r.key) + ": " + RepairHow(r.kind);
      } else if (broken.count(r.key)) {
        a.type = ActionType::kReplace;
        std::string what = broken.what(r.key);
        if (r.kind == Kind::kPartition && (what.empty() || what == "not running"))
          a.reason = "not running: start it (its disk is kept)";
        else if (r.kind == Kind::kPartition)
          a.reason = what + ": start it again (its disk is kept)";
        else if (what.rfind("interrupted", 0) == 0)
          a.reason = what + ": remake it";
        else
          a.reason = "drift: " + (what.empty() ? std::string("found not running") : what) + ": remake it";
        remade.insert(r.key);
      } else if (it->second.Hash() != r.Hash()) {
        a.reason = DescribeChange(it->second, r);
        if (r.kind == Kind::kPartition && !r.spec.value("is_host", false) && it->second.deps == r.deps) {
          VmChangeDecision d = DecideVmChange(it->second, r, old, broken, options);
          a.type = d.type;
          a.reason = d.reason;
          for (auto& x : d.refusals) plan.refusals.push_back(r.display + ": " + x);
          for (auto& x : d.notes) plan.notes.push_back(r.display + ": " + x);
          if (a.type == ActionType::kReplace) remade.insert(r.key);
        } else if (UpdatableInPlace(it->second, r)) {
          a.type = ActionType::kUpdate;
        } else {
          a.type = ActionType::kReplace;
          a.reason += r.kind == Kind::kPartition ? ": only while the VM is off: stop, set, start (its disk is kept)"
                                                 : " (needs remaking)";
          remade.insert(r.key);
        }
      } else {
        continue;  // up to date
      }
    }
    plan.actions.push_back(std::move(a));
    from.push_back(i);
  }
  // Deletes, dependents before what they live in: reverse of recorded dependency order.
  // Who depends on whom, once: a scan of every record per record was quadratic (1,000 records
  // of a flat 500 lab: a million scans in every no-op up).
  std::map<std::string_view, std::vector<std::string_view>> dependents;
  for (const auto& [k, r] : old)
    for (const auto& d : r.deps) dependents[d].push_back(k);
  std::vector<Action> deletes;
  std::unordered_set<std::string_view> seen;
  seen.reserve(old.size());
  std::function<void(std::string_view)> visit = [&](std::string_view key) {
    if (!seen.insert(key).second) return;
    if (auto it = dependents.find(key); it != dependents.end())
      for (auto k : it->second) visit(k);
    if (!wanted.count(key)) {
      const std::string k(key);
      Action a;
      a.type = ActionType::kDelete;
      a.resource = old.at(k);
      a.old = old.at(k);
      a.old_facts = recorded.resources.at(k).facts;
      a.reason = "not in the lab file";
      deletes.push_back(std::move(a));
    }
  };
  for (const auto& [k, r] : old) visit(k);
  // Every decision made: the desired resources move into their actions (views die here).
  for (size_t k = 0; k < from.size(); ++k) plan.actions[k].resource = std::move(desired[from[k]]);
  for (auto& d : deletes) plan.actions.push_back(std::move(d));

  for (const auto& a : plan.actions) {
    if (a.type == ActionType::kCreate) ++plan.add;
    if (a.type == ActionType::kUpdate) ++plan.change;
    if (a.type == ActionType::kReplace) ++plan.add, ++plan.destroy;
    if (a.type == ActionType::kDelete) ++plan.destroy;
  }
  return plan;
}

}  // namespace lab::engine
