// `lab image build FILE [IMAGE]` and `lab image update FILE [IMAGE]`: a lab file's images made
// ahead of `lab up` (or resolved again), a line per step.
#include <cstdio>

#include "base/text.h"
#include "cli/cli.h"
#include "images/debian.h"
#include "images/images.h"

namespace lab::cli {

namespace {

// `lab image`: the group of the image cache's verbs, made by whichever verb registers first.
CLI::App* ImageGroup(CLI::App& app) {
  for (CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
    if (s->get_name() == "image") return s;
  auto* group = app.add_subcommand("image", "the image cache: ls, build, import, update, rm, prune");
  group->require_subcommand(1);
  return group;
}

// The images a command works on: IMAGE (its from: parents come with it), else every image of
// the file, in file order.
std::vector<std::string> Targets(const schema::Lab& lab, const std::string& image) {
  std::vector<std::string> out;
  if (!image.empty()) return {image};
  for (const auto& i : lab.images) out.push_back(i.name);
  return out;
}

std::string ShortKey(const std::string& key) { return key.substr(0, 12); }

// "196 MiB": an image's size as people read it (FormatSize is exact, for settings).
std::string Mebibytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// The key `name` is pinned to now (debian:/from:), or "" (not resolved yet, or an import).
std::string PinnedKey(const schema::Lab& lab, const std::string& name, images::Cache& cache) {
  images::EnsureOptions look;
  look.make = false;
  auto r = images::EnsureImage(lab, name, cache, look);
  return r.ok() ? r->key : "";
}

int Build(Globals& g, const std::string& file, const std::string& image, bool refresh) {
  auto lab = LoadLab(file);
  if (!lab) return 1;
  if (!image.empty() && !lab->FindImage(image)) {
    std::vector<std::string> names;
    for (const auto& i : lab->images) names.push_back(i.name);
    auto close = ClosestMatch(image, names);
    std::fprintf(stderr, "lab image: %s declares no image '%s'%s\n", file.c_str(), image.c_str(),
                 close ? ("; did you mean '" + *close + "'?").c_str() : "");
    return 1;
  }
  images::Cache cache(EngineOptionsFor(g).state_dir);
  images::EnsureOptions options;
  options.refresh = refresh;
  options.progress = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);  // a line per step, as it happens, on a pipe too
  };
  int rc = 0;
  for (const std::string& name : Targets(*lab, image)) {
    std::string before = refresh ? PinnedKey(*lab, name, cache) : "";
    auto r = images::EnsureImage(*lab, name, cache, options);
    if (!r) {
      std::fprintf(stderr, "%s\n", r.message().c_str());
      rc = 1;
      continue;
    }
    auto meta = cache.Lookup(r->key);
    std::string size = meta ? ", " + Mebibytes(meta->size) : "";
    if (!refresh || before.empty())
      std::printf("image '%s': %s (%s%s)\n", name.c_str(), ShortKey(r->key).c_str(), r->source.c_str(), size.c_str());
    else if (before == r->key)
      std::printf("image '%s': unchanged, %s (the archive resolves to the same packages)\n", name.c_str(),
                  ShortKey(r->key).c_str());
    else
      std::printf("image '%s': updated %s -> %s%s; running VMs keep the old one until `lab up` remakes them "
                  "(-/+ remake (image changed))\n",
                  name.c_str(), ShortKey(before).c_str(), ShortKey(r->key).c_str(), size.c_str());
  }
  return rc;
}

}  // namespace

void AddImageBuild(CLI::App& app, Globals& g) {
  CLI::App* group = ImageGroup(app);
  {
    auto* cmd = group->add_subcommand("build", "make a lab file's images now (all, or IMAGE and its parents); cached ones are kept");
    static std::string file, image;
    cmd->add_option("FILE", file, "lab file")->required();
    cmd->add_option("IMAGE", image, "one image of the file (default: all)");
    cmd->callback([&g] {
      g_exit_code = 1;
      if (!RequireRoot("image build", "a build mounts, chroots and writes the state directory")) return;
      g_exit_code = Build(g, file, image, false);
    });
  }
  {
    auto* cmd = group->add_subcommand(
        "update", "resolve a lab file's Debian images again (all, or IMAGE) and build what the archive changed");
    static std::string file, image;
    cmd->add_option("FILE", file, "lab file")->required();
    cmd->add_option("IMAGE", image, "one image of the file (default: all)");
    cmd->callback([&g] {
      g_exit_code = 1;
      if (!RequireRoot("image update", "a build mounts, chroots and writes the state directory")) return;
      g_exit_code = Build(g, file, image, true);
    });
  }
}

}  // namespace lab::cli
