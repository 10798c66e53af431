#include <malloc.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>

#include "base/text.h"
#include "cli/cli.h"

namespace lab::cli {

int g_exit_code = 0;

bool ColorWanted(bool no_color_flag, bool is_terminal, const char* no_color_env, const char* term_env) {
  if (no_color_flag || !is_terminal) return false;
  if (no_color_env && *no_color_env) return false;
  return !(term_env && std::string_view(term_env) == "dumb");
}

CLI::Validator JobsValidator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        long n = 0;
        size_t used = 0;
        try {
          n = std::stol(v, &used);
        } catch (...) {
          used = 0;
        }
        if (used != v.size() || used == 0 || n < 1)
          return "-j/--jobs is the number of actions run at once: a whole number, at least 1 (got '" + v + "')";
        return "";
      },
      "NUMBER>=1");
}

Out MakeOut(const Globals& g) {
  Out o;
  o.color = ColorWanted(g.no_color, ::isatty(STDOUT_FILENO), std::getenv("NO_COLOR"), std::getenv("TERM"));
  o.quiet = g.quiet;
  return o;
}

std::string InitPath() {
  if (const char* env = std::getenv("LAB_INIT")) return env;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  // The build tree keeps lab-init next to lab; an installed lab (bin/) finds it in libexec/lab.
  auto beside = exe.parent_path() / "lab-init";
  auto installed = exe.parent_path().parent_path() / "libexec" / "lab" / "lab-init";
  if (!std::filesystem::exists(beside, ec) && std::filesystem::exists(installed, ec)) return installed.string();
  return beside.string();
}

engine::EngineOptions EngineOptionsFor(const Globals& g) {
  engine::EngineOptions o;
  o.state_dir = g.state_dir;
  o.run_dir = g.run_dir;
  o.init_path = InitPath();
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  o.jobs = g.jobs > 0 ? g.jobs : static_cast<int>(cores > 0 ? cores : 2);
  return o;
}

bool RequireRoot(const char* verb, const char* why) {
  if (::geteuid() == 0) return true;
  // As JSON logs: the same words in "msg" ("lab up: needs root (...)").
  if (JsonLogs()) spdlog::error("lab {}: needs root ({})", verb, why);
  else std::fprintf(stderr, "lab %s: needs root (%s)\n", verb, why);
  return false;
}

std::unique_ptr<engine::Engine> OpenEngine(const Globals& g, bool read_only) {
  auto options = EngineOptionsFor(g);
  options.read_only = read_only;
  auto e = engine::Engine::Open(std::move(options));
  if (!e) {
    spdlog::error("{}", e.message());
    return nullptr;
  }
  return std::move(*e);
}

namespace {

/// Reading a big lab file (10,000 machines: 0.9 MB) allocates about 35 times its size, nearly all
/// of it touched once; with 4 KiB pages the page faults were a third of `lab plan` on a virtual
/// machine. For such a file the heap grows in one step, big blocks included, and is asked for
/// transparent huge pages (what glibc.malloc.hugetlb=1 does; ignored where THP is off). Small
/// lab files, and every other command, keep malloc's defaults.
void PrepareHeapFor(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || st.st_size < (256 << 10)) return;
  const size_t kHuge = 2 << 20;
  size_t pad = std::min<size_t>(static_cast<size_t>(st.st_size) * 64, 128u << 20);
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // the largest allowed: big vectors come from the heap too
  ::mallopt(M_TRIM_THRESHOLD, static_cast<int>(pad));
  ::mallopt(M_TOP_PAD, static_cast<int>(pad));
  auto start = reinterpret_cast<uintptr_t>(::sbrk(0));
  void* volatile block = std::malloc(kHuge);  // grows the heap by the pad now (volatile: kept)
  std::free(block);
  auto end = reinterpret_cast<uintptr_t>(::sbrk(0));
  uintptr_t from = (start + kHuge - 1) & ~(kHuge - 1), to = end & ~(kHuge - 1);
  if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
}

}  // namespace

schema::LoadResult LoadLabFile(const std::string& path) {
  PrepareHeapFor(path);
  return schema::LoadFile(path);
}

void PrintDiagnostics(const std::vector<schema::Diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) {
    if (!JsonLogs()) {
      std::cerr << d.ToString() << "\n";
      continue;
    }
    // A JSON log line with the diagnostic's fields (those of validate --json) beside its text.
    const nlohmann::json row = DiagnosticsJson({d})["diagnostics"][0];
    nlohmann::json fields = row;
    fields.erase("severity");
    fields.erase("message");
    LogWith(d.severity == schema::Severity::kWarning ? spdlog::level::warn : spdlog::level::err, d.ToString(), fields);
  }
}

