#include <cstdio>

#include "cli/cli.h"
#include "engine/graph.h"

namespace lab::cli {

void AddGraph(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("graph", "show the lab's topology (a file, or a lab that is up: as it runs, moves included)");
  static std::string arg;
  static std::string format = "tree";
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_option("--format", format, "tree, dot, mermaid, or svg/png (drawn by Graphviz's dot)")
      ->check(CLI::IsMember({"tree", "dot", "mermaid", "svg", "png"}))
      ->capture_default_str();
  cmd->callback([&g] {
    g_exit_code = 1;
    std::optional<schema::Lab> lab;
    if (LooksLikeFile(arg)) {
      lab = LoadLab(arg);
    } else {
      // A lab by name: as its records hold it, each VM on the host it runs on now (lab move).
      auto engine = OpenEngine(g, /*read_only=*/true);
      if (!engine) return;
      auto placed = engine->AsPlaced(arg);
      if (!placed) {
        std::fprintf(stderr, "lab: %s\n", placed.message().c_str());
        return;
      }
      for (const auto& w : placed->warnings) std::fprintf(stderr, "lab: warning: %s\n", w.c_str());
      lab = std::move(placed->lab);
    }
    if (!lab) return;
    if (format == "svg" || format == "png") {
      auto image = engine::RenderWithGraphviz(engine::RenderGraph(*lab, engine::GraphFormat::kDot), format);
      if (!image) {
        std::fprintf(stderr, "lab graph: %s\n", image.message().c_str());
        return;
      }
      std::fwrite(image->data(), 1, image->size(), stdout);
      g_exit_code = 0;
      return;
    }
    auto f = format == "dot" ? engine::GraphFormat::kDot
             : format == "mermaid" ? engine::GraphFormat::kMermaid
                                   : engine::GraphFormat::kTree;
    std::printf("%s", engine::RenderGraph(*lab, f).c_str());
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
