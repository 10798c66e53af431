#include "hv/qemu/control.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "base/deadline.h"
#include "base/quote.h"
#include "hv/kernel/netlink.h"

namespace lab::hv::qemu {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

void Pause(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// No migration bandwidth cap: the state goes to a local file or socket (7.2's default is 32 MiB/s).
constexpr int64_t kUnlimitedBandwidth = int64_t{1} << 40;

/// query-migrate until it says completed (ok) or failed/cancelled (its error-desc), at most until
/// `deadline`.
Result<json> WaitMigration(QmpClient& qmp, Clock::time_point deadline) {
  for (;;) {
    auto r = qmp.Execute("query-migrate", nullptr, std::max(MsUntil(deadline), 1000));
    if (!r.ok()) return r.status();
    std::string status = r->value("status", std::string());
    if (status == "completed") return r;
    if (status == "failed" || status == "cancelled")
      return Status::Error("migration " + status + ": " + r->value("error-desc", std::string("(QEMU said no more)")));
    if (MsUntil(deadline) == 0) return Status::Error("migration not completed in time (status " + status + ")");
    Pause(10);
  }
}

/// Runs a snapshot-* job: the command, then query-jobs until it is concluded, its error, job-dismiss.
Status RunJob(QmpClient& qmp, const std::string& command, json arguments, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  static std::atomic<uint64_t> serial = 0;
  std::string job = "lab-" + command + "-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
  arguments["job-id"] = job;
  LAB_RETURN_IF_ERROR(qmp.Execute(command, arguments).status());
  for (;;) {
    auto jobs = qmp.Execute("query-jobs");
    if (!jobs.ok()) return jobs.status();
    const json* mine = nullptr;
    for (const auto& j : *jobs)
      if (j.value("id", std::string()) == job) mine = &j;
    if (!mine) return Status::Error("QMP " + command + ": job " + job + " vanished");
    if (mine->value("status", std::string()) == "concluded") {
      std::string error = mine->value("error", std::string());
      (void)qmp.Execute("job-dismiss", {{"id", job}});
      if (!error.empty()) return Status::Error("QMP " + command + ": " + error);
      return Status::Ok();
    }
    if (MsUntil(deadline) == 0)
      return Status::Error("QMP " + command + ": job not concluded within " + std::to_string(timeout_ms) +
                           " ms (status " + mine->value("status", std::string()) + ")");
    Pause(10);
  }
}

json SnapshotArguments(const std::string& name) {
  return {{"tag", name}, {"vmstate", kDiskNode}, {"devices", json::array({kDiskNode})}};
}

}  // namespace

// ---- taps ----

Tap& Tap::operator=(Tap&& o) noexcept {
  if (this != &o) {
    Close();
    fd_ = std::exchange(o.fd_, -1);
    ifindex_ = o.ifindex_;
    name_ = std::move(o.name_);
  }
  return *this;
}

Tap::~Tap() { Close(); }

int Tap::Release() { return std::exchange(fd_, -1); }

void Tap::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Tap> OpenTap(const std::string& netns_path, const std::string& ifname, const std::string& altname) {
  std::string what = "tap " + ifname;
  if (ifname.empty() || ifname.size() >= IFNAMSIZ)
    return Status::Error(what + ": a kernel interface name is 1 to " + std::to_string(IFNAMSIZ - 1) + " characters");
  auto ns = kernel::NetNs::Open(netns_path);
  if (!ns.ok()) return ns.status().Prefixed(what + " in " + netns_path);
  auto nl = kernel::Netlink::In(*ns);
  if (!nl.ok()) return nl.status().Prefixed(what);
  auto existing = nl->FindLink(ifname);
  if (!existing.ok()) return existing.status().Prefixed(what);
  if (existing->has_value())
    return Status::Error(what + ": a link of that name already exists in " + netns_path);
  // /dev/net/tun makes the tap in the namespace of the thread that opens it: opened there, the fd
  // then works from anywhere.
  int fd = -1;
  Status made = kernel::WithNetNs(*ns, [&]() -> Status {
    fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open /dev/net/tun");
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    std::memcpy(ifr.ifr_name, ifname.c_str(), ifname.size());
    if (::ioctl(fd, TUNSETIFF, &ifr) != 0) return ErrnoStatus("TUNSETIFF");
    return Status::Ok();
  });
  Tap tap(fd, 0, ifname);  // closes the fd on every error below: the tap goes with it
  if (!made.ok()) return made.Prefixed(what);
  if (!altname.empty()) LAB_RETURN_IF_ERROR(nl->AddAltName(ifname, altname).Prefixed(what));
  auto link = nl->FindLink(ifname);
  if (!link.ok()) return link.status().Prefixed(what);
  if (!link->has_value()) return Status::Error(what + ": made, then not found in " + netns_path);
  return Tap(tap.Release(), (*link)->index, ifname);
}

// ---- adapters ----

Status PlugNic(QmpClient& qmp, const NicAtStart& nic) {
  std::string what = "Add-VMNetworkAdapter " + nic.id;
  if (nic.port < 1) return Status::Error(what + ": no hotplug root port given (port " + std::to_string(nic.port) + ")");
  // The fd's name in QEMU is the adapter's id: netdev_add consumes it, so names never pile up.
  LAB_RETURN_IF_ERROR(qmp.GetFd(nic.tap_fd, nic.id).Prefixed(what));
  auto netdev = qmp.Execute("netdev_add", {{"type", "tap"}, {"id", nic.id}, {"fd", nic.id}, {"vhost", false}});
  if (!netdev.ok()) {
    (void)qmp.Execute("closefd", {{"fdname", nic.id}});  // when netdev_add failed before taking it
    return netdev.status().Prefixed(what);
  }
  auto device = qmp.Execute("device_add", {{"driver", "virtio-net-pci"},
                                           {"id", nic.id},
                                           {"netdev", nic.id},
                                           {"mac", nic.mac},
                                           {"bus", "rp" + std::to_string(nic.port)}});
  if (!device.ok()) {
    (void)qmp.Execute("netdev_del", {{"id", nic.id}});
    return device.status().Prefixed(what);
  }
  return Status::Ok();
}

Status UnplugNic(QmpClient& qmp, const std::string& id, int timeout_ms) {
  std::string what = "Remove-VMNetworkAdapter " + id;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  LAB_RETURN_IF_ERROR(qmp.Execute("device_del", {{"id", id}}).status().Prefixed(what));
  // QEMU says DEVICE_DELETED for the device's inner parts too (a "path" without "device"): the
  // adapter is gone when the event names its id.
  for (;;) {
    auto event = qmp.WaitEvent("DEVICE_DELETED", MsUntil(deadline));
    if (!event.ok())
      return Status::Error(what + ": the guest did not release the adapter within " + std::to_string(timeout_ms) +
                           " ms (QMP device_del waits for the guest's hotplug driver; the request stays pending)");
    if ((*event)["data"].value("device", std::string()) == id) break;
  }
  return qmp.Execute("netdev_del", {{"id", id}}).status().Prefixed(what);
}

// ---- Save-VM ----

std::string IncomingFromFile(const std::string& file) { return "exec:cat " + ShellWord(file); }

Status SaveToFile(QmpClient& qmp, const std::string& file, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string part = file + ".part";
  std::error_code ec;
  std::filesystem::remove(part, ec);
  struct stat older {};
  bool had_older = ::stat(file.c_str(), &older) == 0;
  auto status = qmp.QueryStatus();
  if (!status.ok()) return status.status().Prefixed("Save-VM");
  bool was_running = *status == "running";
  auto undo = [&](const Status& error) {
    std::filesystem::remove(part, ec);
    if (was_running) (void)qmp.Execute("cont");
    return error.Prefixed("Save-VM");
  };
  // Paused first: one pass over memory that no longer changes, so the file is written at disk speed.
  if (was_running) LAB_RETURN_IF_ERROR(qmp.Execute("stop").status().Prefixed("Save-VM"));
  auto raised = qmp.Execute("migrate-set-parameters", {{"max-bandwidth", kUnlimitedBandwidth}});
  if (!raised.ok()) return undo(raised.status());
  // QEMU reports completed when it has written the last byte to the pipe, not when cat is done:
  // the rename that follows cat is what says the file is whole.
  std::string uri = "exec:cat > " + ShellWord(part) + " && mv " + ShellWord(part) + " " + ShellWord(file);
  auto started = qmp.Execute("migrate", {{"uri", uri}});
  if (!started.ok()) return undo(started.status());
  auto done = WaitMigration(qmp, deadline);
  if (!done.ok()) {
    (void)qmp.Execute("migrate_cancel");
    return undo(done.status().Prefixed("QMP migrate to " + file));
  }
  // Done when `file` is the part file renamed (another inode than an older save's).
  for (;;) {
    struct stat now {};
    if (::stat(file.c_str(), &now) == 0 && !(had_older && now.st_dev == older.st_dev && now.st_ino == older.st_ino))
      break;
    if (MsUntil(deadline) == 0) return undo(Status::Error("QEMU completed, but " + file + " was not written in time"));
    Pause(5);
  }
  return Status::Ok();
}

Status Resume(QmpClient& qmp, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // While an incoming state loads, cont only means "run once loaded", and QEMU forgets it when the
  // state says the VM was paused (Save-VM pauses first): cont again once it is loaded.
  for (;;) {
    auto status = qmp.QueryStatus();
    if (!status.ok()) return status.status().Prefixed("Start-VM (the saved state did not load?)");
    if (*status == "running") return Status::Ok();
    if (*status != "inmigrate") LAB_RETURN_IF_ERROR(qmp.Execute("cont").status().Prefixed("Start-VM"));
    if (MsUntil(deadline) == 0)
      return Status::Error("Start-VM: the VM is still " + *status + " after " + std::to_string(timeout_ms) + " ms");
    if (*status == "inmigrate") Pause(5);
  }
}

// ---- checkpoints ----

Status SaveCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms) {
  return RunJob(qmp, "snapshot-save", SnapshotArguments(name), timeout_ms).Prefixed("Checkpoint-VM " + name);
}

