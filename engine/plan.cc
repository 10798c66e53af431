#include "engine/plan.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "base/text.h"

namespace lab::engine {
namespace {

using nlohmann::json;

/// Lab-file keys of the spec fields, per kind: "" for what is derived from other keys or from
/// names (kernel names, marks, /etc/hosts), which is never shown. A field not listed is shown
/// by its own name.
const std::map<std::string, std::string>& FileKeys(Kind kind) {
  static const std::map<Kind, std::map<std::string, std::string>> kKeys = {
      {Kind::kPartition,
       {{"name", ""}, {"lineage", "parent"}, {"is_host", ""}, {"processor_count", "processor.count"},
        {"memory_bytes", "memory.startup"}, {"dynamic_memory", "memory.dynamic"},
        {"expose_virtualization_extensions", "processor.expose_virtualization_extensions"},
        {"parent_exposes", "parent's processor.expose_virtualization_extensions"}, {"version", "version"},
        {"hosts_file", ""}, {"image", "image"}, {"image_key", "image changed"}, {"image_layers", ""},
        {"driver", "driver"}, {"within", ""}}},
      {Kind::kNic, {{"machine", ""}, {"name", ""}, {"port", ""}}},
      // within follows a driver: written on a VM above, which shows the change.
      {Kind::kSwitch,
       {{"owner", ""}, {"ifname", ""}, {"uplinks", "nics"}, {"management_port", "allow_management_os"},
        {"forwarding", ""}, {"within", ""}}},
      {Kind::kAdapter,
       {{"vm", ""}, {"name", ""}, {"owner", "parent"}, {"switch_name", "switch"}, {"switch_ifname", ""}, {"port", ""},
        {"within", ""}}},
      {Kind::kNat,
       {{"owner", ""}, {"name", "nat.name"}, {"prefix", "nat.prefix"}, {"table", ""}, {"dns_proxy", "nat.dns_proxy"},
        {"owner_lineage", ""}, {"within", ""}}},
      {Kind::kDns, {{"machine", ""}, {"servers", "dns"}, {"within", ""}}},
      {Kind::kNetwork, {{"name", ""}}},
      {Kind::kStandIn, {{"network", ""}, {"address", "gateway"}}},
      {Kind::kRun,
       {{"machine", ""}, {"lineage", ""}, {"is_host", ""}, {"commands", "run"}, {"timeout_ms", "run_timeout"},
        {"within", ""}}},
  };
  static const std::map<std::string, std::string> kNone;
  auto it = kKeys.find(kind);
  return it == kKeys.end() ? kNone : it->second;
}

/// A spec value as the lab file writes it: "" for none, lists joined, sizes in units.
std::string FileValue(Kind kind, const std::string& field, const json& v) {
  // A spec without a driver is a partition's (the field is written for qemu VMs only).
  if (kind == Kind::kPartition && field == "driver") return v.is_string() ? v.get<std::string>() : "partition";
  if (v.is_null()) return "";
  if (kind == Kind::kPartition && field == "memory_bytes") {
    uint64_t bytes = v.is_number_unsigned() ? v.get<uint64_t>() : 0;
    return bytes == 0 ? "" : FormatSize(bytes);
  }
  if (kind == Kind::kPartition && field == "image_key" && v.is_string()) return v.get<std::string>().substr(0, 12);
  if (kind == Kind::kRun && field == "timeout_ms" && v.is_number()) {
    int ms = v.get<int>();
    return ms % 1000 == 0 ? std::to_string(ms / 1000) + "s" : std::to_string(ms) + "ms";
  }
  if (kind == Kind::kPartition && field == "lineage") {
    auto chain = v.get<std::vector<std::string>>();
    return chain.size() < 2 ? "" : chain[chain.size() - 2];
  }
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_array()) {
    std::vector<std::string> items;
    for (const auto& x : v) items.push_back(x.is_string() ? x.get<std::string>() : x.dump());
    return Join(items, ", ");
  }
  return v.dump();
}

/// The last part of a key ("adapter/nested1/Ethernet" -> "Ethernet").
std::string LastPart(const std::string& key) { return key.substr(key.rfind('/') + 1); }

/// The stand-in's records that differ, one per name: "record NAME".
void RecordChanges(const json& before, const json& after, std::vector<Change>& out) {
  auto addresses = [](const json& records, const std::string& name) {
    if (!records.is_object() || !records.contains(name)) return std::string();
    return FileValue(Kind::kStandIn, "", records[name]);
  };
  std::set<std::string> names;
  for (const json* side : {&before, &after})
    if (side->is_object())
      for (const auto& [name, _] : side->items()) names.insert(name);
  for (const auto& name : names) {
    std::string from = addresses(before, name), to = addresses(after, name);
    if (from != to) out.push_back({"record " + name, from, to});
  }
}

/// What differs between a recorded resource and the desired one, by lab-file key. Nothing is
/// hidden: a difference only in derived fields is shown by their own names.
std::vector<Change> DescribeChanges(const Resource& before, const Resource& after) {
  std::vector<Change> out, derived;
  if (after.spec.is_null()) return out;
  const auto& keys = FileKeys(after.kind);
  auto look = [&](const std::string& field, const json& from, const json& to) {
    if (from == to) return;
    if (after.kind == Kind::kStandIn && field == "records") return RecordChanges(from, to, out);
    auto k = keys.find(field);
    std::string key = k == keys.end() ? field : k->second;
    if (after.kind == Kind::kPartition && field == "memory_bytes" && after.spec.value("dynamic_memory", false))
      key = "memory.maximum";
    Change c{key.empty() ? field : key, FileValue(after.kind, field, from), FileValue(after.kind, field, to)};
    (key.empty() ? derived : out).push_back(std::move(c));
  };
  for (const auto& [field, v] : after.spec.items()) look(field, before.spec.contains(field) ? before.spec[field] : json(), v);
  for (const auto& [field, v] : before.spec.items())
    if (!after.spec.contains(field)) look(field, v, json());
  // The order a reader expects (a name before an address before its gateway), records last.
  auto rank = [](const Change& c) {
    static const std::vector<std::string> kOrder = {"name", "type", "parent", "switch", "network", "ip", "gateway", "dns"};
    if (c.key.rfind("record ", 0) == 0) return kOrder.size() + 1;
    auto it = std::find(kOrder.begin(), kOrder.end(), c.key);
    return it == kOrder.end() ? kOrder.size() : static_cast<size_t>(it - kOrder.begin());
  };
  std::stable_sort(out.begin(), out.end(), [&](const Change& x, const Change& y) { return rank(x) < rank(y); });
  if (out.empty()) out = std::move(derived);
  if (out.empty() && before.deps != after.deps) {
    // What it depends on is named by its kind: "switch VmNAT -> NatSwitch", "parent hv1 -> hv2".
    for (size_t i = 0; i < std::max(before.deps.size(), after.deps.size()); ++i) {
      std::string from = i < before.deps.size() ? before.deps[i] : "", to = i < after.deps.size() ? after.deps[i] : "";
      if (from == to) continue;
      std::string kind = (from.empty() ? to : from).substr(0, (from.empty() ? to : from).find('/'));
      out.push_back({kind == "partition" ? "parent" : kind, from.empty() ? "" : LastPart(from), to.empty() ? "" : LastPart(to)});
    }
  }
  return out;
}

std::string FormatChanges(const std::vector<Change>& changes) {
  std::vector<std::string> parts;
  for (const auto& c : changes) parts.push_back(FormatChange(c));
  return Join(parts, ", ");
}

/// `after` differs from `before` only in `fields` (and in nothing else of its spec).
bool OnlyDiffer(const Resource& before, const Resource& after, std::initializer_list<const char*> fields) {
  json a = before.spec, b = after.spec;
  for (const char* f : fields) {
    a.erase(f);
    b.erase(f);
  }
  return a == b;
}

/// Whether a changed resource can change where it is, as Hyper-V changes it: addresses,
/// gateways, MAC address spoofing and names on the live object (no link goes down), DNS
/// settings, NAT rules and the stand-in's records rewritten. `renamed_from` maps a renamed
/// switch's new key to its recorded one: depending on it under its new name is no change.
bool UpdatableInPlace(const Resource& before, const Resource& after,
                      const std::map<std::string, std::string>& renamed_from) {
  std::vector<std::string> deps = after.deps;
  for (auto& d : deps)
    if (auto it = renamed_from.find(d); it != renamed_from.end()) d = it->second;
  const bool same_deps = deps == before.deps;
  switch (after.kind) {
    case Kind::kDns:
    case Kind::kNat:
    case Kind::kStandIn: return true;
    // Set-VMNetworkAdapter -MacAddressSpoofing, and the guest's own New-NetIPAddress: a connected
    // adapter keeps its link; a renamed switch keeps its ports.
    case Kind::kAdapter:
      return same_deps && OnlyDiffer(before, after, {"mac_address_spoofing", "ip", "gateway", "switch_name"});
    case Kind::kNic: return same_deps && OnlyDiffer(before, after, {"ip", "gateway"});
    // Rename-VMSwitch, and the address of its vEthernet (NAME).
    case Kind::kSwitch: return same_deps && OnlyDiffer(before, after, {"ip", "gateway", "name"});
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

/// The text after the changes in an in-place update: how Hyper-V does it, naming the cmdlets of
/// the changes made.
std::string InPlaceHow(Kind kind, const std::vector<Change>& changes) {
  std::vector<std::string> cmdlets;
  auto add = [&cmdlets](const char* c) {
    if (std::find(cmdlets.begin(), cmdlets.end(), c) == cmdlets.end()) cmdlets.push_back(c);
  };
  for (const auto& c : changes) {
    if (c.key == "mac_address_spoofing") add("Set-VMNetworkAdapter");
    if (c.key == "ip") add("New-NetIPAddress");
    if (c.key == "gateway" && kind != Kind::kStandIn) add("New-NetRoute");
    if (c.key == "name" || (c.key == "switch" && kind != Kind::kSwitch)) add("Rename-VMSwitch");
  }
  std::string named = cmdlets.empty() ? "" : " (" + Join(cmdlets, ", ") + ")";
  switch (kind) {
    case Kind::kAdapter: return "in place, the adapter stays connected" + named;
    case Kind::kNic: return "in place, the link stays up" + named;
    case Kind::kSwitch: return "in place, its ports stay connected" + named;
    case Kind::kDns: return "in place (Set-DnsClientServerAddress)";
    case Kind::kNat: return "in place (the NAT's rules are replaced at once)";
    case Kind::kStandIn: return "in place (its services restart)";
    default: return "in place";
  }
}

/// Recorded switches not in the file that are the same switch as one in the file under a new
/// name (same owner, type, uplinks; only the name, its kernel name and its address differ):
/// new key -> recorded key. A name with more than one such candidate is no rename.
std::map<std::string, std::string> FindRenames(const std::vector<Resource>& desired,
                                               const std::map<std::string, Resource>& old,
                                               const std::unordered_set<std::string_view>& wanted) {
  std::map<std::string, std::string> out;
  std::vector<const Resource*> gone;
  for (const auto& [k, r] : old)
    if (r.kind == Kind::kSwitch && !wanted.count(k)) gone.push_back(&r);
  if (gone.empty()) return out;
  std::set<std::string> taken;
  for (const auto& r : desired) {
    if (r.kind != Kind::kSwitch || old.count(r.key) || r.spec.is_null()) continue;
    const Resource* match = nullptr;
    int matches = 0;
    for (const Resource* g : gone)
      if (!taken.count(g->key) && g->deps == r.deps && OnlyDiffer(*g, r, {"name", "ifname", "ip", "gateway"}))
        match = g, ++matches;
    if (matches != 1) continue;
    taken.insert(match->key);
    out[r.key] = match->key;
  }
  return out;
}

/// A switch keeps the kernel name it was made with (a bridge that is up cannot be renamed), and
/// its adapters' ports stay on it: the desired specs take the recorded kernel names, unless one
/// is now the name of another interface of the owner.
void KeepKernelNames(std::vector<Resource>& desired, const std::map<std::string, Resource>& old,
                     const std::map<std::string, std::string>& renamed_from) {
  // Switches whose recorded bridge name is not the one the file gives them now; for nearly every
  // plan there are none, and the interface names below are never gathered.
  std::vector<std::pair<Resource*, std::string>> candidates;
  for (auto& r : desired) {
    if (r.kind != Kind::kSwitch || r.spec.is_null()) continue;
    auto from = renamed_from.find(r.key);
    auto it = old.find(from == renamed_from.end() ? r.key : from->second);
    if (it == old.end()) continue;
    std::string recorded = it->second.spec.value("ifname", std::string());
    if (!recorded.empty() && recorded != r.spec.value("ifname", std::string())) candidates.emplace_back(&r, recorded);
  }
  if (candidates.empty()) return;
  // (machine, interface name) of NICs and adapters, and of the bridges as the file names them.
  std::set<std::pair<std::string, std::string>> ifnames;
  for (const auto& r : desired) {
    if (r.kind == Kind::kNic || r.kind == Kind::kAdapter) {
      auto parts = Split(r.key, '/');
      if (parts.size() >= 3) ifnames.insert({parts[1], LastPart(r.key)});
    }
    if (r.kind == Kind::kSwitch && !r.spec.is_null())
      ifnames.insert({r.spec.value("owner", std::string()), r.spec.value("ifname", std::string())});
  }
  std::map<std::string, std::string> kept;  // switch key -> recorded ifname
  for (auto& [r, recorded] : candidates) {
    if (ifnames.count({r->spec.value("owner", std::string()), recorded})) continue;
    r->spec["ifname"] = recorded;
    kept[r->key] = recorded;
  }
  if (kept.empty()) return;
  for (auto& r : desired) {
    if (r.kind != Kind::kAdapter || r.spec.is_null()) continue;
    for (const auto& d : r.deps)
      if (auto k = kept.find(d); k != kept.end()) r.spec["switch_ifname"] = k->second;
  }
}

namespace model = hv::model;

/// How a changed VM is changed, as the rules model decides it.
struct VmChangeDecision {
  ActionType type = ActionType::kReplace;
  std::string how;  // how the change is made, after the changes: "in place, ..." / "...: stop, set, start"
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
  bool restart = std::find(cp.steps.begin(), cp.steps.end(), model::Operation::kStop) != cp.steps.end();
  // A saved VM loses its saved state to the stop, and the plan says so (Hyper-V asks for
  // Remove-VMSavedState before a change that needs the VM off).
  const std::string unsaved = saved ? "; saved state removed: Remove-VMSavedState" : "";
  if (before.spec.value("driver", std::string()) != after.spec.value("driver", std::string())) {
    // Another driver is another kind of VM (a partition of this kernel, or a QEMU guest).
    d.how = "remake with the new driver: stop, remove, make" + unsaved;
  } else if (before.spec.value("image_key", std::string()) != after.spec.value("image_key", std::string()) ||
      before.spec.value("image", std::string()) != after.spec.value("image", std::string())) {
    // Never a silent swap: the VM restarts on the new image, its own writable layer over it.
    d.how = "remake on the new image: stop, start (its disk is kept, over the new image)" + unsaved;
  } else if (!OnlySettingsDiffer(before.spec, after.spec)) {
    d.how = "only while the VM is off: stop, set, start (its disk is kept)" + unsaved;
  } else if (restart) {
    d.how = cp.reason + " (its disk is kept)" + unsaved;
  } else {
    d.type = ActionType::kUpdate;
    d.how = "in place, the VM keeps running (Set-VMMemory)";
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
         (restart ? std::to_string(restart) + " to restart, " : "") + std::to_string(destroy) + " to destroy.";
}

void Plan::Count() {
  add = change = restart = destroy = 0;
  std::set<std::string> roots;
  for (const auto& a : actions)
    if (a.restart && a.within.empty()) roots.insert(a.resource.key);
  for (const auto& a : actions) {
    if (!a.within.empty() && roots.count(a.within)) continue;  // stopped and started with its VM: counted there
    if (a.restart) ++restart;
    else if (a.type == ActionType::kCreate) ++add;
    else if (a.type == ActionType::kUpdate) ++change;
    else if (a.type == ActionType::kReplace) ++add, ++destroy;
    else if (a.type == ActionType::kDelete) ++destroy;
  }
}

std::string FormatChange(const Change& c) {
  auto shown = [](const std::string& v) { return v.empty() ? std::string("(none)") : v; };
  if (c.key.rfind("record ", 0) == 0) {
    std::string name = c.key.substr(7);
    if (c.from.empty()) return "+ " + name + " " + c.to;
    if (c.to.empty()) return "- " + name + " " + c.from;
    return "~ " + name + " " + c.from + " -> " + c.to;
  }
  return c.key + " " + shown(c.from) + " -> " + shown(c.to);
}

std::vector<ActionView> ViewPlan(const Plan& plan) {
  std::vector<ActionView> out(plan.actions.size());
  std::map<std::string, size_t> roots;  // restarted VM key -> its action
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    const Action& a = plan.actions[i];
    ActionView& v = out[i];
    v.symbol = Symbol(a.type);
    v.kind = a.restart && a.within.empty() ? "restart" : ToString(a.type);
    v.head = a.resource.display;
    if (a.type != ActionType::kCreate) v.why = a.reason;
    // Record changes each on a line of their own, below a reason that says only that they changed.
    std::vector<Change> inline_changes;
    for (const auto& c : a.changes)
      if (c.key.rfind("record ", 0) == 0) v.details.push_back(FormatChange(c));
      else inline_changes.push_back(c);
    if (!v.details.empty() && !a.how.empty())
      v.why = FormatChanges(inline_changes) + (inline_changes.empty() ? "" : ", ") + "its DNS records: " + a.how;
    if (a.restart && a.within.empty()) roots[a.resource.key] = i;
  }
  // A restarted VM: one line, with what it holds that changes below it.
  std::map<size_t, int> inside;  // root action -> VMs inside it
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    const Action& a = plan.actions[i];
    if (a.within.empty()) continue;
    auto root = roots.find(a.within);
    if (root == roots.end()) continue;
    out[i].shown = false;
    if (a.resource.kind == Kind::kPartition) ++inside[root->second];
    if (!a.changes.empty()) out[root->second].details.push_back(a.resource.display + ": " + FormatChanges(a.changes));
  }
  for (const auto& [key, i] : roots) {
    const Action& a = plan.actions[i];
    ActionView& v = out[i];
    std::string held;
    if (int n = inside[i]) held = " (and " + std::to_string(n) + (n == 1 ? " VM inside)" : " VMs inside)");
    std::string changed = a.changes.empty() ? "" : FormatChanges(a.changes) + ", ";
    v.head = (a.running ? "restart " : "start ") + a.resource.display + held + ": " +
             (a.running ? "stop, " : "") + changed + "start";
    if (!a.how.empty()) v.why = a.how;  // the changes are on the line above
  }
  return out;
}

std::string RenderPlanText(const Plan& plan) {
  std::string out;
  auto views = ViewPlan(plan);
  for (const auto& v : views) {
    if (!v.shown) continue;
    out += "  " + v.symbol + " " + std::string(4 - v.symbol.size(), ' ') + v.head + "\n";
    if (!v.why.empty()) out += "        " + v.why + "\n";
    for (const auto& d : v.details) out += "          " + d + "\n";
  }
  for (const auto& w : plan.warnings) out += "  ! " + w + "\n";
  for (const auto& n : plan.notes) out += "  note: " + n + "\n";
  for (const auto& r : plan.refusals) out += "  refused: " + r + "\n";
  return out + plan.Summary() + "\n";
}

std::vector<std::string> Restarts(const Plan& plan) {
  // A VM found off is started, which is not a restart; nor are the VMs inside it (off too).
  std::vector<std::string> out;
  for (const auto& a : plan.actions)
    if (a.restart && a.running && a.resource.kind == Kind::kPartition)
      out.push_back(a.resource.display + ": " + a.reason);
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
  // Switches renamed in the file are renamed in place, on the bridges they were made as.
  const std::map<std::string, std::string> renamed_from = FindRenames(desired, old, wanted);
  std::set<std::string> renamed_old;
  for (const auto& [to, from] : renamed_from) renamed_old.insert(from);
  KeepKernelNames(desired, old, renamed_from);
  std::unordered_map<std::string_view, std::string_view> display;
  display.reserve(desired.size());
  for (const auto& r : desired) display.emplace(r.key, r.display);

  // Resources being (re)made: anything whose dependency is (re)made must be remade with it,
  // because it lives inside it (a veth inside a partition, a table inside a namespace).
  std::unordered_set<std::string_view> remade;
  remade.reserve(desired.size());
  // Remade resources carried by a VM's restart -> that VM's key; and whether each such VM runs.
  std::unordered_map<std::string_view, std::string_view> carried_by;
  std::unordered_map<std::string_view, bool> root_running;
  std::vector<size_t> from;  // the desired resource of each action, moved in once all are decided
  from.reserve(desired.size());
  for (size_t i = 0; i < desired.size(); ++i) {
    const Resource& r = desired[i];
    auto renamed = renamed_from.find(r.key);
    auto it = old.find(renamed == renamed_from.end() ? r.key : renamed->second);
    Action a;
    // What it is remade with: preferably a restarting VM that carries it.
    std::string_view remade_dep;
    for (const auto& d : r.deps) {
      if (!remade.count(d)) continue;
      if (remade_dep.empty()) remade_dep = d;
      if (carried_by.count(d)) {
        remade_dep = d;
        break;
      }
    }
    auto restart_root = [&](bool running) {
      a.restart = true;
      a.running = running;
      carried_by[r.key] = r.key;
      root_running[r.key] = running;
    };
    if (it == old.end()) {
      a.type = ActionType::kCreate;
      a.reason = "not made yet";
      remade.insert(r.key);
    } else {
      a.old = it->second;
      a.old_facts = recorded.resources.at(it->first).facts;
      const bool changed = it->second.Hash() != r.Hash() && !r.spec.is_null();
      if (changed) a.changes = DescribeChanges(it->second, r);
      const bool is_vm = r.kind == Kind::kPartition;
      if (!remade_dep.empty()) {
        a.type = ActionType::kReplace;
        auto shown = display.find(remade_dep);
        const std::string with(shown == display.end() ? remade_dep : shown->second);
        a.reason = "remade with " + with;
        if (auto c = carried_by.find(remade_dep); c != carried_by.end()) {
          a.within = std::string(c->second);
          carried_by[r.key] = c->second;
          if (is_vm) {
            a.restart = true;
            a.running = root_running[c->second];
            a.reason = (a.running ? "stopped and started with " : "started with ") + with;
          }
        } else if (is_vm) {
          restart_root(true);
        }
        if (!a.changes.empty()) a.reason += "; " + FormatChanges(a.changes);
        if (is_vm && options.saved && options.saved(r.key)) a.reason += "; saved state removed: Remove-VMSavedState";
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
        if (is_vm && (what.empty() || what == "not running"))
          a.reason = "not running: start it (its disk is kept)";
        else if (is_vm)
          a.reason = what + ": start it again (its disk is kept)";
        else if (what.rfind("interrupted", 0) == 0)
          a.reason = what + ": remake it";
        else
          a.reason = "drift: " + (what.empty() ? std::string("found not running") : what) + ": remake it";
        if (is_vm) restart_root(false);
        remade.insert(r.key);
      } else if (changed) {
        const std::string what = FormatChanges(a.changes);
        if (is_vm && !r.spec.value("is_host", false) && it->second.deps == r.deps) {
          VmChangeDecision d = DecideVmChange(it->second, r, old, broken, options);
          a.type = d.type;
          a.how = d.how;
          a.reason = what + ": " + d.how;
          for (auto& x : d.refusals) plan.refusals.push_back(r.display + ": " + x);
          for (auto& x : d.notes) plan.notes.push_back(r.display + ": " + x);
          if (a.type == ActionType::kReplace) restart_root(true), remade.insert(r.key);
        } else if (UpdatableInPlace(it->second, r, renamed_from)) {
          a.type = ActionType::kUpdate;
          a.how = InPlaceHow(r.kind, a.changes);
          a.reason = what + ": " + a.how;
        } else {
          a.type = ActionType::kReplace;
          if (is_vm) a.how = "only while the VM is off: stop, set, start (its disk is kept)";
          a.reason = what + (is_vm ? ": " + a.how : " (needs remaking)");
          if (is_vm) restart_root(true);
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
    const std::string k(key);
    if (!wanted.count(key) && !renamed_old.count(k)) {
      Action a;
      a.type = ActionType::kDelete;
      a.resource = old.at(k);
      a.old = old.at(k);
      a.old_facts = recorded.resources.at(k).facts;
      a.reason = "not in the lab file";
      if (a.old.kind == Kind::kPartition && !a.old.spec.value("is_host", false))
        plan.warnings.push_back("VM '" + a.old.spec.value("name", k) +
                                "' will be deleted with its disk (Remove-VM; its differencing disk is lost)");
      deletes.push_back(std::move(a));
    }
  };
  for (const auto& [k, r] : old) visit(k);
  // Every decision made: the desired resources move into their actions (views die here).
  for (size_t k = 0; k < from.size(); ++k) plan.actions[k].resource = std::move(desired[from[k]]);
  for (auto& d : deletes) plan.actions.push_back(std::move(d));
  plan.Count();
  return plan;
}

}  // namespace lab::engine
