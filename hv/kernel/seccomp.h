// Kernel enforcement of Set-VMProcessor -ExposeVirtualizationExtensions.
//
// A VM without VT-x cannot run a hypervisor. Our VMs are partitions, and a hypervisor inside one
// is lab making namespaces, so a partition whose virtualization extensions are not exposed runs
// under a seccomp filter that refuses to create or join namespaces:
//   unshare, setns                      -> EPERM
//   clone with any CLONE_NEW* flag       -> EPERM (the flags are clone's first argument)
//   clone3                               -> ENOSYS (its flags are behind a pointer seccomp cannot
//                                           read; ENOSYS makes glibc fall back to clone)
// Everything else is allowed: fork, threads, raw sockets, exec.
//
// Every partition (hosts and networks too) is also confined as a VM's administrator is: see
// Confinement below and docs/hardening.md.
//
// The filter is applied by every process that becomes part of such a partition: its init chain
// before lab-init, every process that enters it (exec, spawn, functions run inside), and the
// worker that creates a child partition of it, which runs under the parent's rules and so fails
// to unshare. Filters are inherited across fork and exec and can never be removed, so whatever
// runs inside (and below) stays under them. Hosts (physical machines) are never filtered.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace lab::hv::kernel {

/// The compiled "no namespaces" filter (classic BPF, built once with libseccomp).
class NoNestingFilter {
 public:
  /// The filter for this machine's architecture; built on first use, then shared.
  static Result<const NoNestingFilter*> Get();

  /// Installs the filter on the calling thread. Async-signal-safe (for a child between fork and
  /// exec): only syscalls on the prepared program. False with errno set on failure.
  bool ChildApply() const;

 private:
  std::vector<sock_filter> code_;
};

/// What every process of a partition is held to, so that a partition is no way out of the lab
/// (docs/hardening.md):
///  - capabilities: only what a VM's administrator needs inside its own kernel objects
///    (kVmAdminCaps: network administration of its own namespace, raw sockets, low ports, users
///    and files), plus CAP_SYS_ADMIN where it may nest (a host, a network, a VM whose
///    virtualization extensions are exposed: its hypervisor mounts, unshares and enters
///    namespaces). Dropped from the bounding set too, so nothing it executes gets them back.
///  - a seccomp deny list in the spirit of container runtimes' defaults (EPERM): kernel modules,
///    the clock, reboot and kexec, raw port I/O, open_by_handle_at, swap, accounting, the kernel
///    log, keyrings, bpf, perf events, userfaultfd; plus the NoNestingFilter rules where it may
///    not nest.
class Confinement {
 public:
  /// The confinement of a partition that may (`nesting`) or may not create namespaces; built on
  /// first use, then shared.
  static Result<const Confinement*> Get(bool nesting);

  /// Applies it to the calling process: drops the other capabilities from the bounding set,
  /// installs the seccomp filter (while CAP_SYS_ADMIN still spares no_new_privs), then limits
  /// the effective, permitted and inheritable sets and clears the ambient set. Async-signal-safe
  /// (for a child between fork and exec). False with errno set on failure.
  bool ChildApply() const;

  /// The capabilities kept (bit N = capability N).
  uint64_t kept_capabilities() const { return keep_; }

 private:
  std::vector<sock_filter> code_;
  uint64_t keep_ = 0;
  int last_cap_ = 0;
};

/// The capabilities of a VM's administrator (a partition that may not nest).
uint64_t VmAdminCapabilities();
/// The syscalls every partition is refused (the names libseccomp knows them by).
const std::vector<const char*>& DeniedSyscalls();

/// The confinement an entry into the partition at `run_dir` applies (by its nesting record).
Result<const Confinement*> EntryConfinement(const std::string& run_dir);

/// Name of the file in a partition's run dir that records whether it may create namespaces
/// ("1") or not ("0"); written at start, read by the paths that enter the partition.
inline constexpr const char* kNestingFile = "nesting";

/// Whether the partition at `run_dir` may create namespaces (its virtualization extensions are
/// exposed, or it is a host or network). A partition without the record (made before it existed)
/// counts as allowed.
bool PartitionAllowsNesting(const std::string& run_dir);

/// The filter an entry into the partition at `run_dir` must apply: nullptr when the partition
/// allows nesting, else the shared filter (or the error building it).
Result<const NoNestingFilter*> EntryFilter(const std::string& run_dir);

/// True when this machine cannot create namespaces because it runs under the filter above: a
/// forked child's unshare(CLONE_NEWNET) fails with EPERM although we are root. Used by `lab up`
/// inside a VM to fail before touching anything. False when not root (that is another error).
bool NestingBlocked();

/// Why a VM cannot run nested VMs, with the fix.
std::string NotExposedMessage(const std::string& vm);

}  // namespace lab::hv::kernel
