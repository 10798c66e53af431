// What lab prints while it works: -v's detail (steps with timings, probes, observation),
// --log-format json's JSON lines, and on a terminal the live progress line and the plan summary
// (off a terminal, the plain lines as before).
#include <pty.h>

#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

/// `lab ARGS` in the sandbox on a pseudo-terminal made here (stdout and stderr both on it, as in
/// a user's shell): its exit code and everything it wrote, control characters included.
Run OnTerminal(const Sandbox& sb, const std::string& args) {
  std::string cmd = "exec env TERM=xterm LAB_STATE_DIR=" + sb.state + " LAB_RUN_DIR=" + sb.run + " " +
                    LAB_BINARY_DIR + "/lab --no-color " + args;
  struct winsize ws {};
  ws.ws_col = 200;
  ws.ws_row = 50;
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  Run r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(master, buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  ::close(master);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  sb.RecordOwned();
  return r;
}

/// Lines of `text` that contain `what`.
size_t CountLines(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (const auto& l : lab::Split(text, '\n')) n += l.find(what) != std::string::npos;
  return n;
}

const std::regex kStepTiming(R"(lab: debug: create partition/\S+: [0-9.]+ ms \(journal [0-9.]+ ms, kernel [0-9.]+ ms, record [0-9.]+ ms\))");

}  // namespace

TEST_CASE("lab up -v shows each step's timings, check -v the probes, and plain up neither", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up a lab");
  Sandbox sb;
  const std::string file = Src("labs/nested-nat.yaml");

  Run plain = sb.LabApart("up " + file);
  INFO(plain.out << plain.err);
  REQUIRE(plain.code == 0);
  CHECK_FALSE(std::regex_search(plain.err, kStepTiming));
  CHECK(plain.err.find("debug:") == std::string::npos);
  CHECK(plain.out.find("  made VM 'middle'") != std::string::npos);  // the plain lines as before
  auto pids = InitPids(sb, "nested-nat");
  Run plain_check = sb.LabApart("check nested-nat");
  CHECK(plain_check.err.find("debug:") == std::string::npos);
  TakeDownLeavingNothing(sb, "nested-nat", pids);

  Run verbose = sb.LabApart("up -v " + file);
  INFO(verbose.out << verbose.err);
  REQUIRE(verbose.code == 0);
  CHECK(std::regex_search(verbose.err, kStepTiming));
  // Every partition's step is timed: hosts, VMs and the network's.
  CHECK(CountLines(verbose.err, "debug: create partition/") >= 4);
  CHECK(verbose.err.find("debug: planned ") != std::string::npos);
  CHECK(verbose.err.find("debug: observed ") != std::string::npos);
  // stdout is the same as without -v.
  CHECK(verbose.out.find("  made VM 'middle'") != std::string::npos);
  pids = InitPids(sb, "nested-nat");
  Run check = sb.LabApart("check nested-nat -v");
  INFO(check.err);
  CHECK(check.code == 0);
  CHECK(check.err.find("debug: check 1: inside 'nested1': ping www.example.test") != std::string::npos);
  TakeDownLeavingNothing(sb, "nested-nat", pids);
}

