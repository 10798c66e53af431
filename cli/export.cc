#include <cstdio>

#include "cli/cli.h"
#include "engine/export.h"

namespace lab::cli {

void AddExport(CLI::App& app, Globals&) {
  auto* cmd = app.add_subcommand("export", "the lab as a script for real Hyper-V hosts (the seeds' cmdlets)");
  static std::string file;
  static std::string format;
  cmd->add_option("FILE", file, "lab file")->required();
  cmd->add_option("--format", format, "powershell")->check(CLI::IsMember({"powershell"}))->required();
  cmd->callback([] {
    g_exit_code = 1;
    auto lab = LoadLab(file);
    if (!lab) return;
    std::string script = engine::ExportPowerShell(*lab);
    std::fwrite(script.data(), 1, script.size(), stdout);
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
