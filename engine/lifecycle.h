// The lifecycle of one machine of a running lab: Stop-VM, Start-VM, Save-VM, Checkpoint-VM,
// Restore-VMCheckpoint, as `lab stop|start|save|resume|checkpoint|restore LAB MACHINE`.
//
// Every operation is first checked against the rules model (hv/model.h) in the lab's
// compatibility profile, so a refusal names the rule and the Hyper-V setting before anything
// changes. A machine is stopped together with the VMs inside it (they run in its partition),
// deepest first; starting one goes through the planner, restricted to that machine and what
// lives in it, so its adapters, switches, NAT and DNS are made again around its kept disk.
//
// Move-VM (`lab move LAB VM --to HOST`) records the VM's new host (engine/placement.h). The
// model decides first: a running VM with a hypervisor running inside (or, under preview-10565,
// with nesting on) cannot be live-migrated. A running VM is then moved as a quick migration:
// stopped on its host, started on the new one around its disk, its adapters re-plumbed onto
// the destination's switches of the same names. An off VM only changes host and stays off; a
// saved VM is refused (resume or stop it first: its frozen processes cannot change host).
//
// A VM that starts or arrives (start, restore, a running move) announces itself on its switch
// as Hyper-V does after a migration (hv::Hypervisor::AnnounceAdapter: its MAC flushed from the
// bridges of the switch it left and the one it is on, a gratuitous ARP from each adapter), so
// the hosts that knew it reach it at once, not when the bridges forget its MAC (300 s).
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"

namespace lab::engine {

enum class LifecycleOp { kStop, kStart, kSave, kResume, kCheckpoint, kRestore, kMove };
const char* ToString(LifecycleOp op);

struct LifecycleRequest {
  LifecycleOp op = LifecycleOp::kStop;
  std::string lab;
  std::string machine;
  std::string checkpoint;  // checkpoint / restore
  std::string to;          // move: the destination host
};

struct LifecycleReport {
  std::vector<std::string> lines;  // what was done, and the model's warnings and effects
  std::vector<std::string> warnings;  // the lab file moved, changed or no longer parses
  bool applied = false;            // start/restore went through the planner
  ApplyResult apply;
};

/// Runs one verb on one VM of a running lab, from the lab's records (Engine::Recorded): the
/// file may have moved or changed. Every precondition is checked before anything changes (the
/// machine, its state, what it runs inside, the checkpoint), and a refusal names the command to
/// run first. Each change is journaled; a run that fails part way is continued by the next.
/// Stop records that the user stopped the VM (it stays off on `lab up` and when its parent
/// starts again, until `lab start`). A checkpoint covers the VMs inside the VM (their disks live
/// in its disk on Hyper-V), and restore puts them back with it.
Result<LifecycleReport> RunLifecycle(Engine& engine, const LifecycleRequest& request, const ExecOptions& exec);

/// Get-VMSnapshot -VMName MACHINE: the VM's checkpoints, oldest first, from the lab's records.
Result<std::vector<hv::CheckpointInfo>> ListCheckpoints(Engine& engine, const std::string& lab,
                                                        const std::string& machine);
/// Remove-VMSnapshot: deletes checkpoint `name` of the VM, and of the VMs inside it that have a
/// checkpoint of that name (a checkpoint covers them), innermost first and journaled, so a run
/// cut short is finished by the next. An unknown name changes nothing and lists the VM's
/// checkpoints. Returns what was done, one line each.
Result<std::vector<std::string>> RemoveCheckpoint(Engine& engine, const std::string& lab, const std::string& machine,
                                                  const std::string& name);

/// The machine a resource belongs to (lives in), "" for lab-level ones (networks, stand-ins).
std::string MachineOf(const Resource& r);

}  // namespace lab::engine
