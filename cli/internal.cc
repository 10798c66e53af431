// Hidden verbs that `lab` runs inside partitions (not for users).
#include "base/net.h"
#include "cli/cli.h"
#include "hv/kernel/probe.h"

namespace lab::cli {

void AddInternal(CLI::App& app, Globals&) {
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
}

}  // namespace lab::cli