Status LoadCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms) {
  return RunJob(qmp, "snapshot-load", SnapshotArguments(name), timeout_ms).Prefixed("Restore-VMCheckpoint " + name);
}

Status DeleteCheckpoint(QmpClient& qmp, const std::string& name, int timeout_ms) {
  json arguments = {{"tag", name}, {"devices", json::array({kDiskNode})}};
  return RunJob(qmp, "snapshot-delete", arguments, timeout_ms).Prefixed("Remove-VMCheckpoint " + name);
}

Result<std::vector<std::string>> ListCheckpoints(QmpClient& qmp) {
  auto nodes = qmp.Execute("query-named-block-nodes", {{"flat", true}});
  if (!nodes.ok()) return nodes.status().Prefixed("Get-VMCheckpoint");
  for (const auto& n : *nodes) {
    if (n.value("node-name", std::string()) != kDiskNode) continue;
    std::vector<std::string> names;
    const json& image = n.value("image", json::object());
    for (const auto& snap : image.value("snapshots", json::array())) names.push_back(snap.value("name", std::string()));
    return names;
  }
  return Status::Error(std::string("Get-VMCheckpoint: the VM has no disk (block node '") + kDiskNode + "')");
}

// ---- Move-VM ----

std::string MigrationUri(const std::string& run_dir) { return "unix:" + run_dir + "/migrate.sock"; }

