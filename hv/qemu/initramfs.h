// The initramfs of a qemu VM: a gzip-compressed newc cpio with lab's guest init as /init, the
// kernel modules the guest needs before it has a root disk (and everything they depend on), and
// busybox's applets where the host has busybox-static.
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

/// A module the guest needs, and the processor flags it is loaded for (none: always).
struct ModuleRoot {
  std::string name;
  std::vector<std::string> needs_flag;  // any of them
};
/// The modules a qemu VM's initramfs carries: virtio transport, console, network and block, ext4
/// with crc32c, and kvm_amd (for svm) / kvm_intel (for vmx).
std::vector<ModuleRoot> GuestModuleRoots();

/// /etc/lab/modules for `roots`: one line per module of their closures, in load order, as
/// "/lib/modules/RELEASE/PATH" plus " FLAG|FLAG" when only roots that need a flag pull it in.
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
