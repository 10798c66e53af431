// lab logs LAB MACHINE: what a machine's run: commands printed, oldest first.
#include <cstdio>

#include "cli/cli.h"

namespace lab::cli {

void AddLogs(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("logs", "what a machine's run: commands printed");
  static std::string lab;
  static std::string machine;
  cmd->add_option("LAB", lab, "lab file or lab name")->required();
  cmd->add_option("MACHINE", machine, "a host or VM of the lab")->required();
  cmd->callback([&g] {
    g_exit_code = 1;
    auto engine = OpenEngine(g);
    if (!engine) return;
    const std::string name = LabName(lab);
    auto text = engine->Logs(name, machine);
    if (!text) {
      spdlog::error("{}", text.message());
      return;
    }
    if (text->empty())
      spdlog::info("nothing logged for '{}': it has no run: commands, or they have not run yet", machine);
    std::fwrite(text->data(), 1, text->size(), stdout);
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
