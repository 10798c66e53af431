// lab: nested virtualization labs from a checked-in YAML file.
#include <cstdlib>
#include <iostream>
#include <string>

#include "cli/cli.h"
#include "cli/version.h"

int main(int argc, char** argv) {
  using namespace lab::cli;
  CLI::App app{"lab: nested virtualization labs (Hyper-V semantics) from a checked-in YAML file"};
  app.require_subcommand(1);
  // Global flags anywhere on the line (`lab check LAB -q`): a subcommand hands the options it
  // does not know to this app. Set before the subcommands, which inherit it.
  app.fallthrough();
  app.set_version_flag("--version", std::string("lab ") + kVersion + " (" + kCommit + ")");
  Globals g;
  const char* sd = std::getenv("LAB_STATE_DIR");
  const char* rd = std::getenv("LAB_RUN_DIR");
  g.state_dir = sd ? sd : "/var/lib/lab";
  g.run_dir = rd ? rd : "/run/lab";
  app.add_option("--state-dir", g.state_dir, "state directory (env LAB_STATE_DIR)")->capture_default_str();
  app.add_option("--run-dir", g.run_dir, "runtime directory (env LAB_RUN_DIR)")->capture_default_str();
  app.add_flag("-v,--verbose", g.verbose, "more detail on stderr: each step with its timings, the probes and commands run inside machines, what observation found");
  app.add_flag("-q,--quiet", g.quiet, "only errors and results");
  app.add_flag("--no-color", g.no_color, "no colors");
  app.add_option("--log-format", g.log_format, "log lines on stderr as text or JSON lines")
      ->check(CLI::IsMember({"text", "json"}));
  SetUpLogging(g);
  // Once the flags are read and before any verb runs: -v, -q and --log-format take effect.
  app.parse_complete_callback([&g] { SetUpLogging(g); });

  AddValidate(app, g);
  AddPlan(app, g);
  AddUp(app, g);
  AddDown(app, g);
  AddStatus(app, g);
  AddExec(app, g);
  AddCheck(app, g);
  AddGraph(app, g);
  AddExport(app, g);
  AddDoctor(app, g);
  AddLifecycle(app, g);
  AddLink(app, g);
  AddCompletion(app, g);
  AddLogs(app, g);
  AddImage(app, g);
  AddInternal(app, g);
  AddImageBuild(app, g);  // after AddImage: joins its `lab image` group

  // `lab [GLOBAL FLAGS] __complete WORD...`: the words are partial, so not for CLI11 to parse.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "__complete") return RunComplete(app, g, std::vector<std::string>(argv + i + 1, argv + argc));
    if (a.empty() || a[0] != '-') break;
    if ((a == "--state-dir" || a == "--run-dir") && i + 1 < argc) (a == "--state-dir" ? g.state_dir : g.run_dir) = argv[++i];
  }
  // `lab [GLOBAL FLAGS] exec [FLAGS] LAB MACHINE [--] CMD...`: everything after MACHINE is the
  // command, as docker exec takes it (`lab exec LAB VM ls -la`), so not for CLI11 to parse.
  int parsed_argc = argc;
  {
    auto takes_value = [](const std::string& a) {
      return a == "--state-dir" || a == "--run-dir" || a == "--log-format" ||
             // exec's own: -e VAR=X, -w DIR, -u USER
             a == "-e" || a == "--env" || a == "-w" || a == "--workdir" || a == "-u" || a == "--user";
    };
    int i = 1;
    for (; i < argc; ++i) {
      const std::string a = argv[i];
      if (takes_value(a)) ++i;
      else if (a.empty() || a[0] != '-') break;
    }
    if (i < argc && std::string(argv[i]) == "exec") {
      int words = 0, j = i + 1;
      for (; j < argc && words < 2; ++j) {
        const std::string a = argv[j];
        if (takes_value(a)) ++j;
        else if (a.empty() || a[0] != '-') ++words;
      }
      if (words == 2) {
        int k = j;
        if (k < argc && std::string(argv[k]) == "--") ++k;
        g.exec_command.assign(argv + k, argv + argc);
        parsed_argc = j;
      }
    }
  }
  try {
    app.parse(parsed_argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    if (code == 0) return 0;
    // Usage errors exit 2, except where 2 means "changes" (lab plan --detailed-exitcode): 1 there.
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]) == "--detailed-exitcode") return 1;
    return 2;
  }
  return g_exit_code;
}
