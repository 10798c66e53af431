#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "engine/facts.h"

namespace lab::cli {

void AddValidate(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("validate", "check a lab file (no privileges needed)");
  static std::vector<std::string> files;
  static bool json = false;
  cmd->add_option("FILE", files, "lab files")->required();
  cmd->add_flag("--json", json, "diagnostics as JSON on stdout (docs/json.md)");
  cmd->callback([&g] {
    g_exit_code = 0;
    std::vector<schema::Diagnostic> every;  // --json: of all the files, printed at the end
    for (const auto& f : files) {
      auto r = LoadLabFile(f);
      // The file's own diagnostics, then what the rules model says of a lab that reads (what
      // `lab plan` would refuse or note), all in file order.
      std::vector<schema::Diagnostic> all = std::move(r.diagnostics);
      if (r.lab) {
        // A qemu VM is judged by the processor it will really get (hv/qemu_host.h).
        hv::QemuHostFacts qemu;
        if (engine::HasQemu(*r.lab)) qemu = hv::ProbeQemuHost(g.run_dir);
        auto rules = engine::RuleDiagnostics(*r.lab, qemu);
        all.insert(all.end(), rules.begin(), rules.end());
        std::stable_sort(all.begin(), all.end(), [](const schema::Diagnostic& a, const schema::Diagnostic& b) {
          return std::pair{a.loc.line, a.loc.col} < std::pair{b.loc.line, b.loc.col};
        });
      }
      size_t errors = 0, warnings = 0;
      for (const auto& d : all) (d.severity == schema::Severity::kError ? errors : warnings)++;
      if ((!r.lab || errors > 0) && all.empty()) all.push_back({f, {}, "invalid lab file", schema::Severity::kError});
      if (json) every.insert(every.end(), all.begin(), all.end());
      else PrintDiagnostics(all);
      if (!r.lab || errors > 0) {
        g_exit_code = 1;
        continue;
      }
      if (json) continue;
      const schema::Lab& lab = *r.lab;
      size_t vms = 0, hosts = 0;
      for (const auto& m : lab.machines) (m.kind == schema::MachineKind::kHost ? hosts : vms)++;
      std::string noted = warnings == 0 ? "" : ", " + std::to_string(warnings) + (warnings == 1 ? " warning" : " warnings");
      std::printf("%s: lab '%s' is valid: %zu host%s, %zu VM%s, %zu network%s, %zu check%s%s\n", f.c_str(),
                  lab.name.c_str(), hosts, hosts == 1 ? "" : "s", vms, vms == 1 ? "" : "s", lab.networks.size(),
                  lab.networks.size() == 1 ? "" : "s", lab.checks.size(), lab.checks.size() == 1 ? "" : "s",
                  noted.c_str());
    }
    if (json) std::printf("%s\n", DiagnosticsJson(every).dump(2).c_str());
  });
}

}  // namespace lab::cli
