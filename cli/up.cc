#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "cli/cli.h"
#include "hv/kernel/seccomp.h"

namespace lab::cli {

void AddUp(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("up", "make the lab real (idempotent)");
  static std::string file;
  static bool check = false;
  static bool no_restart = false;
  static bool force = false;
  static bool refresh_images = false;
  cmd->add_option("FILE", file, "lab file")->required();
  cmd->add_flag("--refresh-images", refresh_images,
                "resolve the packages of Debian images again (a newer resolution is a new image: its VMs are remade)");
  cmd->add_flag("--force", force, "apply this file to a lab that is up from another file of the same 'lab:' name");
  cmd->add_flag("--no-restart", no_restart, "refuse a plan that would stop and start a running VM");
  cmd->add_option("-j,--jobs", g.jobs, "actions run at once, at least 1 (default: cores)")->check(JobsValidator());
  cmd->add_flag("--check", check, "run the lab's checks after applying");
  cmd->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("up", "it makes network namespaces, bridges, cgroups and mounts")) return;
    // Inside a VM without exposed extensions the kernel refuses every namespace: say so before
    // touching anything, rather than failing at the first partition.
    if (hv::kernel::NestingBlocked()) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      std::fprintf(stderr,
                   "lab: this machine's virtualization extensions are not exposed, so it cannot run VMs; on its "
                   "host: Set-VMProcessor -VMName %s -ExposeVirtualizationExtensions $true (lab file: "
                   "processor.expose_virtualization_extensions: true)\n",
                   host);
      return;
    }
    auto lab = LoadLab(file);
    if (!lab) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    Out out = MakeOut(g);
    if (no_restart) {
      auto plan = engine->PlanUp(*lab);
      if (!plan) {
        std::fprintf(stderr, "lab: %s\n", plan.message().c_str());
        return;
      }
      auto restarts = engine::Restarts(*plan);
      if (!restarts.empty()) {
        std::fprintf(stderr, "lab: --no-restart: this plan would stop and start running VMs; nothing was changed:\n");
        for (const auto& r : restarts) std::fprintf(stderr, "  %s\n", r.c_str());
        return;
      }
    }
    auto t0 = std::chrono::steady_clock::now();
    engine::ExecOptions exec = StepPrinter(g, out);
    exec.interrupt = &CatchInterrupts("up");
    exec.refresh_images = refresh_images;
    if (!g.quiet)
      exec.on_image = [](const std::string& line) {
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      };
    auto result = engine->Up(
        *lab,
        [&](const engine::Plan& plan) {
          std::printf("lab %s (%s)\n", lab->name.c_str(), file.c_str());
          PrintPlan(plan, out);
          std::fflush(stdout);  // seen before the work starts, on a pipe too (lab up | tee log)
        },
        exec, nullptr, force);
    if (!result) {
      std::fprintf(stderr, "lab: %s\n", result.message().c_str());
      if (exec.interrupt->load()) g_exit_code = kExitInterrupted;
      return;
    }
    if (!result->note.empty()) std::fprintf(stderr, "lab: warning: %s\n", result->note.c_str());
    if (exec.interrupt->load()) {
      for (const auto& e : result->report.errors) std::fprintf(stderr, "lab: %s\n", e.c_str());
      ReportInterrupted(result->report, "up");
      g_exit_code = kExitInterrupted;
      return;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!result->plan.empty()) PrintReport(result->report, secs, "Apply", out);
    if (!result->report.ok()) return;
    g_exit_code = 0;
    if (check) {
      auto outcomes = engine->Check(*lab);
      if (!outcomes) {
        std::fprintf(stderr, "lab: %s\n", outcomes.message().c_str());
        g_exit_code = 1;
        return;
      }
      extern int PrintChecks(const std::vector<engine::CheckOutcome>&, const Out&, bool);
      g_exit_code = PrintChecks(*outcomes, out, false);
    }
  });
}

static void PrintSwept(const std::string& name, const std::vector<std::string>& swept) {
  if (swept.empty()) std::printf("lab %s: nothing of it found by its marks, nothing to remove.\n", name.c_str());
  for (const auto& s : swept) std::printf("lab %s: removed by its ownership mark %s\n", name.c_str(), s.c_str());
}

void AddDown(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand("down", "remove everything the lab made, and nothing else");
  static std::string arg;
  cmd->add_option("LAB", arg, "lab file or lab name")->required();
  cmd->add_option("-j,--jobs", g.jobs, "actions run at once, at least 1 (default: cores)")->check(JobsValidator());
  cmd->callback([&g] {
    g_exit_code = 1;
    if (!RequireRoot("down", "it removes the lab's network namespaces, bridges, cgroups and mounts")) return;
    std::string name = LabName(arg);
    if (name.empty()) {
      std::fprintf(stderr, "lab: cannot tell which lab %s is; name it: lab down NAME\n", arg.c_str());
      return;
    }
    auto engine = OpenEngine(g);  // says why when it cannot
    if (!engine) {
      // The records are unreadable (a corrupt database): the lab is still found by its marks.
      std::fprintf(stderr, "lab: warning: without the state database, removing lab '%s' by its ownership marks\n",
                   name.c_str());
      auto swept = engine::Engine::SweepByMarks(EngineOptionsFor(g), name);
      if (!swept) {
        std::fprintf(stderr, "lab: %s\n", swept.message().c_str());
        return;
      }
      PrintSwept(name, *swept);
      g_exit_code = 0;
      return;
    }
    Out out = MakeOut(g);
    auto t0 = std::chrono::steady_clock::now();
    engine::ExecOptions exec = StepPrinter(g, out);
    exec.interrupt = &CatchInterrupts("down");
    auto result = engine->Down(
        name,
        [&](const engine::Plan& plan) {
          std::printf("lab %s: removing %zu object%s\n", name.c_str(), plan.actions.size(),
                      plan.actions.size() == 1 ? "" : "s");
          std::fflush(stdout);
        },
        exec);
    if (!result) {
      std::fprintf(stderr, "lab: %s\n", result.message().c_str());
      if (exec.interrupt->load()) g_exit_code = kExitInterrupted;
      return;
    }
    if (!result->note.empty()) std::fprintf(stderr, "lab: warning: %s\n", result->note.c_str());
    if (exec.interrupt->load()) {
      for (const auto& e : result->report.errors) std::fprintf(stderr, "lab: %s\n", e.c_str());
      ReportInterrupted(result->report, "down");
      g_exit_code = kExitInterrupted;
      return;
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (result->plan.empty() && result->report.done == 0) {
      if (result->swept.empty()) std::printf("lab %s: nothing recorded, nothing to remove.\n", name.c_str());
      else PrintSwept(name, result->swept);
      g_exit_code = 0;
      return;
    }
    if (!result->swept.empty()) PrintSwept(name, result->swept);
    PrintReport(result->report, secs, "Teardown", out);
    g_exit_code = result->report.ok() ? 0 : 1;
  });
}

}  // namespace lab::cli