Result<MigrationStats> MigrateTo(QmpClient& from, QmpClient& to, const std::string& uri, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto fail = [&](const Status& error) -> Result<MigrationStats> {
    (void)from.Execute("migrate_cancel");
    return error.Prefixed("Move-VM");
  };
  LAB_RETURN_IF_ERROR(to.Execute("migrate-incoming", {{"uri", uri}}).status().Prefixed("Move-VM (destination)"));
  LAB_RETURN_IF_ERROR(from.Execute("migrate-set-parameters", {{"max-bandwidth", kUnlimitedBandwidth}})
                          .status()
                          .Prefixed("Move-VM"));
  auto started = from.Execute("migrate", {{"uri", uri}});
  if (!started.ok()) return fail(started.status());
  auto done = WaitMigration(from, deadline);
  if (!done.ok()) return fail(done.status().Prefixed("QMP migrate to " + uri));
  MigrationStats stats;
  stats.total_ms = done->value("total-time", int64_t{0});
  stats.downtime_ms = done->value("downtime", int64_t{0});
  stats.setup_ms = done->value("setup-time", int64_t{0});
  stats.transferred = done->value("ram", json::object()).value("transferred", uint64_t{0});
  // The destination runs by itself once the state is in (it was not started with -S).
  for (;;) {
    auto status = to.QueryStatus();
    if (!status.ok()) return status.status().Prefixed("Move-VM (destination)");
    if (*status == "running") return stats;
    if (MsUntil(deadline) == 0)
      return Status::Error("Move-VM: the destination is still " + *status + " after the migration completed");
    Pause(5);
  }
}

// ---- memory ----

Status SetBalloon(QmpClient& qmp, uint64_t bytes) {
  return qmp.Execute("balloon", {{"value", bytes}}).status().Prefixed("Set-VMMemory");
}

Result<uint64_t> QueryBalloon(QmpClient& qmp) {
  auto r = qmp.Execute("query-balloon");
  if (!r.ok()) return r.status().Prefixed("Get-VMMemory");
  return r->value("actual", uint64_t{0});
}

}  // namespace lab::hv::qemu
