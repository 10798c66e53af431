// One guest booted and timed, for bench/qemu-boot.sh (through `lab __qemu-boot`): the floor (the
// same QEMU, machine and kernel with an init that prints a marker and powers off at once) against
// lab's guest init answering the agent's ping. Everything it starts is stopped before it returns.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "hv/qemu/process.h"

namespace lab::hv::qemu {

struct BootOptions {
  std::string state_dir;   // the guest kernel's cache lives under it
  std::string run_dir;     // a directory for this boot's files (removed afterwards)
  std::string guest_init;  // the lab-guest-init binary
  bool floor = false;
  bool expose = true;
  Accel accel = Accel::kTcg;
  int nice = 10;
  int timeout_ms = 180000;
};

struct BootResult {
  std::string kernel;  // the guest's release
  double ready_ms = 0;  // from QEMU's start to the floor's marker on the console / the agent's ping reply
  std::vector<std::string> init_lines;  // what lab-guest-init printed on the console (with uptimes)
};

Result<BootResult> BootOnce(const BootOptions& options);

}  // namespace lab::hv::qemu
