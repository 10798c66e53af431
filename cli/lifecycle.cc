// lab stop|start|save|resume LAB MACHINE, lab checkpoint|restore LAB MACHINE NAME, lab move LAB MACHINE --to HOST.
#include <chrono>
#include <cstdio>

#include "cli/cli.h"
#include "engine/lifecycle.h"

namespace lab::cli {
namespace {

void AddOne(CLI::App& app, Globals& g, engine::LifecycleOp op, const char* help, bool named) {
  auto* cmd = app.add_subcommand(engine::ToString(op), help);
  auto req = std::make_shared<engine::LifecycleRequest>();
  req->op = op;
  auto lab = std::make_shared<std::string>();
  cmd->add_option("LAB", *lab, "lab file or lab name")->required();
  cmd->add_option("MACHINE", req->machine, "a VM of the lab")->required();
  if (named) cmd->add_option("NAME", req->checkpoint, "checkpoint name")->required();
  if (op == engine::LifecycleOp::kMove) cmd->add_option("--to", req->to, "the host it moves to")->required();
  cmd->callback([&g, req, lab] {
    g_exit_code = 1;
    auto engine = OpenEngine(g);
    if (!engine) return;
    req->lab = LabName(*lab);
    Out out = MakeOut(g);
    auto t0 = std::chrono::steady_clock::now();
    auto r = engine::RunLifecycle(*engine, *req, StepPrinter(g, out));
    if (r)
      for (const auto& w : r->warnings) std::fprintf(stderr, "lab: warning: %s\n", w.c_str());
    if (!r) {
      std::fprintf(stderr, "lab: %s\n", r.message().c_str());
      return;
    }
    for (const auto& line : r->lines) std::printf("  %s\n", line.c_str());
    if (r->applied) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      PrintReport(r->apply.report, secs, "Start", out);
      if (!r->apply.report.ok()) return;
    }
    g_exit_code = 0;
  });
}

}  // namespace

void AddLifecycle(CLI::App& app, Globals& g) {
  using engine::LifecycleOp;
  AddOne(app, g, LifecycleOp::kStop, "Stop-VM: stop a VM (and the VMs inside it); its disk is kept", false);
  AddOne(app, g, LifecycleOp::kStart, "Start-VM: start a stopped VM (or resume a saved one)", false);
  AddOne(app, g, LifecycleOp::kSave, "Save-VM: freeze a VM with its processes", false);
  AddOne(app, g, LifecycleOp::kResume, "resume a saved VM", false);
  AddOne(app, g, LifecycleOp::kCheckpoint, "Checkpoint-VM: snapshot a VM's disk", true);
  AddOne(app, g, LifecycleOp::kRestore, "Restore-VMCheckpoint: put a VM's disk back to a checkpoint", true);
  AddOne(app, g, LifecycleOp::kMove,
         "Move-VM: move a VM (with the VMs inside it) to another host of the lab; refused while a hypervisor runs in it",
         false);
}

}  // namespace lab::cli
