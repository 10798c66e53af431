#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"

namespace lab::cli {

int PrintChecks(const std::vector<engine::CheckOutcome>& outcomes, const Out& out, bool json) {
  int failed = 0;
  for (const auto& o : outcomes) failed += o.passed ? 0 : 1;
  if (json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& o : outcomes)
      rows.push_back({{"from", o.check.from},
                      {"kind", schema::ToString(o.check.kind)},
                      {"target", o.check.target},
                      {"expect", o.check.expect_success ? "success" : "failure"},
                      {"passed", o.passed},
                      {"observed", o.observed},
                      {"reason", o.reason},
                      {"attempts", o.attempts},
                      {"millis", o.millis}});
    std::printf("%s\n", nlohmann::json{{"checks", rows},
                                       {"passed", static_cast<int>(outcomes.size()) - failed},
                                       {"failed", failed}}
                            .dump(2)
                            .c_str());
    return failed ? 1 : 0;
  }
  size_t w = 5;
  for (const auto& o : outcomes) w = std::max(w, o.check.Describe().size());
  std::printf("%-6s %-*s  %s\n", "RESULT", static_cast<int>(w), "CHECK", "OBSERVED");
  for (const auto& o : outcomes) {
    std::string res = o.passed ? out.Green("pass  ") : out.Red("FAIL  ");
    std::string obs = o.observed + (o.passed ? "" : "  <- " + o.reason);
    std::printf("%s %-*s  %s\n", res.c_str(), static_cast<int>(w), o.check.Describe().c_str(), obs.c_str());
  }
  std::string summary = std::to_string(outcomes.size() - failed) + " passed, " + std::to_string(failed) + " failed";
  std::printf("%s\n", (failed ? out.Red(summary) : out.Green(summary)).c_str());
  return failed ? 1 : 0;
}

void AddCheck(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("check", "run the lab file's checks against the running lab");
  static std::string arg;
  static bool json = false;
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_flag("--json", json, "machine-readable results");
  cmd->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("check", "it runs its probes inside the lab's network namespaces")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto lab = LoadLabOrName(arg, *engine);
    if (!lab) return;
    auto outcomes = engine->Check(*lab);
    if (!outcomes) {
      spdlog::error("{}", outcomes.message());
      return;
    }
    g_exit_code = PrintChecks(*outcomes, MakeOut(g), json);
  });
}

}  // namespace lab::cli
