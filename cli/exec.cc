#include <cstdio>

#include "cli/cli.h"

namespace lab::cli {

void AddExec(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "exec",
      "run a command inside a machine (everything after MACHINE, or after --); no command: its login shell "
      "(/bin/sh -l); the command's exit code is passed through");
  static std::string arg, machine;
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_option("MACHINE", machine, "host or VM")->required();
  // Everything after MACHINE is the command, its options included (`lab exec LAB VM ls -la`), as
  // docker exec takes it: main takes it off the line into g.exec_command.
  cmd->footer("CMD... : the command and its arguments, after MACHINE (or after --); none: /bin/sh -l");
  cmd->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("exec", "it enters the machine's namespaces and cgroup")) return;
    std::vector<std::string> argv = g.exec_command;
    if (argv.empty()) argv = {"/bin/sh", "-l"};  // the machine's login shell
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
