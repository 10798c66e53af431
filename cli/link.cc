// lab link LAB MACHINE IFACE down|up: fault injection on a NIC (or adapter), and how the SET
// switches teaming it reacted.
#include <cstdio>

#include "cli/cli.h"
#include "engine/link.h"

namespace lab::cli {

void AddLink(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "link", "fault injection: set a host's NIC (or a VM's adapter) link down or up; SET switches rebind their ports");
  auto req = std::make_shared<engine::LinkRequest>();
  auto lab = std::make_shared<std::string>();
  auto state = std::make_shared<std::string>();
  cmd->add_option("LAB", *lab, "lab file or lab name")->required();
  cmd->add_option("MACHINE", req->machine, "the host (or VM) that has the interface")->required();
  cmd->add_option("IFACE", req->ifname, "its NIC (or adapter) name, as in the lab file")->required();
  cmd->add_option("STATE", *state, "down or up")->required()->check(CLI::IsMember({"down", "up"}));
  cmd->callback([&g, req, lab, state] {
    g_exit_code = 1;
    if (!RequireRoot("link", "it sets links inside the lab's network namespaces")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    req->lab = LabName(*lab);
    req->up = *state == "up";
    auto r = engine::SetLink(*engine, *req);
    if (!r) {
      spdlog::error("{}", r.message());
      return;
    }
    Out out = MakeOut(g);
    std::printf("%s: link %s\n", r->what.c_str(), req->up ? out.Green("up").c_str() : out.Red("down").c_str());
    for (const auto& t : r->teams)
      std::printf("  switch '%s' (SET, switch independent): %s\n", t.switch_name.c_str(),
                  hv::DescribeTeam(t.members).c_str());
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
