#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "cli/cli.h"
#include "engine/link.h"

namespace lab::cli {

void AddStatus(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("status", "machines, state, addresses and drift of a lab (or list labs)");
  static std::string arg;
  static bool json = false;
  cmd->add_option("LAB", arg, "lab file or lab name (default: list labs)");
  cmd->add_flag("--json", json, "machine-readable status");
  cmd->callback([&g] {
    g_exit_code = 1;
    auto engine = OpenEngine(g);
    if (!engine) return;
    Out out = MakeOut(g);
    if (arg.empty()) {
      auto labs = engine->Labs();
      if (json) {
        nlohmann::json rows = nlohmann::json::array();
        for (const auto& l : labs) rows.push_back({{"lab", l.name}, {"uid", l.uid}, {"file", l.file}});
        std::printf("%s\n", rows.dump(2).c_str());
      } else if (labs.empty()) {
        std::printf("no labs are up\n");
      } else {
        for (const auto& l : labs) std::printf("%-24s %s\n", l.name.c_str(), l.file.c_str());
      }
      g_exit_code = 0;
      return;
    }
    auto st = engine->Status(LabName(arg));
    if (!st) {
      spdlog::error("{}", st.message());
      return;
    }
    for (const auto& w : st->warnings) spdlog::warn("{}", w);
    if (json) {
      std::printf("%s\n", StatusJson(*st).dump(2).c_str());
    } else {
      std::printf("lab %s (uid %s, %s): %zu objects\n", st->lab.c_str(), st->uid.c_str(), st->file.c_str(),
                  st->resources);
      // As a tree (networks, then each host with its VMs below it, nested VMs below their middle
      // VM: lab graph's nesting), names indented by depth. Columns as wide as the longest name
      // (Hyper-V names run to 100 characters), at least 16 and 12.
      auto tree = engine::MachineTree(*st);
      int name_w = 16, parent_w = 12;
      for (const auto& [m, depth] : tree) {
        name_w = std::max(name_w, 2 * depth + static_cast<int>(m->name.size()));
        parent_w = std::max(parent_w, static_cast<int>(m->parent.size()));
      }
      std::printf("%-*s %-8s %-*s %-8s %s\n", name_w, "MACHINE", "KIND", parent_w, "PARENT", "STATE", "ADDRESSES");
      for (const auto& [mp, depth] : tree) {
        const auto& m = *mp;
        std::string state = m.state == "running" ? out.Green(m.state) : out.Red(m.state);
        // As found; what differs from the records says so in parentheses, in yellow.
        std::vector<std::string> addresses;
        for (const auto& a : m.addresses) addresses.push_back(a.find(" (") != std::string::npos ? out.Yellow(a) : a);
        std::string name = std::string(2 * depth, ' ') + m.name;
        // A qemu VM's kind says its driver ("vm/qemu"); a partition, the default, is "vm".
        std::string kind = m.driver == schema::kDriverQemu ? m.kind + "/" + m.driver : m.kind;
        std::printf("%-*s %-8s %-*s %-8s %s\n", name_w, name.c_str(), kind.c_str(), parent_w,
                    m.parent.empty() ? "-" : m.parent.c_str(), state.c_str(), Join(addresses, ", ").c_str());
      }
      for (const auto& m : st->machines)
        if (!m.checkpoints.empty())
          std::printf("checkpoints of %s: %s\n", m.name.c_str(), Join(m.checkpoints, ", ").c_str());
      for (const auto& t : st->teams)
        std::printf("SET switch '%s' on %s: %s\n", t.switch_name.c_str(), t.owner.c_str(),
                    hv::DescribeTeam(t.members).c_str());
      if (st->drift.empty()) {
        std::printf("no drift\n");
      } else {
        std::printf("%s\n", out.Yellow("drift (lab up repairs it):").c_str());
        for (const auto& d : st->drift) std::printf("  %s\n", d.c_str());
      }
    }
    g_exit_code = st->drift.empty() ? 0 : 1;
  });
}

}  // namespace lab::cli
