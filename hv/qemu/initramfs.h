// The initramfs of a qemu VM: a gzip-compressed newc cpio with lab's guest init as /init, the
// kernel modules the guest needs (and everything they depend on: a Debian root has no modules of
// the guest's kernel), listed by the phase the init loads them in, and busybox's applets where the
// host has busybox-static.
//
// The Debian kernel package ships no modules.dep, so the dependency closure is computed from each
// module's own `.modinfo` section (its `depends=` line), indexed over the package's module tree.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "hv/qemu/kernel.h"

namespace lab::hv::qemu {

/// One member of a cpio archive.
struct CpioEntry {
  enum class Kind { kFile, kDirectory, kSymlink, kCharDevice };
  Kind kind = Kind::kFile;
  std::string path;    // inside the archive, without a leading '/': "init", "bin/busybox"
  std::string data;    // kFile: the contents; kSymlink: the target
  unsigned mode = 0644;  // permission bits
  unsigned major = 0, minor = 0;  // kCharDevice
};

/// Writes `entries` as a newc cpio, gzip-compressed, to `path` (written aside, then renamed).
Status WriteCpioGz(const std::vector<CpioEntry>& entries, const std::string& path);

/// The `depends=` modules (names as the kernel writes them, '-' as '_') of a module file's
/// `.modinfo` section; empty for a module without dependencies or a file that is not one.
std::vector<std::string> ModuleDepends(std::string_view ko);

/// The modules to load for `roots` from the tree `modules_dir` (lib/modules/<release>), each after
/// those it depends on: paths relative to `modules_dir`. A root the kernel has built in (listed in
/// modules.builtin) is left out; a root that is neither is an error naming it.
Result<std::vector<std::string>> ModuleClosure(const std::string& modules_dir, const std::vector<std::string>& roots);

/// When the guest init loads a module (ModuleRoot::phase):
///   "boot"  before anything else: what the agent's port needs (virtio transport and console);
///   "9p"    when `lab.root=9p`, before the root is mounted (9p over virtio, overlay);
///   "disk"  when `lab.root=disk`, before the root is mounted (virtio_blk, ext4);
///   "net"   in the background, first: virtio_net, which the VM's adapters need right after it is
///           ready (with an agent the background phases start once it has taken on the VM's
///           identity: the adapters are what the host plugs next);
///   "button" in the background then: the ACPI power button and its event device (Stop-VM is
///           heard as soon as can be);
///   "late"  in the background then: networking, what lab's partition driver needs inside
///           (bridge, veth, nftables with NAT and the bridge family, overlay), QEMU's needs (tun,
///           kvm), balloon and entropy.
inline constexpr const char* kModulePhases[] = {"boot", "9p", "disk", "net", "button", "late"};

/// A module the guest needs, the phase it is loaded in, and the processor flags it is loaded for
/// (none: always).
struct ModuleRoot {
  std::string name;
  std::vector<std::string> needs_flag;  // any of them
  std::string phase = "boot";
};
/// The modules a qemu VM's initramfs carries, by phase (kModulePhases).
std::vector<ModuleRoot> GuestModuleRoots();

/// /etc/lab/modules for `roots`: for each phase that has roots (in kModulePhases' order), a line
/// "[PHASE]" and then one line per module of the closure of that phase's roots, in load order, as
/// "/lib/modules/RELEASE/PATH" plus " FLAG|FLAG" when only roots that need a flag pull it in. A
/// module may be listed in several phases (9p and disk are alternatives; late needs what both
/// may have loaded): the init loads each once. `files`: every module of every phase, once.
Result<std::string> ModuleLoadList(const std::string& modules_dir, const std::string& release,
                                   const std::vector<ModuleRoot>& roots, std::vector<std::string>* files);

/// Builds the initramfs for `kernel` at `out`: `guest_init` (the lab-guest-init binary) as /init,
/// the closure of GuestModuleRoots() under /lib/modules/<release>/ with ModuleLoadList as
/// /etc/lab/modules, /dev/console, and `busybox` (a static busybox, "" for none) as /bin/busybox
/// with a link for each of its applets.
Status BuildInitramfs(const GuestKernel& kernel, const std::string& guest_init, const std::string& busybox,
                      const std::string& out);

/// /bin/busybox of busybox-static when it is installed and static, else "".
std::string StaticBusybox();

}  // namespace lab::hv::qemu
