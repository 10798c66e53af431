#include <cstdio>

#include "cli/cli.h"
#include "engine/graph.h"

namespace lab::cli {

void AddGraph(CLI::App& app, Globals&) {
  auto* cmd = app.add_subcommand("graph", "show the lab's topology");
  static std::string file;
  static std::string format = "tree";
  cmd->add_option("FILE", file, "lab file")->required();
  cmd->add_option("--format", format, "tree, dot or mermaid")
      ->check(CLI::IsMember({"tree", "dot", "mermaid"}))
      ->capture_default_str();
  cmd->callback([] {
    g_exit_code = 1;
    auto lab = LoadLab(file);
    if (!lab) return;
    auto f = format == "dot" ? engine::GraphFormat::kDot
             : format == "mermaid" ? engine::GraphFormat::kMermaid
                                   : engine::GraphFormat::kTree;
    std::printf("%s", engine::RenderGraph(*lab, f).c_str());
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
