// The executor: runs a plan against a hypervisor and records every step in the state store.
//
// It runs ready actions in parallel (`jobs`), journals each one (intended -> done | failed),
// and commits the resource record in the same transaction that marks the action done, so after
// a crash the records say exactly what exists. A failed action stops the scheduling of every
// action that waits on it; independent actions go on. Teardown (deletes, and the old half of
// replacements) runs first in reverse dependency order; if any of it fails, nothing is applied.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/plan.h"
#include "hv/hypervisor.h"
#include "state/store.h"

namespace lab::engine {

struct StepEvent {
  const Action* action = nullptr;
  bool teardown = false;        // the delete half (delete, or the old copy of a replacement)
  Status status;
  bool skipped = false;         // not run because something it waits on failed
  double millis = 0;
};

struct ExecOptions {
  int jobs = 2;
  std::function<void(const StepEvent&)> on_step;  // called from worker threads, serialized
  /// Fault injection for tests: the action on this resource key fails (after its journal
  /// entry is written) as if the kernel had refused it. Empty = none.
  std::string fail_key;
};

struct ExecReport {
  int done = 0;
  int failed = 0;
  int skipped = 0;
  std::vector<std::string> errors;  // "KEY: message"
  bool ok() const { return failed == 0 && skipped == 0; }
};

ExecReport Execute(const Plan& plan, const std::string& lab, hv::Hypervisor& hv, state::Store& store,
                   const ExecOptions& options);

/// The hv call that makes / removes / updates one resource (exposed for tests).
Result<std::string> ApplyResource(hv::Hypervisor& hv, const Resource& r);
Status RemoveResource(hv::Hypervisor& hv, const Resource& r, const std::string& facts);
Result<std::string> UpdateResource(hv::Hypervisor& hv, const Resource& r, const Resource& old,
                                   const std::string& old_facts);
/// Whether a recorded resource is still there (false = drift; true for kinds not observed).
bool ResourceAlive(hv::Hypervisor& hv, const Resource& r, const std::string& facts);

}  // namespace lab::engine
