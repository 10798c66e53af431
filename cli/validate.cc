#include <cstdio>

#include "cli/cli.h"

namespace lab::cli {

void AddValidate(CLI::App& app, Globals&) {
  auto* cmd = app.add_subcommand("validate", "check a lab file (no privileges needed)");
  static std::vector<std::string> files;
  cmd->add_option("FILE", files, "lab files")->required();
  cmd->callback([] {
    g_exit_code = 0;
    for (const auto& f : files) {
      auto lab = LoadLab(f);
      if (!lab) {
        g_exit_code = 1;
        continue;
      }
      size_t vms = 0, hosts = 0;
      for (const auto& m : lab->machines) (m.kind == schema::MachineKind::kHost ? hosts : vms)++;
      std::printf("%s: lab '%s' is valid: %zu host%s, %zu VM%s, %zu network%s, %zu check%s\n", f.c_str(),
                  lab->name.c_str(), hosts, hosts == 1 ? "" : "s", vms, vms == 1 ? "" : "s", lab->networks.size(),
                  lab->networks.size() == 1 ? "" : "s", lab->checks.size(), lab->checks.size() == 1 ? "" : "s");
    }
  });
}

}  // namespace lab::cli
