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
}

}  // namespace lab::cli

