// One QEMU process per qemu VM: its command line built from plain data in one place (QemuArgv),
// started in its own session, identified by (pid, start time) as partitions' inits are
// (base/proc.h), and stopped as Hyper-V's Stop-VM does: the ACPI power button, then QMP quit after
// a timeout, then SIGKILL to that pid.
//
// Files of a VM, all under its run directory: qmp.sock (QMP), agent.sock (the `lab.agent`
// virtio-serial port), console.log (the guest's serial console), qemu.log (QEMU's own stderr) and
// qemu.pid ("PID START_TIME"). StopQemu removes the sockets and qemu.pid; the logs stay.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace lab::hv::qemu {

/// How QEMU runs a guest: KVM where lab doctor finds it usable for a standard guest, else TCG.
enum class Accel { kKvm, kTcg };

/// A network adapter present when QEMU starts (a VM started from a saved state must have the
/// devices it was saved with; a running VM gets its adapters by hotplug: hv/qemu/control.h).
struct NicAtStart {
  std::string id;   // netdev and device id ("n" + the port's name)
  int tap_fd = -1;  // an open tap (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), inherited by QEMU
  std::string mac;
  int port = 0;     // the pcie-root-port it sits on (1..hotplug_ports)
};

/// What the guest's root filesystem is (the guest init reads `lab.root=` from the command line).
enum class RootKind {
  kNone,  // the initramfs only (bench, tests of the init)
  k9p,    // `image: host`: root_dir exported read-only over virtio-9p (tag "labroot"), a tmpfs over it
  kDisk,  // the VM's own qcow2 (disk) over its image's read-only disk: virtio-blk, node "disk"
};

/// A guest's machine, as plain data.
struct QemuConfig {
  std::string binary = "qemu-system-x86_64";
  Accel accel = Accel::kTcg;
  /// Processor virtualization extensions really in the guest's CPU (svm under TCG; the host's
  /// vmx/svm under KVM) or really absent.
  bool expose_virtualization_extensions = false;
  int processors = 1;
  int memory_mib = 512;
  std::string kernel;  // an ELF vmlinux with the PVH note
  std::string initrd;
  std::string append;  // added after lab's own kernel arguments
  /// Virtqueue kicks through eventfds (QEMU's default). Off for a guest under the nested KVM of a
  /// lab guest: there a kick was seen lost while the guest's virtio console started, the guest
  /// spinning on it for minutes; off, a kick is handled in the vCPU's own exit.
  bool ioeventfd = true;
  std::string run_dir;  // the VM's sockets, logs and pid file (must exist)
  int nice = 0;         // scheduling niceness of the QEMU process
  int tb_size_mib = 64;  // TCG: cap of the translated-code cache
  RootKind root = RootKind::kNone;
  std::string root_dir = "/";  // k9p: the host directory the guest sees as its root (read-only)
  std::string disk;            // kDisk: the VM's qcow2 (its backing file is the image's disk)
  /// PCIe root ports for adapters plugged while the VM runs (q35 hotplugs on root ports only).
  int hotplug_ports = 8;
  std::vector<NicAtStart> nics;
  bool balloon = true;         // a virtio-balloon (dynamic memory, Set-VMMemory at run time)
  /// `-incoming URI`: start paused, waiting for a saved state ("exec:cat FILE") or a live
  /// migration ("defer", then migrate-incoming over QMP). "" = boot.
  std::string incoming;
  /// The guest's `lab` binary (the agent) and what it needs: lab.agent=PATH on the command line.
  std::string agent_binary;
};

/// The command line for `config` (argv[0] is config.binary).
std::vector<std::string> QemuArgv(const QemuConfig& config);

/// A started QEMU.
struct QemuProcess {
  int pid = 0;
  uint64_t start_time = 0;  // /proc/PID/stat's, so a reused pid is never taken for it
  std::string run_dir;
  std::string qmp_socket() const { return run_dir + "/qmp.sock"; }
  std::string agent_socket() const { return run_dir + "/agent.sock"; }
  std::string console_log() const { return run_dir + "/console.log"; }
  std::string qemu_log() const { return run_dir + "/qemu.log"; }
  std::string pid_file() const { return run_dir + "/qemu.pid"; }
};

/// Starts QEMU for `config` and waits (at most `timeout_ms`) until its QMP socket answers. On
/// error nothing is left running: QEMU's own message (qemu.log) is in the error.
Result<QemuProcess> StartQemu(const QemuConfig& config, int timeout_ms = 10000);

/// The QEMU recorded in `run_dir`/qemu.pid, when that process still runs with the recorded start
/// time.
Result<QemuProcess> FindQemu(const std::string& run_dir);

/// True while `process` (the same pid and start time) exists and is not a zombie.
bool IsRunning(const QemuProcess& process);

/// Stops it: system_powerdown and up to `powerdown_ms` for the guest to power off, then quit and
/// up to `quit_ms`, then SIGKILL to its pid. Ok when it is gone (also when it was already);
/// removes its sockets and pid file.
Status StopQemu(const QemuProcess& process, int powerdown_ms, int quit_ms);

/// "7.2.0" from `binary -version`, or an error saying QEMU is not installed.
Result<std::string> QemuVersion(const std::string& binary = "qemu-system-x86_64");

}  // namespace lab::hv::qemu
