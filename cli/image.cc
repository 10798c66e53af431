// `lab image ls|import|rm|prune`: the image cache (engine::Engine::Images and friends).
// `lab image build|update` (the Debian builder) register themselves in AddImageBuild.
#include <ctime>

#include "base/text.h"
#include "cli/cli.h"

namespace lab::cli {

namespace {

std::string When(int64_t secs) {
  if (secs <= 0) return "-";
  time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

void PrintRows(const std::vector<engine::ImageRow>& rows) {
  std::printf("%-20s %-12s %-15s %9s  %-16s  %s\n", "NAME", "KEY", "KIND", "SIZE", "BUILT", "USED BY");
  for (const auto& r : rows)
    std::printf("%-20s %-12s %-15s %9s  %-16s  %s\n", r.name.c_str(), r.key.substr(0, 12).c_str(), r.kind.c_str(),
                FormatSize(r.size).c_str(), When(r.created).c_str(),
                r.used_by.empty() ? "-" : Join(r.used_by, ", ").c_str());
}

}  // namespace

void AddImage(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("image", "the machine image cache: ls, import, rm, prune");
  cmd->require_subcommand(1);

  auto* ls = cmd->add_subcommand("ls", "the cached images: name, key, size, when built, which labs use them");
  ls->callback([&g] {
    g_exit_code = 1;
    auto engine = OpenEngine(g, /*read_only=*/true);
    if (!engine) return;
    auto rows = engine->Images();
    if (rows.empty()) {
      std::printf("No images in the cache.\n");
    } else {
      PrintRows(rows);
    }
    g_exit_code = 0;
  });

  auto* import = cmd->add_subcommand("import", "import a directory, a tar, an OCI layout or a `docker save` tar");
  static std::string import_path, import_name;
  import->add_option("PATH", import_path, "what to import")->required();
  import->add_option("--name", import_name, "the image's name")->required();
  import->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("image import", "the cache is under the state directory, with the files' owners kept")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto row = engine->ImportImage(import_path, import_name, [&g](const std::string& line) {
      if (!g.quiet) std::printf("%s\n", line.c_str());
    });
    if (!row) {
      std::fprintf(stderr, "lab: %s\n", row.message().c_str());
      return;
    }
    std::printf("image '%s' is %s (%s)\n", row->name.c_str(), row->key.substr(0, 12).c_str(),
                FormatSize(row->size).c_str());
    g_exit_code = 0;
  });

  auto* rm = cmd->add_subcommand("rm", "remove an image (refused while a lab uses it)");
  static std::string rm_what;
  rm->add_option("IMAGE", rm_what, "image name or key (at least 6 hex digits)")->required();
  rm->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("image rm", "the cache is under the state directory")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto row = engine->RemoveImage(rm_what);
    if (!row) {
      std::fprintf(stderr, "lab: %s\n", row.message().c_str());
      return;
    }
    std::printf("removed image '%s' (%s, %s)\n", row->name.c_str(), row->key.substr(0, 12).c_str(),
                FormatSize(row->size).c_str());
    g_exit_code = 0;
  });

  auto* prune = cmd->add_subcommand("prune", "remove the images no lab uses and none used for N days");
  static int days = 0;
  prune->add_option("--days", days, "keep images used within this many days (default 0: remove every unused one)")
      ->check(CLI::NonNegativeNumber);
  prune->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("image prune", "the cache is under the state directory")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto removed = engine->PruneImages(days);
    if (!removed) {
      std::fprintf(stderr, "lab: %s\n", removed.message().c_str());
      return;
    }
    uint64_t bytes = 0;
    for (const auto& r : *removed) {
      std::printf("removed image '%s' (%s, %s)\n", r.name.c_str(), r.key.substr(0, 12).c_str(), FormatSize(r.size).c_str());
      bytes += r.size;
    }
    std::printf("Pruned %zu image%s, %s.\n", removed->size(), removed->size() == 1 ? "" : "s", FormatSize(bytes).c_str());
    g_exit_code = 0;
  });
}

}  // namespace lab::cli
