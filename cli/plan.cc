#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/cli.h"

namespace lab::cli {

void AddPlan(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("plan", "show what `lab up` would change");
  static std::string file;
  static bool json = false;
  static bool detailed = false;
  cmd->add_option("FILE", file, "lab file")->required();
  cmd->add_flag("--json", json, "machine-readable plan");
  cmd->add_flag("--detailed-exitcode", detailed, "exit 0 when there are no changes, 2 when there are, 1 on error");
  cmd->callback([&g] {
    g_exit_code = 1;
    std::optional<schema::Lab> lab;
    std::vector<schema::Diagnostic> warnings;
    if (json) {
      // A bad file is JSON too, on stdout (terraform's validate -json, for CI annotators).
      auto r = LoadLabFile(file);
      if (!r.ok()) {
        if (r.diagnostics.empty()) r.diagnostics.push_back({file, {}, "invalid lab file", schema::Severity::kError});
        std::printf("%s\n", DiagnosticsJson(r.diagnostics).dump(2).c_str());
        return;
      }
      warnings = std::move(r.diagnostics);
      lab = std::move(r.lab);
    } else {
      lab = LoadLab(file);
    }
    if (!lab) return;
    if (::access(g.state_dir.c_str(), X_OK) != 0 && errno == EACCES)
      spdlog::warn(
          "this user cannot read the state in {}: the plan assumes lab '{}' is not up "
          "(run as root to plan against the state)",
          g.state_dir, lab->name);
    // Read only: any user may plan, and planning creates no state dir or database.
    auto engine = OpenEngine(g, /*read_only=*/true);
    if (!engine) return;
    auto plan = engine->PlanUp(*lab);
    if (!plan) {
      spdlog::error("{}", plan.message());
      return;
    }
    if (json) {
      std::printf("%s\n", PlanJson(lab->name, *plan, warnings).dump(2).c_str());
    } else {
      Out out = MakeOut(g);
      std::printf("lab %s (%s)\n", lab->name.c_str(), file.c_str());
      PrintPlan(*plan, out);
    }
    // A plan the rules refuse cannot be applied: say so in the exit code too.
    if (!plan->refusals.empty()) g_exit_code = 1;
    else g_exit_code = detailed && !plan->empty() ? 2 : 0;
  });
}

}  // namespace lab::cli