TEST_CASE("--log-format json makes every line on stderr a JSON object with ts, level and msg", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up a lab");
  Sandbox sb;
  const std::string file = Src("labs/nested-nat.yaml");
  Run up = sb.LabApart("up -v --log-format json " + file);
  INFO(up.out << up.err);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  // Down as well, and a command that fails: an error is a JSON line too.
  Run bad = sb.LabApart("status no-such-lab --log-format json");
  CHECK(bad.code == 1);
  Run down = sb.LabApart("down nested-nat -v --log-format json");
  INFO(down.out << down.err);
  CHECK(down.code == 0);
  size_t debug = 0, errors = 0;
  for (const std::string& err : {up.err, bad.err, down.err}) {
    auto lines = lab::Split(lab::Trim(err), '\n');
    REQUIRE_FALSE(lines.empty());
    for (const auto& line : lines) {
      INFO(line);
      auto j = nlohmann::json::parse(line, nullptr, false);
      REQUIRE(j.is_object());
      CHECK(j["ts"].is_string());
      CHECK(j["msg"].is_string());
      REQUIRE(j["level"].is_string());
      debug += j["level"] == "debug";
      errors += j["level"] == "error";
    }
  }
  CHECK(debug >= 8);
  CHECK(errors == 1);
  CHECK(down.err.find("\"delete partition/middle: ") != std::string::npos);
  // A bad lab file's diagnostics are JSON lines with their position.
  Run invalid = sb.LabApart("plan --log-format json " + Src("tests/schema/golden/many-mistakes.yaml"));
  CHECK(invalid.code == 1);
  auto first = nlohmann::json::parse(lab::Split(invalid.err, '\n')[0], nullptr, false);
  REQUIRE(first.is_object());
  CHECK(first["level"] == "error");
  CHECK(first["line"] == 2);
  CHECK(first["col"] == 6);
  CHECK(Leftovers(sb, pids).empty());
}

TEST_CASE("On a terminal up and down show one live progress line and the plan as a summary; off it, plain lines",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up a lab");
  Sandbox sb;
  const std::string file = Src("labs/nested-nat.yaml");
  Run up = OnTerminal(sb, "up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  // The status line, rewritten in place: carriage return, "[N/M] made ...", erased to the end.
  std::smatch m;
  const std::regex status(R"(\r\[(\d+)/(\d+)\] (made|updated|started|repaired) [^\r\n]* · [0-9.]+ s elapsed)");
  REQUIRE(std::regex_search(up.out, m, status));
  const std::string total = m[2];
  CHECK(up.out.find("\r[" + total + "/" + total + "] ") != std::string::npos);  // the last step is drawn
  CHECK(up.out.find("\r\033[K") != std::string::npos);                         // and cleared at the end
  CHECK(up.out.find("left") != std::string::npos);
  // No line per action, and the plan as counts per kind of change.
  CHECK(up.out.find("\n  made ") == std::string::npos);
  CHECK(std::regex_search(up.out, std::regex(R"(\+ +create +1 network, 1 host, 3 VMs, 1 NIC, 2 switches, 3 adapters)")));
  CHECK(up.out.find("+    VM 'nested1' (on middle)") == std::string::npos);  // the list is --plan-detail's
  CHECK(up.out.find("Plan: 17 to add, 0 to change, 0 to destroy.") != std::string::npos);
  CHECK(up.out.find("Apply complete") != std::string::npos);

  Run down = OnTerminal(sb, "down nested-nat");
  INFO(down.out);
  CHECK(down.code == 0);
  CHECK(std::regex_search(down.out, std::regex(R"(\r\[\d+/\d+\] (removed|stopped) )")));
  CHECK(down.out.find("\n  removed ") == std::string::npos);
  CHECK(Leftovers(sb, pids).empty());

  // --plan-detail on a terminal: the whole list, still with the live line.
  Run detail = OnTerminal(sb, "up --plan-detail " + file);
  INFO(detail.out);
  REQUIRE(detail.code == 0);
  pids = InitPids(sb, "nested-nat");
  CHECK(detail.out.find("+    VM 'nested1' (on middle)") != std::string::npos);
  CHECK(detail.out.find("create   ") == std::string::npos);
  TakeDownLeavingNothing(sb, "nested-nat", pids);

  // Off a terminal: the plain lines as before, no carriage return, the whole plan.
  Run plain = sb.LabApart("up " + file);
  INFO(plain.out);
  REQUIRE(plain.code == 0);
  pids = InitPids(sb, "nested-nat");
  CHECK(plain.out.find('\r') == std::string::npos);
  CHECK(plain.err.find('\r') == std::string::npos);
  CHECK(plain.out.find("\n  made VM 'nested1'") != std::string::npos);
  CHECK(plain.out.find("create   ") == std::string::npos);
  TakeDownLeavingNothing(sb, "nested-nat", pids);
}
