// The lifecycle of one machine of a running lab: Stop-VM, Start-VM, Save-VM, Checkpoint-VM,
// Restore-VMCheckpoint, as `lab stop|start|save|resume|checkpoint|restore LAB MACHINE`.
//
// Every operation is first checked against the rules model (hv/model.h) in the lab's
// compatibility profile, so a refusal names the rule and the Hyper-V setting before anything
// changes. A machine is stopped together with the VMs inside it (they run in its partition),
// deepest first; starting one goes through the planner, restricted to that machine and what
// lives in it, so its adapters, switches, NAT and DNS are made again around its kept disk.
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"

namespace lab::engine {

enum class LifecycleOp { kStop, kStart, kSave, kResume, kCheckpoint, kRestore };
const char* ToString(LifecycleOp op);

struct LifecycleRequest {
  LifecycleOp op = LifecycleOp::kStop;
  std::string lab;
  std::string machine;
  std::string checkpoint;  // checkpoint / restore
};

struct LifecycleReport {
  std::vector<std::string> lines;  // what was done, and the model's warnings and effects
  bool applied = false;            // start/restore went through the planner
  ApplyResult apply;
};

Result<LifecycleReport> RunLifecycle(Engine& engine, const LifecycleRequest& request, const ExecOptions& exec);

/// The machine a resource belongs to (lives in), "" for lab-level ones (networks, stand-ins).
std::string MachineOf(const Resource& r);

}  // namespace lab::engine