std::optional<schema::Lab> LoadLab(const std::string& path) {
  auto r = LoadLabFile(path);
  PrintDiagnostics(r.diagnostics);
  if (!r.ok()) {
    if (r.diagnostics.empty()) PrintDiagnostics({{path, {}, "invalid lab file", schema::Severity::kError}});
    return std::nullopt;
  }
  return std::move(r.lab);  // a member: returned by copy without the move
}

bool LooksLikeFile(const std::string& arg) {
  return arg.find('/') != std::string::npos || arg.ends_with(".yaml") || arg.ends_with(".yml") ||
         std::filesystem::is_regular_file(arg);
}

std::optional<schema::Lab> LoadLabOrName(const std::string& arg, engine::Engine& engine) {
  if (LooksLikeFile(arg)) return LoadLab(arg);
  // A lab by name is the lab as its records hold it: its file may have moved since.
  auto rec = engine.Recorded(arg);
  if (!rec) {
    spdlog::error("{}", rec.message());
    return std::nullopt;
  }
  for (const auto& w : rec->warnings) spdlog::warn("{}", w);
  return std::move(rec->lab);
}

std::string LabName(const std::string& arg) {
  if (!LooksLikeFile(arg)) return arg;
  auto r = schema::LoadFile(arg);
  if (r.lab) return r.lab->name;
  // An invalid file still names its lab on a `lab:` line; take it from there if we can.
  if (auto text = ReadFile(arg))
    for (const auto& line : Split(*text, '\n'))
      if (line.rfind("lab:", 0) == 0) {
        std::string name = Trim(line.substr(4));
        if (auto hash = name.find('#'); hash != std::string::npos) name = Trim(name.substr(0, hash));
        return name;
      }
  return "";
}

void PrintPlan(const engine::Plan& plan, const Out& out) {
  // Without colors the text is the engine's, which the golden plan tests pin down.
  if (!out.color) {
    std::fputs(engine::RenderPlanText(plan).c_str(), stdout);
    return;
  }
  for (const auto& v : engine::ViewPlan(plan)) {
    if (!v.shown) continue;
    std::string colored = v.symbol == "+" ? out.Green(v.symbol) : v.symbol == "-" ? out.Red(v.symbol) : out.Yellow(v.symbol);
    std::printf("  %s %s%s\n", colored.c_str(), std::string(4 - v.symbol.size(), ' ').c_str(), v.head.c_str());
    if (!v.why.empty()) std::printf("        %s\n", out.Dim(v.why).c_str());
    for (const auto& d : v.details) std::printf("          %s\n", d.c_str());
  }
  for (const auto& w : plan.warnings) std::printf("  %s %s\n", out.Red("!").c_str(), w.c_str());
  for (const auto& n : plan.notes) std::printf("  %s %s\n", out.Yellow("note:").c_str(), n.c_str());
  for (const auto& r : plan.refusals) std::printf("  %s %s\n", out.Red("refused:").c_str(), r.c_str());
  std::printf("%s\n", out.Bold(plan.Summary()).c_str());
}

nlohmann::json PlanJson(const std::string& lab, const engine::Plan& plan,
                        const std::vector<schema::Diagnostic>& warnings) {
  nlohmann::json actions = nlohmann::json::array();
  auto views = engine::ViewPlan(plan);
  for (size_t i = 0; i < plan.actions.size(); ++i) {
    const auto& a = plan.actions[i];
    nlohmann::json changes = nlohmann::json::array();
    for (const auto& c : a.changes) changes.push_back({{"key", c.key}, {"from", c.from}, {"to", c.to}});
    nlohmann::json j = {{"action", views[i].kind},
                        {"symbol", engine::Symbol(a.type)},
                        {"key", a.resource.key},
                        {"kind", engine::ToString(a.resource.kind)},
                        {"display", a.resource.display},
                        {"reason", a.reason},
                        {"changes", changes}};
    if (a.restart) j["running"] = a.running;
    if (a.repair) j["repair"] = true;  // drift put back in place
    if (!a.within.empty()) j["within"] = a.within;
    if (a.old.key != a.resource.key && !a.old.key.empty()) j["renamed_from"] = a.old.key;
    actions.push_back(std::move(j));
  }
  return nlohmann::json{{"lab", lab},
                        {"actions", actions},
                        {"add", plan.add},
                        {"change", plan.change},
                        {"restart", plan.restart},
                        {"destroy", plan.destroy},
                        {"warnings", plan.warnings},
                        {"notes", plan.notes},
                        {"refusals", plan.refusals},
                        {"summary", plan.Summary()},
                        // The file's warnings, under the same key as a bad file's errors.
                        {"diagnostics", DiagnosticsJson(warnings)["diagnostics"]}};
}

