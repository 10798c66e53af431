// What the qemu driver finds on this machine, for `lab doctor`: QEMU and its version, the
// accelerator it would use (KVM only where the doctor's /dev/kvm probe runs a standard guest, TCG
// otherwise), whether a guest's virtualization extensions can really be exposed, vhost-net and
// vhost-vsock, and the guest kernel (cached, or fetchable with apt). Every line is optional:
// partitions run without any of it.
#pragma once

#include <string>
#include <vector>

#include "hv/kernel/doctor.h"

namespace lab::hv::qemu {

/// The qemu driver's accelerator from the doctor's /dev/kvm line: "kvm" when it is usable for a
/// standard guest, else "tcg" (with why in the detail).
kernel::Capability JudgeAccel(const kernel::Capability& kvm);

/// Whether a qemu VM's virtualization extensions can be exposed with that accelerator: always
/// under TCG (AMD SVM with NPT, emulated); under KVM when the host's processor has vmx or svm and
/// its kvm module allows nesting (the doctor's "kvm nested" line).
kernel::Capability JudgeExposure(const kernel::Capability& accel, const kernel::Capability& kvm_nested,
                                 const std::string& cpuinfo);

/// The qemu driver's lines, judged from the doctor's `partition_caps` (its /dev/kvm and kvm nested
/// lines) and probed here: QEMU, vhost devices, the guest kernel cache under `state_dir`.
std::vector<kernel::Capability> Diagnose(const std::vector<kernel::Capability>& partition_caps,
                                         const std::string& state_dir);

/// The guest kernels' cache under a state directory.
std::string KernelCacheDir(const std::string& state_dir);

}  // namespace lab::hv::qemu
