// Hidden verbs that `lab` runs inside partitions (not for users).
#include "base/net.h"
#include "cli/cli.h"
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "hv/agent/guest.h"
#include "hv/kernel/doctor.h"
#include "hv/kernel/probe.h"
#include "hv/qemu/boot.h"
#include "hv/qemu/lifecycle_bench.h"

namespace lab::cli {

void AddInternal(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("__whoami", "");
  cmd->group("");  // hidden from --help
  static std::string addr;
  static int port = 80;
  cmd->add_option("ADDR", addr)->required();
  cmd->add_option("PORT", port)->required();
  cmd->callback([] {
    auto ip = Ipv4::Parse(addr);
    g_exit_code = ip ? hv::kernel::RunWhoamiServer(*ip, port) : 2;
  });

  // The agent inside a qemu VM (hv/agent/guest.h), started by the guest's init.
  auto* agent = app.add_subcommand("__guest-agent", "");
  agent->group("");
  agent->callback([] {
    hv::agent::GuestAgentOptions o;
    if (const char* port = std::getenv("LAB_AGENT_PORT")) o.port = port;
    o.init_path = InitPath();
    g_exit_code = hv::agent::RunGuestAgent(o);
  });

  // One `lab exec` session inside a qemu VM, started by its agent (hv/agent/guest.h).
  auto* guest_exec = app.add_subcommand("__guest-exec", "");
  guest_exec->group("");
  guest_exec->callback([] { g_exit_code = hv::agent::RunGuestExec(); });

  // bench/qemu-boot.sh: one qemu guest booted and timed (hv/qemu/boot.h).
  auto* boot = app.add_subcommand("__qemu-boot", "");
  boot->group("");
  static bool floor = false, hidden = false;
  boot->add_flag("--floor", floor);
  boot->add_flag("--hidden", hidden);
  boot->callback([&g] {
    hv::qemu::BootOptions o;
    o.state_dir = g.state_dir;
    o.run_dir = g.run_dir + "/qemu-boot-" + std::to_string(::getpid());
    o.guest_init = (std::filesystem::path(InitPath()).parent_path() / "lab-guest-init").string();
    o.floor = floor;
    o.expose = !hidden;
    bool kvm = hv::kernel::JudgeKvm(hv::kernel::ProbeKvm(2000)).state == hv::kernel::kCapUsable;
    o.accel = kvm ? hv::qemu::Accel::kKvm : hv::qemu::Accel::kTcg;
    auto r = hv::qemu::BootOnce(o);
    if (!r.ok()) {
      std::fprintf(stderr, "lab __qemu-boot: %s\n", r.message().c_str());
      g_exit_code = 1;
      return;
    }
    std::printf("%s %s %s %.0f ms\n", floor ? "floor" : "agent", kvm ? "kvm" : "tcg", r->kernel.c_str(), r->ready_ms);
    for (const auto& line : r->init_lines) std::fprintf(stderr, "  %s\n", line.c_str());
  });

  // bench/qemu-lifecycle.sh: one guest through save, start from the file, checkpoint, restore and
  // live migration, each timed (hv/qemu/lifecycle_bench.h). One line per round, KEY=VALUE.
  auto* life = app.add_subcommand("__qemu-lifecycle", "");
  life->group("");
  static int rounds = 3;
  life->add_option("--rounds", rounds);
  life->callback([&g] {
    hv::qemu::LifecycleOptions o;
    o.state_dir = g.state_dir;
    o.run_dir = g.run_dir + "/qemu-lifecycle-" + std::to_string(::getpid());
    o.guest_init = (std::filesystem::path(InitPath()).parent_path() / "lab-guest-init").string();
    o.rounds = rounds;
    bool kvm = hv::kernel::JudgeKvm(hv::kernel::ProbeKvm(2000)).state == hv::kernel::kCapUsable;
    o.accel = kvm ? hv::qemu::Accel::kKvm : hv::qemu::Accel::kTcg;
    auto r = hv::qemu::MeasureLifecycle(o);
    if (!r.ok()) {
      std::fprintf(stderr, "lab __qemu-lifecycle: %s\n", r.message().c_str());
      g_exit_code = 1;
      return;
    }
    std::printf("boot %s %s boot_ms=%.0f\n", kvm ? "kvm" : "tcg", r->kernel.c_str(), r->boot_ms);
    for (size_t i = 0; i < r->rounds.size(); ++i) {
      const auto& x = r->rounds[i];
      std::printf("round=%zu save_ms=%.0f state_mb=%.1f restore_running_ms=%.0f restore_agent_ms=%.0f "
                  "checkpoint_ms=%.0f checkpoint_restore_ms=%.0f migrate_ms=%.0f migrate_total_ms=%lld "
                  "downtime_ms=%lld\n",
                  i + 1, x.save_ms, static_cast<double>(x.state_bytes) / 1e6, x.restore_running_ms,
                  x.restore_agent_ms, x.checkpoint_ms, x.checkpoint_restore_ms, x.migrate_ms,
                  static_cast<long long>(x.migrate_total_ms), static_cast<long long>(x.downtime_ms));
    }
  });
}

}  // namespace lab::cli

