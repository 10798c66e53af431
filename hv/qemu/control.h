// Hyper-V's run-time operations on a running qemu VM, through its QMP monitor (hv/qemu/qmp.h):
// adapters plugged and unplugged (Add/Remove-VMNetworkAdapter), Save-VM to a file and Start-VM
// from it, checkpoints (Checkpoint-VM / Restore-VMCheckpoint / Remove-VMCheckpoint), live
// migration (Move-VM) and the memory balloon (dynamic memory, Set-VMMemory).
//
// Each function is one operation on one QEMU; its error names the Hyper-V operation and the QMP
// command QEMU refused ("Save-VM: QMP migrate: GenericError: ..."), the caller puts the VM's name
// in front. Every wait has a deadline. An operation that fails undoes what it did where QEMU allows
// (a VM paused for Save-VM runs again; an adapter half added is taken out).
//
// A VM's adapters are taps (OpenTap) made inside the owner's network namespace and handed to QEMU
// as open fds: at start (QemuConfig::nics, inherited) or while it runs (PlugNic, over QMP with
// SCM_RIGHTS). A tap is not persistent: when its last holder (QEMU, once lab closed its copy)
// exits, the kernel deletes it, so a dead QEMU leaves no tap behind.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "hv/qemu/process.h"
#include "hv/qemu/qmp.h"

namespace lab::hv::qemu {

/// The block node of a VM's own disk (QemuArgv's `-blockdev ... node-name=disk` for
/// RootKind::kDisk): checkpoints are taken of it and its memory state is stored in it.
inline constexpr const char* kDiskNode = "disk";

/// An open tap device: the only thing that keeps it alive. Move-only; closes its fd.
class Tap {
 public:
  Tap() = default;
  Tap(int fd, int ifindex, std::string name) : fd_(fd), ifindex_(ifindex), name_(std::move(name)) {}
  Tap(Tap&& o) noexcept : fd_(std::exchange(o.fd_, -1)), ifindex_(o.ifindex_), name_(std::move(o.name_)) {}
  Tap& operator=(Tap&& o) noexcept;
  Tap(const Tap&) = delete;
  Tap& operator=(const Tap&) = delete;
  ~Tap();

  /// The tap's fd (O_CLOEXEC: StartQemu clears it in QEMU's process only; PlugNic passes a copy).
  int fd() const { return fd_; }
  int ifindex() const { return ifindex_; }
  const std::string& name() const { return name_; }
  /// Closes lab's copy: once QEMU holds the tap, QEMU's exit then deletes it.
  void Close();
  /// Gives up the fd without closing it (its new owner closes it).
  int Release();

 private:
  int fd_ = -1;
  int ifindex_ = 0;
  std::string name_;
};

/// Creates tap `ifname` (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, not persistent) inside the network
/// namespace at `netns_path`, gives it the ownership altname `altname` (none when empty), and
/// returns its open fd and ifindex. The calling thread's namespace is the same afterwards. An
/// existing link named `ifname` there is an error (nothing is attached to it); a failure after the
/// tap was made closes it, so nothing is left.
Result<Tap> OpenTap(const std::string& netns_path, const std::string& ifname, const std::string& altname);

/// Add-VMNetworkAdapter on a running VM: getfd (a copy of `nic.tap_fd` over the QMP socket),
/// netdev_add (tap with that fd, vhost off), device_add virtio-net-pci with `nic.mac` on root port
/// rp<nic.port>, both with id `nic.id`. On error what was added is removed again. The caller may
/// close its tap fd afterwards.
Status PlugNic(QmpClient& qmp, const NicAtStart& nic);

/// Remove-VMNetworkAdapter on a running VM: device_del of adapter `id`, then up to `timeout_ms`
/// for QEMU's DEVICE_DELETED (the guest must release the device: its kernel handles the hotplug
/// controller's eject), then netdev_del. An error when the guest did not release it in time (the
/// adapter then stays, and the request stays pending in QEMU).
Status UnplugNic(QmpClient& qmp, const std::string& id, int timeout_ms);

/// Save-VM: pauses the VM, raises the migration bandwidth cap, and migrates its state to `file`
/// (through `exec:`: QEMU 7.2 has no file: URI; written aside as FILE.part and renamed into place
/// once complete, so an older `file` stays whole until the new one replaces it), within
/// `timeout_ms`. On success the VM stays paused (the caller quits QEMU); on error it runs again if
/// it ran before, and no part file is left.
Status SaveToFile(QmpClient& qmp, const std::string& file, int timeout_ms);

/// The QemuConfig::incoming that starts a VM from a state SaveToFile wrote: "exec:cat 'FILE'".
/// Start it with the same devices (the adapters at start: same ids, MACs and ports, new taps).
std::string IncomingFromFile(const std::string& file);

/// Start-VM of a VM that QEMU holds paused or is loading an incoming state into (cont), and up to
/// `timeout_ms` until it runs. An error when the incoming state failed to load or QEMU went away.
Status Resume(QmpClient& qmp, int timeout_ms);

/// Checkpoint-VM: snapshot-save job of `name` over node kDiskNode, memory included (vmstate in
/// the same node): the VM pauses while it is written and runs again after. Waits up to
/// `timeout_ms` for the job to conclude and returns its error (an existing `name` is one).
Status SaveCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms);
/// Restore-VMCheckpoint: snapshot-load job of `name`: disk and memory as they were then.
Status LoadCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms);
/// Remove-VMCheckpoint: snapshot-delete job of `name`.
Status DeleteCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms);
/// Get-VMCheckpoint: the internal snapshots of node kDiskNode (query-named-block-nodes), oldest
/// first.
Result<std::vector<std::string>> ListCheckpoints(QmpClient& qmp);

/// What a live migration took, as the source's query-migrate says.
struct MigrationStats {
  int64_t total_ms = 0;     // "total-time"
  int64_t downtime_ms = 0;  // "downtime": the guest paused between source and destination
  int64_t setup_ms = 0;     // "setup-time"
  uint64_t transferred = 0; // bytes ("ram"/"transferred")
};

/// The URI a VM's live migration goes through: "unix:RUN_DIR/migrate.sock" under the source's
/// run directory.
std::string MigrationUri(const std::string& run_dir);

/// Move-VM of a running VM: `to` is a QEMU started with incoming "defer" and the same devices
/// (its taps may be in another namespace); migrate-incoming `uri` on it ("unix:PATH", a socket
/// under the VM's run directory), migrate to `uri` on `from`, and up to `timeout_ms` until the
/// source says completed and the destination runs (QEMU removes its unix socket once connected).
/// The source stays paused (the caller quits it).
/// On error the migration is cancelled and the source runs on.
Result<MigrationStats> MigrateTo(QmpClient& from, QmpClient& to, const std::string& uri, int timeout_ms);

/// Set-VMMemory at run time: the balloon's target, the memory the guest keeps, in bytes; the
/// guest's balloon driver gives the rest back over the next moments (QueryBalloon follows). An
/// error when the VM has no balloon device.
Status SetBalloon(QmpClient& qmp, uint64_t bytes);
/// The memory the guest has now (query-balloon's "actual"), in bytes.
Result<uint64_t> QueryBalloon(QmpClient& qmp);

}  // namespace lab::hv::qemu
