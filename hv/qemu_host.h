// What this machine offers qemu VMs, as the rules model needs it at `lab validate` and
// `lab plan` time: the accelerator QEMU will get (KVM or TCG), the real processor KVM would pass
// through, and the processor count. Nothing here boots QEMU.
//
// Why a cached verdict: a /dev/kvm that opens proves little (a paravirtual KVM opens and hangs
// standard guests), so the accelerator is the doctor's own /dev/kvm probe (kernel::ProbeKvm,
// judged by qemu::JudgeAccel exactly as `lab doctor` and the qemu driver judge it). That probe
// costs milliseconds where KVM works but up to its timeouts (seconds) where KVM hangs, so its
// verdict is kept in a small file (STATE/qemu/qemu-accel: the run directory is lab's tmpfs, released
// when no lab is up) keyed by the boot
// (/proc/sys/kernel/random/boot_id): only the first command after a boot pays. Where there is no
// /dev/kvm, or this user cannot open it, the answer is TCG at once, without a probe (a cached
// verdict of an earlier root run wins over the latter: `lab validate` without privileges then
// judges as `lab up` will).
#pragma once

#include <string>

#include "hv/model.h"

namespace lab::hv {

struct QemuHostFacts {
  model::Accelerator accel = model::Accelerator::kTcg;
  model::ProcessorVendor cpu = model::ProcessorVendor::kNone;  // /proc/cpuinfo's vendor_id
  int cpus = 0;                                                // online processors; 0 = unknown
  std::string why;                                             // how the accelerator was decided
};

/// "intel" -> kIntel, "amd" -> kAmd, "" -> kNone, anything else kOther.
model::ProcessorVendor VendorFromName(const std::string& vendor);

/// The facts of this machine (see above). `run_dir` (STATE/qemu) holds the cached verdict ("" = no cache).
/// Never fails: what cannot be read is TCG / kNone / 0.
QemuHostFacts ProbeQemuHost(const std::string& run_dir);

}  // namespace lab::hv
