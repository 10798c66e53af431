// The hypervisor of a lab with both drivers (DESIGN.md "Two drivers behind one API").
//
// Every call is routed by where its object lives. The specs say which qemu VMs an object lives
// inside (`within`, outermost first); this hypervisor runs inside the qemu VMs of its context
// (LabContext::inside: none on the real machine). What lives here is made here: partitions by
// the partition driver (hv/kernel), qemu VMs by starting QEMU (one process per VM, supervised by
// pid and start time; its files under RUN/<mark>/q/<vm>/). What lives inside a qemu VM of this
// level goes to that VM's agent (hv/agent/remote.h), whose own hypervisor is this one again, one
// level down: a qemu VM inside a qemu VM is started by the agent of the outer one.
//
// A qemu VM's adapter is two halves: a tap made here in the owner's network namespace (a port of
// the switch's bridge, with the same MAC filter as a partition's port), plugged into the running
// QEMU over QMP, and the guest's NIC with that MAC, named and addressed by the guest's agent.
//
// Inside a qemu VM, the VM itself is the machine whose namespaces are the guest's own (its
// namespace handles are links to pid 1's), so its switches, NAT, DNS settings and nested VMs are
// made by the partition driver exactly as on a host.
#pragma once

#include <memory>

#include "hv/hypervisor.h"

namespace lab::hv::qemu {

/// The accelerator qemu VMs get on this machine: "kvm" where the /dev/kvm probe runs a standard
/// guest, or, `in_lab_guest` (this is a qemu VM of a lab), where lab exposed the processor's
/// extensions to it (svm/vmx in its CPU and /dev/kvm there); "tcg" otherwise.
/// LAB_QEMU_ACCEL=kvm|tcg overrides. Decided once per process.
std::string ChosenAccel(bool in_lab_guest);

}  // namespace lab::hv::qemu
