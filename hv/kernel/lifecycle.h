// The lifecycle of one partition: Off → Running ↔ Saved, and checkpoints of its disk.
//
// - Stop (Stop-VM) ends every process of the partition (killing its init ends its whole PID
//   namespace, nested partitions' processes included), frees its namespace handles and cgroup,
//   and keeps disk_dir: the writable layer (disk_dir/upper) and the checkpoints. StartPartition
//   with the same PartitionConfig starts it again over the same upper.
// - Save (Save-VM) freezes the partition's cgroup, and with it every cgroup below (nested
//   partitions): its processes stay in memory but do not run. Its network answers nothing while
//   saved (an nftables table "lab_<uid>_saved" in the partition's network namespace drops every
//   IPv4, ARP and bridged frame in and out), as a saved VM's adapters do. Resume undoes both.
//   cgroup v1 uses the freezer controller (freezer.state), v2 cgroup.freeze / cgroup.events.
// - A checkpoint (Checkpoint-VM) is a copy of disk_dir/upper at disk_dir/checkpoints/NAME,
//   exact for an overlay upper: modes, ownership, timestamps, symlinks, hard links, devices,
//   fifos, and every extended attribute, so overlay whiteouts (0/0 character devices) and opaque
//   or redirected directories (trusted.overlay.*) survive. A running partition is frozen during
//   the copy (and thawed after, unless it was saved already). Restore (Restore-VMCheckpoint)
//   needs the partition stopped; it replaces upper with a copy of the checkpoint and clears
//   disk_dir/work. DestroyPartition removes disk_dir and so the checkpoints with it.
//
// Nested partitions: stop them (children first) before stopping their parent. A parent stopped
// first still ends their processes, but their namespace handles stay mounted (and keep their
// namespaces alive) until they are stopped or destroyed themselves; the engine orders this.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/kernel/partition.h"
#include "hv/spec.h"

namespace lab::hv::kernel {

/// Stop-VM: thaws the partition if saved, kills init (only when alive with the recorded start
/// time), unmounts the namespace handles, removes run_dir and the cgroup; disk_dir stays.
/// Parts already gone are success.
Status StopPartition(const PartitionConfig& config, const std::optional<ProcessId>& init);

/// Save-VM: silences the partition's network, then freezes its cgroup and waits until the
/// kernel reports it frozen. Saving a saved partition is success. On failure it is left running.
Status SavePartition(const PartitionConfig& config);
/// Resumes a saved partition: thaws its cgroup (and any cgroup below frozen on its own), then
/// lets its network answer again. Resuming a running partition is success.
Status ResumePartition(const PartitionConfig& config);
/// Whether the cgroup at `relative` is frozen (v1 freezer.state FROZEN, v2 cgroup.events frozen 1).
bool CgroupFrozen(const std::string& relative);
/// Freezes the cgroup at `relative` and everything below; waits until frozen (5 s at most, then
/// thaws it again and fails).
Status FreezeCgroup(const std::string& relative);
/// Thaws the cgroup at `relative`; cgroups below that were frozen on their own (a nested
/// partition saved by itself) stay frozen. Absent = success.
Status ThawCgroup(const std::string& relative);
/// Thaws the cgroup at `relative` and every cgroup below it, top-down: frozen processes cannot
/// die (v1), so this comes before killing a partition. Absent = success.
Status ThawCgroupTree(const std::string& relative);

/// A checkpoint name is 1 to kMaxCheckpointName bytes without control characters, neither "."
/// nor "..", no space at either end: spaces, '/', '(' and ':' are allowed, as in Hyper-V's default
/// names ("middle - (12/07/2026 - 07:05:31)"). On disk each byte outside [A-Za-z0-9_.-] is %XX
/// (so names of that set keep their directory). The error says so.
constexpr size_t kMaxCheckpointName = 80;
Status CheckCheckpointName(const std::string& name);
/// Checkpoint-VM -SnapshotName NAME. An existing checkpoint of that name is an error.
Status CreateCheckpoint(const PartitionConfig& config, const std::string& name);
/// Restore-VMCheckpoint: the partition must be stopped. An unknown name is an error listing the
/// partition's checkpoints.
Status RestoreCheckpoint(const PartitionConfig& config, const std::string& name);
/// Names of the partition's checkpoints, oldest first (none when it has no disk).
Result<std::vector<std::string>> ListCheckpoints(const PartitionConfig& config);
/// Get-VMSnapshot: the checkpoints, oldest first, with when each was taken and its size on disk.
Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionConfig& config);
/// Remove-VMSnapshot: deletes one checkpoint. An unknown name is an error listing the
/// partition's checkpoints.
Status RemoveCheckpoint(const PartitionConfig& config, const std::string& name);

/// Copies the tree at `from` to `to` (which must not exist) exactly, as a checkpoint does:
/// types, modes, ownership, timestamps, hard links and extended attributes. Never follows
/// symlinks nor crosses into another filesystem.
Status CopyLayer(const std::string& from, const std::string& to);

}  // namespace lab::hv::kernel
