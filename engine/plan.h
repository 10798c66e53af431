// The planner: desired resources + recorded state + observed liveness -> a plan.
//
// ComputePlan is pure and deterministic. A plan has two phases, run in this order:
//   deletes  (reverse dependency order): resources no longer in the file, and the old copies
//            of resources being replaced;
//   applies  (dependency order): creates, in-place updates, and the new copies of replaced ones.
// Each action says why it is there (a display-only reason, as terraform does).
#pragma once

#include <set>
#include <string>
#include <vector>

#include "engine/resources.h"
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

struct Action {
  ActionType type = ActionType::kCreate;
  Resource resource;            // desired (create/update/replace) or recorded (delete)
  Resource old;                 // recorded (update/replace/delete)
  std::string old_facts;        // recorded facts (update/replace/delete)
  std::string reason;
};

struct Plan {
  std::vector<Action> actions;  // display order: dependency order, deletes last
  int add = 0, change = 0, destroy = 0;
  bool empty() const { return actions.empty(); }
  /// "Plan: A to add, C to change, D to destroy." or "No changes."
  std::string Summary() const;
};

/// Keys of recorded resources whose objects were observed dead or missing (drift).
using Observed = std::set<std::string>;

Plan ComputePlan(const std::vector<Resource>& desired, const state::Snapshot& recorded, const Observed& broken);

/// The plan as `lab plan` shows it without colors: one "  SYM  DISPLAY" line per action, its
/// reason on an indented line below (every action but a create), then the summary line.
std::string RenderPlanText(const Plan& plan);

/// The running VMs the plan would stop and start again to change a setting (not those found
/// off, which it merely starts): what `lab up --no-restart` refuses. "VM 'middle' (on hv1): why".
std::vector<std::string> Restarts(const Plan& plan);

/// The recorded resources, parsed; unparseable records are skipped.
std::vector<Resource> RecordedResources(const state::Snapshot& recorded);

}  // namespace lab::engine