int StepCount(const engine::Plan& plan) {
  int n = 0;
  for (const auto& a : plan.actions)
    n += (a.type == engine::ActionType::kDelete || a.type == engine::ActionType::kReplace) +
         (a.type != engine::ActionType::kDelete);
  return n;
}

namespace {

/// {"VM", "VMs"}, {"switch", "switches"}: a resource kind as the plan summary counts it.
std::pair<const char*, const char*> KindNoun(const engine::Resource& r) {
  switch (r.kind) {
    case engine::Kind::kNetwork: return {"network", "networks"};
    case engine::Kind::kPartition:
      return r.spec.value("is_host", false) ? std::pair{"host", "hosts"} : std::pair{"VM", "VMs"};
    case engine::Kind::kNic: return {"NIC", "NICs"};
    case engine::Kind::kSwitch: return {"switch", "switches"};
    case engine::Kind::kAdapter: return {"adapter", "adapters"};
    case engine::Kind::kNat: return {"NAT", "NATs"};
    case engine::Kind::kDns: return {"DNS setting", "DNS settings"};
    case engine::Kind::kStandIn: return {"stand-in", "stand-ins"};
    case engine::Kind::kRun: return {"run: list", "run: lists"};
  }
  return {"object", "objects"};
}

}  // namespace

void PrintPlanSummary(const engine::Plan& plan, const Out& out) {
  // Kinds of change in the order the full list uses them, each with its counts per kind of object.
  const char* const kOrder[] = {"create", "update", "restart", "replace", "delete"};
  auto views = engine::ViewPlan(plan);
  for (const char* change : kOrder) {
    std::vector<std::pair<std::pair<const char*, const char*>, size_t>> counts;  // noun, count; first seen first
    std::string symbol;
    for (size_t i = 0; i < plan.actions.size(); ++i) {
      if (!views[i].shown || views[i].kind != change) continue;
      const auto& a = plan.actions[i];
      auto noun = KindNoun(a.type == engine::ActionType::kDelete ? a.old : a.resource);
      auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == noun; });
      if (it == counts.end()) counts.push_back({noun, 1});
      else ++it->second;
      symbol = views[i].symbol;
    }
    if (counts.empty()) continue;
    // Machines first, then what is in them: networks, hosts, VMs, NICs, switches, adapters, ...
    auto rank = [](const std::pair<const char*, const char*>& noun) {
      static const char* const kNouns[] = {"network", "host",     "VM",          "NIC",      "switch",
                                           "adapter", "NAT",      "DNS setting", "stand-in", "run: list"};
      for (size_t i = 0; i < std::size(kNouns); ++i)
        if (std::string_view(noun.first) == kNouns[i]) return i;
      return std::size(kNouns);
    };
    std::stable_sort(counts.begin(), counts.end(), [&](const auto& a, const auto& b) { return rank(a.first) < rank(b.first); });
    std::vector<std::string> parts;
    for (const auto& [noun, n] : counts) parts.push_back(std::to_string(n) + " " + (n == 1 ? noun.first : noun.second));
    std::string colored = symbol == "+" ? out.Green(symbol) : symbol == "-" ? out.Red(symbol) : out.Yellow(symbol);
    std::printf("  %s %s%-8s %s\n", colored.c_str(), std::string(4 - symbol.size(), ' ').c_str(), change,
                Join(parts, ", ").c_str());
  }
  for (const auto& w : plan.warnings) std::printf("  %s %s\n", out.Red("!").c_str(), w.c_str());
  for (const auto& n : plan.notes) std::printf("  %s %s\n", out.Yellow("note:").c_str(), n.c_str());
  for (const auto& r : plan.refusals) std::printf("  %s %s\n", out.Red("refused:").c_str(), r.c_str());
  std::printf("%s%s\n", out.Bold(plan.Summary()).c_str(),
              plan.empty() ? "" : out.Dim(" (--plan-detail lists every action)").c_str());
}

