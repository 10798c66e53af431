// Drift: what the kernel holds compared with what the lab's records say.
//
// The records are turned into one hv::ObserveRequest, so the hypervisor can observe the whole lab
// in bulk (one dump per namespace, one listing per table); what it finds is added to what the
// records themselves give away: a resource recorded as pending (its maker was killed while making
// it) and a resource whose last journaled action never finished (interrupted). The planner
// remakes everything found missing or dead, and puts back in place what is there with only its
// settings gone (engine/plan.h, Observed); `lab status` lists it.
#pragma once

#include <vector>

#include "engine/plan.h"
#include "hv/hypervisor.h"
#include "state/store.h"

namespace lab::engine {

/// The recorded resources of `snap` as the hypervisor is asked about them.
hv::ObserveRequest ObserveRequestFor(const state::Snapshot& snap);

/// Everything recorded that is not as recorded. `interrupted`: the lab's journal entries left
/// intended by a process that ended (state::Store::Intended, read under the lab's lock).
/// `seen`, when given, receives what the hypervisor found besides (for `lab status`).
Observed ObserveDrift(hv::Hypervisor& hv, const state::Snapshot& snap,
                      const std::vector<state::JournalEntry>& interrupted = {}, hv::Seen* seen = nullptr);

}  // namespace lab::engine
