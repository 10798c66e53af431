// The executor: runs a plan against a hypervisor and records every step in the state store.
//
// It runs ready actions in parallel (`jobs`), journals each one (intended -> done | failed),
// and commits the resource record in the same transaction that marks the action done, so after
// a crash the records say exactly what exists. A failed action stops the scheduling of every
// action that waits on it; independent actions go on. Teardown (deletes, and the old half of
// replacements) runs first in reverse dependency order; if any of it fails, nothing is applied.
#pragma once

#include <atomic>
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
  /// Actions run at once when applying. Teardown runs up to four times as many (at most 16): it
  /// waits on the kernel rather than computing. 1 keeps both one at a time.
  int jobs = 2;
  std::function<void(const StepEvent&)> on_step;  // called from worker threads, serialized
  /// Fault injection for tests: the action on this resource key fails (after its journal
  /// entry is written) as if the kernel had refused it; "+KEY" fails only its make (the new
  /// half of a remake), not its removal. Empty = none.
  std::string fail_key;
  /// Fault injection for tests: the process SIGKILLs itself at kill point N (1-based), counted
  /// over the run: each action has two, right after its kernel call (made or removed but not
  /// yet recorded) and right after its record is committed (the boundary before the next
  /// action). 0 = none. `lab` reads it from LAB_KILL_AT.
  int kill_at = 0;
  /// Fault injection for tests: at kill point N the process stops itself (SIGSTOP) instead,
  /// holding whatever it holds (the lab's lock) until it is sent SIGCONT. 0 = none. `lab` reads
  /// it from LAB_PAUSE_AT.
  int pause_at = 0;
  /// Set from outside (a SIGINT or SIGTERM handler) to stop the run: no action starts once it is
  /// set; those running finish and are recorded, as usual. Null = never.
  const std::atomic<bool>* interrupt = nullptr;
  /// `lab up` makes the images its machines need before planning: a line per step ("image
  /// 'web': importing rootfs ./web.tar"). May be empty.
  std::function<void(const std::string& line)> on_image;
  /// Resolve Debian images' packages again (lab up --refresh-images) instead of their pins.
  bool refresh_images = false;
};

/// The facts recorded for a resource while it is being made (with BeginAction): the object may
/// exist in part, and nothing about it (pids) is known.
extern const char* const kPendingFacts;
bool IsPending(const std::string& facts);

struct ExecReport {
  int done = 0;
  int failed = 0;
  int skipped = 0;
  int not_run = 0;                  // not started because the run was interrupted
  int total = 0;                    // steps of the plan: a replacement is two (remove, make)
  std::vector<std::string> errors;  // "KEY: message"
  bool ok() const { return failed == 0 && skipped == 0 && not_run == 0; }
  bool interrupted() const { return not_run > 0; }
};

ExecReport Execute(const Plan& plan, const std::string& lab, hv::Hypervisor& hv, state::Store& store,
                   const ExecOptions& options);

/// The hv call that makes / removes / updates one resource (exposed for tests).
Result<std::string> ApplyResource(hv::Hypervisor& hv, const Resource& r);
Status RemoveResource(hv::Hypervisor& hv, const Resource& r, const std::string& facts);
Result<std::string> UpdateResource(hv::Hypervisor& hv, const Resource& r, const Resource& old,
                                   const std::string& old_facts);
/// The hv call that puts back in place what drifted on a made resource (Action::repair);
/// returns its facts (`facts`, unchanged, where the repair makes nothing new).
Result<std::string> RepairResource(hv::Hypervisor& hv, const Resource& r, const std::string& facts);
/// The partitions (keys) whose destruction removes everything a resource made (its links, ports,
/// filters, nft tables, files): when one plan deletes them all, the executor does not remove the
/// resource on its own but records it as removed once they are gone. Empty for partitions and
/// resources with processes of their own.
std::vector<std::string> HomesOf(const Resource& r);
/// Whether a recorded resource is still there (false = drift; true for kinds not observed).
bool ResourceAlive(hv::Hypervisor& hv, const Resource& r, const std::string& facts);

}  // namespace lab::engine
