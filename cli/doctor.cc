#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "hv/kernel/doctor.h"
#include "hv/qemu/doctor.h"

namespace lab::cli {

void AddDoctor(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("doctor", "what this machine supports: namespaces, cgroups, nftables, seccomp, "
                                           "overlayfs, /dev/kvm and nested virtualization");
  static bool json = false;
  cmd->add_flag("--json", json, "machine-readable: an array of {name, state, detail, fix, required}; /dev/kvm's "
                "state is usable, unusable or missing");
  cmd->callback([&g] {
    auto caps = hv::kernel::Diagnose(InitPath());
    // The qemu driver's lines (all optional) follow the partitions', judged from their /dev/kvm.
    for (auto& c : hv::qemu::Diagnose(caps, g.state_dir)) caps.push_back(std::move(c));
    bool ok = hv::kernel::AllRequiredPresent(caps);
    g_exit_code = ok ? 0 : 1;
    if (json) {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& c : caps)
        rows.push_back({{"name", c.name}, {"state", c.state}, {"detail", c.detail}, {"fix", c.fix},
                        {"required", c.required}});
      std::printf("%s\n", rows.dump(2).c_str());
      return;
    }
    Out out = MakeOut(g);
    std::printf("%-26s %-8s %s\n", "CAPABILITY", "STATE", "DETAIL");
    std::vector<std::string> missing;
    for (const auto& c : caps) {
      // Pad before coloring: escape codes would count toward the width.
      char state[16];
      std::snprintf(state, sizeof state, "%-8s", c.state.c_str());
      bool good = c.state == hv::kernel::kCapOk || c.state == hv::kernel::kCapUsable;
      bool lacking = c.state == hv::kernel::kCapMissing || c.state == hv::kernel::kCapUnusable;
      std::string shown = good      ? out.Green(state)
                          : lacking ? (c.required ? out.Red(state) : out.Yellow(state))
                                    : out.Dim(state);
      std::printf("%-26s %s %s%s\n", c.name.c_str(), shown.c_str(), c.detail.c_str(),
                  lacking && !c.required ? out.Dim(" (optional)").c_str() : "");
      if (lacking && !c.fix.empty())
        std::printf("%-26s %-8s %s\n", "", "", out.Dim("fix: " + c.fix).c_str());
      if (c.state == hv::kernel::kCapMissing && c.required) missing.push_back(c.name);
    }
    if (ok) {
      std::printf("%s\n", out.Bold("Everything partitions need is here.").c_str());
    } else {
      std::string list;
      for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
      std::printf("%s\n", out.Red("Partitions cannot run here; missing: " + list + ".").c_str());
    }
  });
}

}  // namespace lab::cli
