// lab: nested virtualization labs from a checked-in YAML file.
#include <cstdlib>
#include <iostream>

#include "cli/cli.h"

int main(int argc, char** argv) {
  using namespace lab::cli;
  CLI::App app{"lab: nested virtualization labs (Hyper-V semantics) from a checked-in YAML file"};
  app.require_subcommand(1);
  Globals g;
  const char* sd = std::getenv("LAB_STATE_DIR");
  const char* rd = std::getenv("LAB_RUN_DIR");
  g.state_dir = sd ? sd : "/var/lib/lab";
  g.run_dir = rd ? rd : "/run/lab";
  app.add_option("--state-dir", g.state_dir, "state directory (env LAB_STATE_DIR)")->capture_default_str();
  app.add_option("--run-dir", g.run_dir, "runtime directory (env LAB_RUN_DIR)")->capture_default_str();
  app.add_flag("-v,--verbose", g.verbose, "more detail");
  app.add_flag("-q,--quiet", g.quiet, "only errors and results");
  app.add_flag("--no-color", g.no_color, "no colors");
  app.add_option("--log-format", g.log_format, "text or json")->check(CLI::IsMember({"text", "json"}));

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
  AddLogs(app, g);
  AddInternal(app, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // usage errors exit 2
  }
  return g_exit_code;
}
