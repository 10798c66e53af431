// The planner: desired resources + recorded state + observed liveness -> a plan.
//
// ComputePlan is pure and deterministic. A plan has two phases, run in this order:
//   deletes  (reverse dependency order): resources no longer in the file, and the old copies
//            of resources being replaced;
//   applies  (dependency order): creates, in-place updates, and the new copies of replaced ones.
// Each action says why it is there (a display-only reason, as terraform does).
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/resources.h"
#include "hv/model.h"
#include "state/store.h"

namespace lab::engine {

enum class ActionType {
  kCreate,   // "+"   not made yet
  kUpdate,   // "~"   changed, applied in place
  kReplace,  // "-/+" changed (or broken) in a way that needs remaking
  kDelete,   // "-"   no longer in the lab file
};
const char* Symbol(ActionType t);
const char* ToString(ActionType t);

/// One attribute that differs, named by its lab-file key ("ip", "memory.startup", "dns") with
/// values as the file writes them ("2GiB", "10.0.0.2/24"); "" = not set. The stand-in's DNS
/// records differ per name: key "record NAME".
struct Change {
  std::string key, from, to;
  bool operator==(const Change&) const = default;
};

struct Action {
  ActionType type = ActionType::kCreate;
  Resource resource;            // desired (create/update/replace) or recorded (delete)
  Resource old;                 // recorded (update/replace/delete)
  std::string old_facts;        // recorded facts (update/replace/delete)
  std::string reason;
  /// An update that puts back in place what drifted (a link set down, an address, the default
  /// route, resolv.conf): the object is kept, its settings are applied again (Repair*).
  bool repair = false;
  /// The reason without the changes it starts with: how they are made ("in place, ...";
  /// "... can only change while the VM is off: stop, set, start"). "" where the reason says more.
  std::string how;
  /// What differs from the record (update/replace), even where the action is there because
  /// of something else (a remake with its VM).
  std::vector<Change> changes;
  /// A VM's replace that is Stop-VM then Start-VM on the same disk (Restart-VM): a setting
  /// that needs it off, or a VM found not running (then only started: `running` false).
  bool restart = false;
  bool running = false;
  /// The key of the restarted VM whose stop and start carry this replace (the objects living in
  /// it and the VMs inside it): shown and counted with that VM, not on its own. "" = its own.
  std::string within;
};

struct Plan {
  std::vector<Action> actions;  // display order: dependency order, deletes last
  /// Restarts count the restarted VMs (with everything inside them), not what they hold.
  int add = 0, change = 0, restart = 0, destroy = 0;
  /// Changes the rules refuse on the VM as it runs now ("VM 'middle': ... [rule]"): a plan with
  /// any is not applied at all.
  std::vector<std::string> refusals;
  /// How the lab will behave where the rules allow it with a consequence (the model's warnings).
  std::vector<std::string> notes;
  /// What the plan loses for good ("VM 'x' will be deleted with its disk (Remove-VM; ...)").
  std::vector<std::string> warnings;
  bool empty() const { return actions.empty(); }
  /// "Plan: A to add, C to change, [R to restart, ]D to destroy." or "No changes."
  std::string Summary() const;
  /// Counts add/change/restart/destroy from the actions.
  void Count();
};

/// Recorded resources whose objects were observed dead, missing or different from their record
/// (drift), or whose last action was interrupted: key -> what was found ("veth 'Ethernet' of
/// 'nested1' is missing"). The planner remakes each of them, saying why.
class Observed {
 public:
  Observed() = default;
  /// Keys found broken, with no further detail (tests, liveness).
  Observed(std::initializer_list<std::string> keys) {
    for (const auto& k : keys) found_[k];
  }
  /// `in_place`: the object is there with only settings gone (hv::Finding::in_place); a key
  /// also found broken otherwise is remade.
  void insert(const std::string& key, const std::string& what = "", bool in_place = false) {
    bool fresh = !found_.count(key);
    auto& w = found_[key];
    if (w.empty()) w = what;
    if (in_place && fresh) in_place_.insert(key);
    if (!in_place) in_place_.erase(key);
  }
  size_t count(const std::string& key) const { return found_.count(key); }
  /// Found with only settings to put back: repaired in place, not remade.
  bool in_place(const std::string& key) const { return in_place_.count(key) != 0; }
  bool empty() const { return found_.empty(); }
  /// What was found about `key` ("" when nothing is known beyond its being broken).
  std::string what(const std::string& key) const {
    auto it = found_.find(key);
    return it == found_.end() ? "" : it->second;
  }
  const std::map<std::string, std::string>& all() const { return found_; }

 private:
  std::map<std::string, std::string> found_;
  std::set<std::string> in_place_;
};

struct PlanOptions {
  hv::model::Profile profile = hv::model::Profile::kV8;  // the lab file's compatibility
  /// Whether the recorded VM with this partition key is saved (Save-VM); asked only of VMs
  /// whose settings change. None: every VM runs.
  std::function<bool(const std::string& key)> saved;
};

/// A changed VM setting is planned as the rules model says (hv::model::PlanChange): in place
/// where the running VM allows it (memory resize without a hypervisor inside), else stop, set,
/// start with the reason, or a refusal when the rules forbid the change.
Plan ComputePlan(std::vector<Resource> desired, const state::Snapshot& recorded, const Observed& broken,
                 const PlanOptions& options = {});

/// The plan as `lab plan` shows it without colors: one "  SYM  DISPLAY" line per action, its
/// reason on an indented line below (every action but a create); a restarted VM is one line
/// ("-/+  restart VM 'middle' (on hv1) (and 2 VMs inside): stop, memory.startup 2GiB -> 3GiB,
/// start") with the changes of what it holds below it. Then warnings, notes and refusals
/// ("  ! ...", "  note: ...", "  refused: ..."), then the summary line.
std::string RenderPlanText(const Plan& plan);

/// How an action is shown, for the renderers (text, colors, JSON).
struct ActionView {
  bool shown = true;            // false: folded into the restart of the VM it is within
  std::string symbol;           // "+", "~", "-/+", "-"
  std::string kind;             // create | update | replace | restart | delete
  std::string head;             // the action line after the symbol
  std::string why;              // the indented line below it ("" = none)
  std::vector<std::string> details;  // further indented lines (records, what a restart holds)
};
std::vector<ActionView> ViewPlan(const Plan& plan);
/// "ip 10.0.0.2/24 -> 10.0.0.3/24"; a record: "+ mon-vm 10.88.4.31", "~ app-vm A -> B", "- old A".
std::string FormatChange(const Change& c);

/// The running VMs the plan would stop and start again to change a setting (not those found
/// off, which it merely starts): what `lab up --no-restart` refuses. "VM 'middle' (on hv1): why".
std::vector<std::string> Restarts(const Plan& plan);

/// The recorded resources, parsed; unparseable records are skipped.
std::vector<Resource> RecordedResources(const state::Snapshot& recorded);

}  // namespace lab::engine
