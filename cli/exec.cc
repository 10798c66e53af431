#include <cstdio>

#include "cli/cli.h"

namespace lab::cli {

void AddExec(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("exec", "run a command inside a machine; its exit code is passed through");
  static std::string arg, machine;
  static std::vector<std::string> argv;
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_option("MACHINE", machine, "host or VM")->required();
  cmd->add_option("CMD", argv, "command and arguments (after --)")->required();
  cmd->callback([&g] {
    g_exit_code = 1;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto code = engine->Exec(LabName(arg), machine, argv);
    if (!code) {
      std::fprintf(stderr, "lab: %s\n", code.message().c_str());
      return;
    }
    g_exit_code = *code;
  });
}

}  // namespace lab::cli
