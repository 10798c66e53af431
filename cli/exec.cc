#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cli/cli.h"

namespace lab::cli {

void AddExec(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "exec",
      "run a command inside a machine (everything after MACHINE, or after --); no command: its login shell "
      "(/bin/sh -l); the command's exit code is passed through");
  static std::string arg, machine, workdir, user;
  static std::vector<std::string> env;
  static bool tty = false, no_tty = false;
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_option("MACHINE", machine, "host or VM (its name as written in the lab file, any case)")->required();
  cmd->add_flag("-t,--tty", tty,
                "a terminal inside the machine (a pty of its own /dev/pts) even when stdin is not one; the default "
                "when stdin and stdout are terminals");
  auto* no = cmd->add_flag("-T,--no-tty", no_tty, "no terminal: the command gets lab's stdin, stdout and stderr as they are");
  no->excludes(cmd->get_option("--tty"));
  cmd->add_option("-e,--env", env,
                  "VAR=VALUE in the command's environment (repeatable); VAR alone passes lab's own value of VAR")
      ->allow_extra_args(false);
  cmd->add_option("-w,--workdir", workdir, "the command's working directory inside the machine (default /)");
  cmd->add_option("-u,--user", user,
                  "run as this user: a name or uid of the machine's own /etc/passwd (default root)");
  // Everything after MACHINE is the command, its options included (`lab exec LAB VM ls -la`), as
  // docker exec takes it: main takes it off the line into g.exec_command.
  cmd->footer("CMD... : the command and its arguments, after MACHINE (or after --); none: /bin/sh -l");
  cmd->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("exec", "it enters the machine's namespaces and cgroup")) return;
    hv::ExecRequest request;
    request.argv = g.exec_command;
    if (request.argv.empty()) request.argv = {"/bin/sh", "-l"};  // the machine's login shell
    for (const std::string& e : env) {
      const size_t eq = e.find('=');
      if (eq == 0 || e.empty()) {
        std::fprintf(stderr, "lab exec: -e '%s': give VAR=VALUE (or VAR to pass lab's own value)\n", e.c_str());
        g_exit_code = 2;
        return;
      }
      if (eq != std::string::npos) {
        request.env.push_back(e);
      } else if (const char* value = std::getenv(e.c_str())) {
        request.env.push_back(e + "=" + value);  // as docker exec -e VAR: lab's value, none if unset
      }
    }
    request.workdir = workdir;
    request.user = user;
    // As ssh does: a terminal when lab is used from one (a redirected stdout gets the bytes as
    // they are, without a terminal's CR LF).
    request.tty = tty || (!no_tty && ::isatty(0) && ::isatty(1));
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto code = engine->Exec(LabName(arg), machine, request);
    if (!code) {
      std::fprintf(stderr, "lab: %s\n", code.message().c_str());
      return;
    }
    g_exit_code = *code;
  });
}

}  // namespace lab::cli
