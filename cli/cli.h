// The `lab` command: shared context of the verbs (cli/<verb>.cc). No logic lives here: verbs
// parse flags, call the engine and render its answers.
#pragma once

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <atomic>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/progress.h"
#include "engine/engine.h"
#include "schema/lab.h"

namespace lab::cli {

struct Globals {
  std::string state_dir;
  std::string run_dir;
  bool verbose = false;
  bool quiet = false;
  bool no_color = false;
  std::string log_format = "text";
  int jobs = 0;
  /// `lab exec LAB MACHINE [--] CMD...`: the words after MACHINE (main takes them off the line
  /// before CLI11 parses it, so the command's own options stay its own).
  std::vector<std::string> exec_command;
};

/// Output helpers: colors only on a terminal and without --no-color.
struct Out {
  bool color = false;
  bool quiet = false;
  std::string Green(const std::string& s) const { return color ? "\033[32m" + s + "\033[0m" : s; }
  std::string Red(const std::string& s) const { return color ? "\033[31m" + s + "\033[0m" : s; }
  std::string Yellow(const std::string& s) const { return color ? "\033[33m" + s + "\033[0m" : s; }
  std::string Bold(const std::string& s) const { return color ? "\033[1m" + s + "\033[0m" : s; }
  std::string Dim(const std::string& s) const { return color ? "\033[2m" + s + "\033[0m" : s; }
};

/// Log lines on stderr through spdlog's default logger (cli/logging.cc): text ("lab: MESSAGE",
/// "lab: warning: MESSAGE", "lab: debug: MESSAGE") or, with --log-format json, one JSON object a
/// line: {"ts","level","msg",...}. Level: debug with -v, warning with -q, info otherwise. Call
/// again when the flags change (main does, once they are parsed).
void SetUpLogging(const Globals& g);
/// Whether log lines are JSON (--log-format json).
bool JsonLogs();
/// Logs `message` with `fields` beside ts, level and msg in a JSON line (text lines show only
/// the message).
void LogWith(spdlog::level::level_enum level, const std::string& message, const nlohmann::json& fields);

Out MakeOut(const Globals& g);
/// Whether output gets colour: only on a terminal, and not with --no-color, NO_COLOR set to
/// anything but "" (no-color.org) or TERM=dumb.
bool ColorWanted(bool no_color_flag, bool is_terminal, const char* no_color_env, const char* term_env);
/// -j/--jobs: a whole number, at least 1 (a usage error otherwise).
CLI::Validator JobsValidator();
/// The lab-init binary partitions run: env LAB_INIT, else next to this lab binary (the build
/// tree), else ../libexec/lab/lab-init from it (installed).
std::string InitPath();
/// The engine options the global flags give (state and run dirs, lab-init, jobs).
engine::EngineOptions EngineOptionsFor(const Globals& g);
/// Opens the engine with the global flags; prints the error and returns null on failure.
/// `read_only`: the state is only read and nothing is created (any user may: lab plan).
std::unique_ptr<engine::Engine> OpenEngine(const Globals& g, bool read_only = false);
/// Commands that change the machine need root: false, after "lab VERB: needs root (WHY)" on
/// stderr, when this process is not root.
bool RequireRoot(const char* verb, const char* why);
/// Reads and validates a lab file (a big one with the heap prepared for it); prints nothing.
schema::LoadResult LoadLabFile(const std::string& path);
/// Prints diagnostics to stderr, one a line ("FILE:LINE:COL: error: ..." / "warning: ...").
void PrintDiagnostics(const std::vector<schema::Diagnostic>& diagnostics);
/// Loads and validates a lab file; prints every diagnostic (warnings too) to stderr; nullopt on
/// an error.
std::optional<schema::Lab> LoadLab(const std::string& path);
/// FILE or LAB: a path to a lab file, or the name of a lab that is up (the lab as its records
/// hold it, with a warning on stderr when its file moved, changed or no longer parses).
std::optional<schema::Lab> LoadLabOrName(const std::string& arg, engine::Engine& engine);
/// The lab name of FILE or LAB without requiring the file to be valid.
std::string LabName(const std::string& arg);
bool LooksLikeFile(const std::string& arg);
/// A diagnostic's message split where its fix begins: "address 10.3.1.2/24 is outside network
/// 'dmz' (10.3.0.0/24); use an address in 10.3.0.0/24" -> {"address ... (10.3.0.0/24)", "use an
/// address in 10.3.0.0/24"}: at the last "; " outside parentheses and double quotes (a message
/// may explain itself in several clauses; the fix is the last one); the fix is ""
/// when there is none. The text form is `message + "; " + fix`.
std::pair<std::string, std::string> SplitFix(const std::string& message);
/// `{"diagnostics":[{"file","line","col","severity","message","fix"}]}` (docs/json.md): what
/// validate --json and plan --json of a bad file print. line and col are null without a position.
nlohmann::json DiagnosticsJson(const std::vector<schema::Diagnostic>& diagnostics);
/// What `lab status LAB --json` prints (docs/json.md).
nlohmann::json StatusJson(const engine::LabStatus& status);
void PrintPlan(const engine::Plan& plan, const Out& out);
/// What `lab plan --json` prints (docs/json.md); `warnings`: the file's, as "diagnostics".
nlohmann::json PlanJson(const std::string& lab, const engine::Plan& plan,
                        const std::vector<schema::Diagnostic>& warnings);
/// The plan as counts per kind of change ("+ create   2 hosts, 3 VMs, 4 adapters"), then its
/// warnings, notes, refusals and summary line: what `lab up` shows on a terminal (--plan-detail:
/// the whole list, PrintPlan).
void PrintPlanSummary(const engine::Plan& plan, const Out& out);
/// The steps of a plan as the executor counts them (a replacement is two: remove, make).
int StepCount(const engine::Plan& plan);
/// The step printer used by up/down: one line per finished action; with a live `progress`
/// (a terminal), the status line instead, and lines only for what failed or was skipped.
engine::ExecOptions StepPrinter(const Globals& g, const Out& out, std::shared_ptr<Progress> progress = nullptr);
void PrintReport(const engine::ExecReport& report, double seconds, const char* verb, const Out& out);

/// From here on, the first SIGINT or SIGTERM sets the returned flag (hand it to the executor:
/// no new action starts, running ones finish and are recorded) and says so on stderr; a second
/// one ends the process at once with exit code 130 (the journal's intended entries let the next
/// run continue). `verb` is the command to run again ("up", "down"). `live_line`: a progress
/// line is on the terminal, which the notes erase first rather than trail.
const std::atomic<bool>& CatchInterrupts(const char* verb, bool live_line = false);
/// The end of an interrupted command: "interrupted: N of M actions done; run 'lab VERB' again to
/// continue" on stderr; the exit code is 130 (128 + SIGINT, as a shell reports Ctrl-C).
void ReportInterrupted(const engine::ExecReport& report, const char* verb);
constexpr int kExitInterrupted = 130;

// Verbs: each registers its subcommand on `app`.
void AddValidate(CLI::App& app, Globals& g);
void AddPlan(CLI::App& app, Globals& g);
void AddUp(CLI::App& app, Globals& g);
void AddDown(CLI::App& app, Globals& g);
void AddStatus(CLI::App& app, Globals& g);
void AddExec(CLI::App& app, Globals& g);
void AddCheck(CLI::App& app, Globals& g);
void AddGraph(CLI::App& app, Globals& g);
void AddExport(CLI::App& app, Globals& g);
void AddDoctor(CLI::App& app, Globals& g);
void AddInternal(CLI::App& app, Globals& g);
/// `lab completion bash|zsh|fish`, and the hidden `__man` the build makes lab.1 with.
void AddCompletion(CLI::App& app, Globals& g);
/// `lab __complete [--] WORD...` (what the completion scripts run): prints the candidates for
/// the last word, given the words before it. Outside CLI11's parsing, as the words are partial.
int RunComplete(const CLI::App& app, const Globals& g, std::vector<std::string> words);
void AddLifecycle(CLI::App& app, Globals& g);
void AddLink(CLI::App& app, Globals& g);
void AddLogs(CLI::App& app, Globals& g);
/// `lab image ls|import|rm|prune` (cli/image.cc).
void AddImage(CLI::App& app, Globals& g);
/// `lab image build` and `lab image update` (cli/image_build.cc): call after AddImage.
void AddImageBuild(CLI::App& app, Globals& g);

/// Set by a verb's callback: the process exit code.
extern int g_exit_code;

}  // namespace lab::cli
