// One guest taken through Hyper-V's lifecycle on QMP, each step timed, for
// bench/qemu-lifecycle.sh (through `lab __qemu-lifecycle`): booted once (its disk a blank qcow2
// with node name "disk"), then each round Save-VM to a file, Start-VM from it, Checkpoint-VM,
// Restore-VMCheckpoint and Move-VM to a second local QEMU, which carries the next round. A process
// started in the guest after boot must still run after every step, or the run is an error.
// Everything it starts is stopped, and its files removed, before it returns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/qemu/process.h"

namespace lab::hv::qemu {

struct LifecycleOptions {
  std::string state_dir;   // the guest kernel's cache lives under it
  std::string run_dir;     // a directory for this run's files (removed afterwards)
  std::string guest_init;  // the lab-guest-init binary
  Accel accel = Accel::kTcg;
  int memory_mib = 512;
  int rounds = 3;
  int nice = 10;
};

/// One round's figures, in milliseconds (wall time seen by lab unless said otherwise).
struct LifecycleRound {
  double save_ms = 0;               // SaveToFile: pause, state to the file, renamed into place
  uint64_t state_bytes = 0;         // the file's size
  double restore_running_ms = 0;    // StartQemu with the file as incoming until Resume sees "running"
  double restore_agent_ms = 0;      // ... until the guest's agent answers ping
  double checkpoint_ms = 0;         // snapshot-save job, memory included
  double checkpoint_restore_ms = 0; // snapshot-load job
  double migrate_ms = 0;            // MigrateTo: migrate-incoming + migrate until the destination runs
  int64_t migrate_total_ms = 0;     // QEMU's total-time
  int64_t downtime_ms = 0;          // QEMU's downtime
};

struct LifecycleResult {
  std::string kernel;  // the guest's release
  double boot_ms = 0;  // QEMU's start to the agent's first ping reply
  std::vector<LifecycleRound> rounds;
};

Result<LifecycleResult> MeasureLifecycle(const LifecycleOptions& options);

}  // namespace lab::hv::qemu
