// lab stop|start|save|resume LAB MACHINE, lab checkpoint LAB MACHINE [NAME], lab restore LAB MACHINE NAME,
// lab checkpoints LAB MACHINE, lab checkpoint rm LAB MACHINE NAME, lab move LAB MACHINE --to HOST.
#include <chrono>
#include <cstdio>
#include <ctime>

#include "base/quote.h"
#include "cli/cli.h"
#include "engine/lifecycle.h"

namespace lab::cli {
namespace {

/// Hyper-V's name for a checkpoint made without one: "VM - (MM/DD/YYYY - HH:MM:SS)", local time.
std::string DefaultCheckpointName(const std::string& vm) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%m/%d/%Y - %H:%M:%S", &tm);
  return vm + " - (" + when + ")";
}

std::string HumanBytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

/// `lab checkpoints LAB VM` (Get-VMSnapshot) and `lab checkpoint rm LAB VM NAME` (Remove-VMSnapshot).
void AddCheckpointListing(CLI::App& app, CLI::App& checkpoint, Globals& g) {
  auto* list = app.add_subcommand("checkpoints", "Get-VMSnapshot: list a VM's checkpoints (name, taken, size)");
  auto lab = std::make_shared<std::string>(), vm = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  list->add_option("LAB", *lab, "lab file or lab name")->required();
  list->add_option("MACHINE", *vm, "a VM of the lab")->required();
  list->add_flag("--json", *json, "as JSON: [{\"name\",\"taken\",\"bytes\"}]");
  list->callback([&g, lab, vm, json] {
    g_exit_code = 1;
    if (!RequireRoot("checkpoints", "it reads the VMs' disks")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto all = engine::ListCheckpoints(*engine, LabName(*lab), *vm);
    if (!all) {
      spdlog::error("{}", all.message());
      return;
    }
    auto taken = [](int64_t t) {
      std::time_t tt = static_cast<std::time_t>(t);
      std::tm tm{};
      ::localtime_r(&tt, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%m/%d/%Y %H:%M:%S", &tm);
      return std::string(buf);
    };
    if (*json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& c : *all) out.push_back({{"name", c.name}, {"taken", c.taken}, {"bytes", c.bytes}});
      std::printf("%s\n", out.dump(2).c_str());
    } else if (all->empty()) {
      std::printf("VM '%s' has no checkpoints (`%s` makes one)\n", vm->c_str(),
                  ShellCommand({"lab", "checkpoint", LabName(*lab), *vm}).c_str());
    } else {
      size_t w = 4;
      for (const auto& c : *all) w = std::max(w, c.name.size());
      std::printf("%-*s  %-19s  %s\n", static_cast<int>(w), "NAME", "TAKEN", "SIZE");
      for (const auto& c : *all)
        std::printf("%-*s  %-19s  %s\n", static_cast<int>(w), c.name.c_str(), taken(c.taken).c_str(),
                    HumanBytes(c.bytes).c_str());
    }
    g_exit_code = 0;
  });

  auto* rm = checkpoint.add_subcommand("rm", "Remove-VMSnapshot: delete a checkpoint of a VM (and of the VMs inside it)");
  auto rlab = std::make_shared<std::string>(), rvm = std::make_shared<std::string>(),
       rname = std::make_shared<std::string>();
  rm->add_option("LAB", *rlab, "lab file or lab name")->required();
  rm->add_option("MACHINE", *rvm, "a VM of the lab")->required();
  rm->add_option("NAME", *rname, "checkpoint name ('lab checkpoints LAB MACHINE' lists them)")->required();
  rm->callback([&g, rlab, rvm, rname] {
    g_exit_code = 1;
    if (!RequireRoot("checkpoint rm", "it deletes from the VM's disk")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    auto lines = engine::RemoveCheckpoint(*engine, LabName(*rlab), *rvm, *rname);
    if (!lines) {
      spdlog::error("{}", lines.message());
      return;
    }
    for (const auto& line : *lines) std::printf("  %s\n", line.c_str());
    g_exit_code = 0;
  });
}

CLI::App* AddOne(CLI::App& app, Globals& g, engine::LifecycleOp op, const char* help, bool named) {
  auto* cmd = app.add_subcommand(engine::ToString(op), help);
  const bool optional_name = op == engine::LifecycleOp::kCheckpoint;
  auto req = std::make_shared<engine::LifecycleRequest>();
  req->op = op;
  auto lab = std::make_shared<std::string>();
  // checkpoint: LAB and MACHINE are checked in the callback, as `lab checkpoint rm ...` has none.
  auto* lab_opt = cmd->add_option("LAB", *lab, "lab file or lab name");
  auto* vm_opt = cmd->add_option("MACHINE", req->machine, "a VM of the lab");
  if (!optional_name) lab_opt->required(), vm_opt->required();
  if (named && optional_name)
    cmd->add_option("NAME", req->checkpoint, "checkpoint name (default: 'MACHINE - (MM/DD/YYYY - HH:MM:SS)', as Hyper-V)");
  else if (named)
    cmd->add_option("NAME", req->checkpoint, "checkpoint name")->required();
  if (op == engine::LifecycleOp::kMove) cmd->add_option("--to", req->to, "the host it moves to")->required();
  cmd->callback([&g, req, lab, cmd, optional_name] {
    if (optional_name) {
      if (cmd->got_subcommand("rm")) return;
      if (lab->empty() || req->machine.empty()) {
        spdlog::error("usage: lab checkpoint LAB MACHINE [NAME] (or lab checkpoint rm LAB MACHINE NAME)");
        g_exit_code = 2;
        return;
      }
      if (req->checkpoint.empty()) req->checkpoint = DefaultCheckpointName(req->machine);
    }
    g_exit_code = 1;
    if (!RequireRoot(engine::ToString(req->op), "it acts on the VM's partition: its processes, cgroup and disk")) return;
    auto engine = OpenEngine(g);
    if (!engine) return;
    req->lab = LabName(*lab);
    Out out = MakeOut(g);
    auto t0 = std::chrono::steady_clock::now();
    auto r = engine::RunLifecycle(*engine, *req, StepPrinter(g, out));
    if (r)
      for (const auto& w : r->warnings) spdlog::warn("{}", w);
    if (!r) {
      spdlog::error("{}", r.message());
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
  return cmd;
}

}  // namespace

void AddLifecycle(CLI::App& app, Globals& g) {
  using engine::LifecycleOp;
  AddOne(app, g, LifecycleOp::kStop, "Stop-VM: stop a VM (and the VMs inside it); its disk is kept", false);
  AddOne(app, g, LifecycleOp::kStart, "Start-VM: start a stopped VM (or resume a saved one)", false);
  AddOne(app, g, LifecycleOp::kSave, "Save-VM: freeze a VM with its processes", false);
  AddOne(app, g, LifecycleOp::kResume, "resume a saved VM", false);
  auto* checkpoint = AddOne(app, g, LifecycleOp::kCheckpoint,
                           "Checkpoint-VM: snapshot a VM's disk (and the VMs inside it); 'checkpoint rm' deletes one", true);
  AddCheckpointListing(app, *checkpoint, g);
  AddOne(app, g, LifecycleOp::kRestore, "Restore-VMCheckpoint: put a VM's disk back to a checkpoint", true);
  AddOne(app, g, LifecycleOp::kMove,
         "Move-VM: move a VM (with the VMs inside it) to another host of the lab; refused while a hypervisor runs in it",
         false);
}

}  // namespace lab::cli
