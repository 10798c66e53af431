#include "hv/qemu/lifecycle_bench.h"

#include <chrono>
#include <filesystem>

#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/control.h"
#include "hv/qemu/doctor.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"
#include "hv/qemu/qmp.h"

namespace lab::hv::qemu {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

/// The steps of MeasureLifecycle, with the QEMU processes it started (stopped by the caller).
class Run {
 public:
  explicit Run(const LifecycleOptions& o) : o_(o) {}
  ~Run() {
    for (const auto& p : started_) (void)StopQemu(p, 0, 3000);
  }

  Result<LifecycleResult> Go() {
    auto kernel = FetchKernel(KernelCacheDir(o_.state_dir));
    if (!kernel.ok()) return kernel.status();
    base_.accel = o_.accel;
    base_.memory_mib = o_.memory_mib;
    base_.kernel = kernel->vmlinux;
    base_.initrd = o_.run_dir + "/initrd.gz";
    base_.root = RootKind::kDisk;
    base_.disk = o_.run_dir + "/disk.qcow2";
    base_.hotplug_ports = 1;
    base_.nice = o_.nice;
    LAB_RETURN_IF_ERROR(BuildInitramfs(*kernel, o_.guest_init, StaticBusybox(), base_.initrd));
    auto made = RunCommand({"qemu-img", "create", "-f", "qcow2", base_.disk, "256M"}, 30000);
    if (!made.ok() || made->exit_code != 0)
      return Status::Error("qemu-img create failed (apt-get install qemu-utils): " +
                           (made.ok() ? made->output : made.message()));

    LifecycleResult r;
    r.kernel = kernel->release;
    auto t = Clock::now();
    auto vm = Start("");
    if (!vm.ok()) return vm.status();
    LAB_RETURN_IF_ERROR(vm->agent.Ping(180000).status());
    r.boot_ms = MsSince(t);
    auto sleeper = vm->agent.Exec({"sh", "-c", "sleep 1000000 </dev/null >/dev/null 2>&1 & echo $!"}, 30000);
    if (!sleeper.ok()) return sleeper.status();
    if (sleeper->exit_code != 0) return Status::Error("the guest cannot start a process: " + sleeper->output);
    sleeper_ = sleeper->output.substr(0, sleeper->output.find('\n'));

    for (int i = 1; i <= o_.rounds; ++i) {
      LifecycleRound round;
      std::string state = o_.run_dir + "/vm.state";
      t = Clock::now();
      LAB_RETURN_IF_ERROR(SaveToFile(vm->qmp, state, 120000));
      round.save_ms = MsSince(t);
      round.state_bytes = fs::file_size(state);
      LAB_RETURN_IF_ERROR(Stop(*vm));

      t = Clock::now();
      vm = Start(IncomingFromFile(state));
      if (!vm.ok()) return vm.status();
      LAB_RETURN_IF_ERROR(Resume(vm->qmp, 60000));
      round.restore_running_ms = MsSince(t);
      LAB_RETURN_IF_ERROR(Alive(*vm, "Start-VM from the saved state"));
      round.restore_agent_ms = MsSince(t);  // the file stays: the next round's Save-VM replaces it

      t = Clock::now();
      LAB_RETURN_IF_ERROR(SaveCheckpoint(vm->qmp, "bench", 120000));
      round.checkpoint_ms = MsSince(t);
      t = Clock::now();
      LAB_RETURN_IF_ERROR(LoadCheckpoint(vm->qmp, "bench", 120000));
      round.checkpoint_restore_ms = MsSince(t);
      LAB_RETURN_IF_ERROR(DeleteCheckpoint(vm->qmp, "bench", 120000));
      LAB_RETURN_IF_ERROR(Alive(*vm, "Restore-VMCheckpoint"));

      auto dest = Start("defer");
      if (!dest.ok()) return dest.status();
      t = Clock::now();
      auto moved = MigrateTo(vm->qmp, dest->qmp, MigrationUri(vm->p.run_dir), 120000);
      if (!moved.ok()) return moved.status();
      round.migrate_ms = MsSince(t);
      round.migrate_total_ms = moved->total_ms;
      round.downtime_ms = moved->downtime_ms;
      LAB_RETURN_IF_ERROR(Stop(*vm));
      vm = std::move(dest);
      LAB_RETURN_IF_ERROR(Alive(*vm, "Move-VM"));
      r.rounds.push_back(round);
    }
    return r;
  }

 private:
  struct Vm {
    QemuProcess p;
    QmpClient qmp;
    AgentClient agent;
  };

  Result<Vm> Start(const std::string& incoming) {
    QemuConfig c = base_;
    c.run_dir = o_.run_dir + "/vm-" + std::to_string(started_.size());
    c.incoming = incoming;
    std::error_code ec;
    fs::create_directories(c.run_dir, ec);
    auto p = StartQemu(c);
    if (!p.ok()) return p.status();
    started_.push_back(*p);
    auto qmp = QmpClient::Connect(p->qmp_socket(), 5000);
    if (!qmp.ok()) return qmp.status();
    // The agent's socket gets its client before a saved state loads: the state says the host was
    // connected, and a QEMU without a client there would tell the guest it hung up (its agent
    // then reopens the port, and a request arriving in that instant is lost).
    auto agent = AgentClient::Connect(p->agent_socket(), 5000);
    if (!agent.ok()) return agent.status();
    return Vm{*p, std::move(qmp).value(), std::move(agent).value()};
  }

  /// QEMU's monitor takes one client at a time: ours goes before StopQemu connects to quit it.
  static Status Stop(Vm& vm) {
    { QmpClient gone = std::move(vm.qmp); }
    return StopQemu(vm.p, 0, 5000);
  }

  /// The guest answers its agent and the process started after boot still runs.
  Status Alive(Vm& vm, const std::string& after) {
    auto r = vm.agent.Exec({"kill", "-0", sleeper_}, 60000);
    if (!r.ok()) return r.status().Prefixed(after);
    if (r->exit_code != 0) return Status::Error(after + ": the guest's process " + sleeper_ + " is gone");
    return Status::Ok();
  }

  const LifecycleOptions& o_;
  QemuConfig base_;
  std::vector<QemuProcess> started_;
  std::string sleeper_;
};

}  // namespace

Result<LifecycleResult> MeasureLifecycle(const LifecycleOptions& o) {
  std::error_code ec;
  fs::create_directories(o.run_dir, ec);
  Result<LifecycleResult> r = Status::Error("not run");
  {
    Run run(o);
    r = run.Go();
  }
  fs::remove_all(o.run_dir, ec);
  return r;
}

}  // namespace lab::hv::qemu