engine::ExecOptions StepPrinter(const Globals& g, const Out& out, std::shared_ptr<Progress> progress) {
  engine::ExecOptions o;
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  o.jobs = g.jobs > 0 ? g.jobs : static_cast<int>(cores > 0 ? cores : 2);
  if (const char* fail = std::getenv("LAB_INJECT_FAILURE")) o.fail_key = fail;  // tests only
  if (const char* kill = std::getenv("LAB_KILL_AT")) o.kill_at = std::atoi(kill);  // tests only
  if (const char* pause = std::getenv("LAB_PAUSE_AT")) o.pause_at = std::atoi(pause);  // tests only
  o.on_step = [out, progress](const engine::StepEvent& ev) {
    if (out.quiet && ev.status.ok() && !ev.skipped) return;
    const auto& a = *ev.action;
    // A restarted VM is stopped and started on its disk (Stop-VM, Start-VM), not removed and made.
    const bool vm_restart = a.restart && a.resource.kind == engine::Kind::kPartition;
    std::string verb = ev.teardown ? (vm_restart ? "stopped" : "removed")
                                   : (a.type == engine::ActionType::kUpdate ? (a.repair ? "repaired" : "updated") : vm_restart ? "started" : "made");
    std::string line;
    if (progress && progress->live()) {
      // On a terminal: the status line says what was done; only what went wrong stays.
      if (ev.skipped) progress->Print("  " + out.Yellow("skipped") + " " + a.resource.display + " (something it needs failed)");
      else if (!ev.status.ok()) progress->Print("  " + out.Red("failed ") + " " + a.resource.display + ": " + ev.status.message());
      progress->Step((ev.skipped ? "skipped" : !ev.status.ok() ? "failed" : verb) + " " + a.resource.display);
      return;
    }
    if (ev.skipped) {
      line = "  " + out.Yellow("skipped") + " " + a.resource.display + " (something it needs failed)";
    } else if (!ev.status.ok()) {
      line = "  " + out.Red("failed ") + " " + a.resource.display + ": " + ev.status.message();
    } else {
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.0f ms", ev.millis);
      line = "  " + out.Green(verb) + " " + a.resource.display + " " + out.Dim(std::string("(") + ms + ")");
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  return o;
}

void PrintReport(const engine::ExecReport& report, double seconds, const char* verb, const Out& out) {
  char buf[256];
  if (report.ok()) {
    std::snprintf(buf, sizeof buf, "%s complete: %d action%s in %.2f s.", verb, report.done,
                  report.done == 1 ? "" : "s", seconds);
    std::printf("%s\n", out.Bold(buf).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%s failed: %d done, %d failed, %d skipped in %.2f s.", verb, report.done,
                  report.failed, report.skipped, seconds);
    std::printf("%s\n", out.Red(buf).c_str());
    for (const auto& e : report.errors) spdlog::error("{}", e);
    spdlog::error("what was done is recorded; run the same command again to continue.");
  }
}

namespace {

std::atomic<bool> g_interrupted{false};
// Prepared before the handler is installed: the handler only writes them (async-signal-safe).
std::string g_first_note, g_second_note;

void OnInterrupt(int) {
  const std::string& note = g_interrupted.exchange(true) ? g_second_note : g_first_note;
  ssize_t ignored = ::write(STDERR_FILENO, note.data(), note.size());
  (void)ignored;
  if (&note == &g_second_note) ::_exit(kExitInterrupted);
}

}  // namespace

const std::atomic<bool>& CatchInterrupts(const char* verb, bool live_line) {
  static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");
  const std::string clear = live_line ? "\r\033[K" : "";
  const std::string first = "interrupted: finishing the actions under way, starting no more (again to stop at once)";
  const std::string second = std::string("interrupted again: stopping now; run 'lab ") + verb + "' again to continue";
  if (JsonLogs()) {
    // Written by the handler, which cannot read the clock safely: a JSON line without "ts".
    g_first_note = nlohmann::json{{"level", "warning"}, {"msg", first}}.dump() + "\n";
    g_second_note = nlohmann::json{{"level", "error"}, {"msg", second}}.dump() + "\n";
  } else {
    g_first_note = clear + "lab: " + first + "\n";
    g_second_note = clear + "lab: " + second + "\n";
  }
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sa.sa_flags = SA_RESTART;  // the kernel work under way is not cut short by EINTR
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  return g_interrupted;
}

void ReportInterrupted(const engine::ExecReport& report, const char* verb) {
  spdlog::error("interrupted: {} of {} actions done; run 'lab {}' again to continue", report.done,
               report.total, verb);
}

}  // namespace lab::cli
