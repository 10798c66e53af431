// Ctrl-C and SIGTERM: the VMs a run made are not in lab's process group, so the terminal's
// signals never reach them. The first signal lets the actions under way finish, starts no more,
// releases the lock and says how far it got (exit 130); a second one ends lab at once. Either
// way the next run continues and converges.
//
// A run is caught mid-way with LAB_PAUSE_AT (it stops itself at a kill point, its lock held);
// the signal goes to its process group, as a terminal sends Ctrl-C to its foreground job.
#include <signal.h>

#include <catch2/catch.hpp>
#include <regex>

#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

namespace {

std::string File(const std::string& lab) { return lab::testing::Src("labs/" + lab + ".yaml"); }

/// The init pids of the machines `lab status` shows running (made and recorded). Asked once the
/// interrupted run has ended: its records say which partitions it made, all before or while the
/// signal came, so a signal that reached them would have ended them. (Not while it is paused:
/// `lab status` opens the state database for writing, and a paused run may hold its lock.)
std::vector<int> RunningPids(const Sandbox& sb, const std::string& lab) {
  std::vector<int> out;
  for (int pid : InitPids(sb, lab))
    if (pid > 0) out.push_back(pid);
  if (out.empty()) UNSCOPED_INFO("lab status " << lab << ":\n" << sb.Lab("status " + lab + " --json").out);
  return out;
}

size_t Records(const Sandbox& sb, const std::string& lab) {
  auto j = nlohmann::json::parse(sb.Lab("status " + lab + " --json").out, nullptr, false);
  return j.is_discarded() ? 0 : j.value("resources", size_t{0});
}

/// Brings the lab up again after the interruption: it converges, checks pass, and `lab down`
/// leaves nothing. `lock_left`: whether the interrupted run may have left its lock (a second
/// signal ends it without releasing it).
void ContinuesAndConverges(const Sandbox& sb, const std::string& lab, bool lock_left) {
  Run again = sb.Lab("up " + File(lab));
  INFO(again.out);
  REQUIRE(again.code == 0);
  if (!lock_left) CHECK(again.out.find("took over the lock") == std::string::npos);
  NoteMarks(sb);
  CHECK(sb.Lab("plan " + File(lab)).out.find("No changes.") != std::string::npos);
  Run check = sb.Lab("check " + lab);
  INFO(check.out);
  CHECK(check.code == 0);
  auto pids = InitPids(sb, lab);
  REQUIRE(sb.Lab("down " + lab).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

}  // namespace

TEST_CASE("Ctrl-C during lab up keeps the VMs made so far, says how far it got and exits 130; the next up converges",
          "[root][e2e][interrupt]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // One action at a time, stopped once the third is recorded (kill points 2 per action).
  Background up = Start(sb, {"up", File("nested-nat"), "--jobs", "1"}, {"LAB_PAUSE_AT=6"}, /*own_group=*/true);
  REQUIRE(up.WaitFor("Plan:"));
  REQUIRE(WaitStopped(up.pid));
  NoteMarks(sb);

  ::kill(-up.pid, SIGINT);  // the group we made for it: lab and whatever shares its group
  ::kill(up.pid, SIGCONT);  // ours, by pid
  const int code = up.Wait();
  INFO(up.text);
  CHECK(code == 130);
  auto made = RunningPids(sb, "nested-nat");
  CHECK(made.size() >= 2);  // hv1, middle or the network: partitions, made before the signal
  std::smatch m;
  const std::regex said(R"(lab: interrupted: (\d+) of (\d+) actions done; run 'lab up' again to continue)");
  REQUIRE(std::regex_search(up.text, m, said));
  const int done = std::stoi(m[1]), total = std::stoi(m[2]);
  // The action under way when the signal came finished; at most the one a second worker thread
  // began at the same instant with it (jobs 1: none).
  CHECK(done >= 3);
  CHECK(done < total);
  CHECK(Records(sb, "nested-nat") == static_cast<size_t>(done));
  CHECK(up.text.find("Apply complete") == std::string::npos);
  // The terminal's signal did not reach the VMs.
  CHECK(AllAlive(made));

  ContinuesAndConverges(sb, "nested-nat", /*lock_left=*/false);
}

TEST_CASE("SIGTERM during lab up stops it as Ctrl-C does", "[root][e2e][interrupt]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Background up = Start(sb, {"up", File("nested-nat"), "--jobs", "1"}, {"LAB_PAUSE_AT=4"}, /*own_group=*/true);
  REQUIRE(up.WaitFor("Plan:"));
  REQUIRE(WaitStopped(up.pid));
  NoteMarks(sb);
  ::kill(-up.pid, SIGTERM);
  ::kill(up.pid, SIGCONT);
  const int code = up.Wait();
  INFO(up.text);
  CHECK(code == 130);
  auto made = RunningPids(sb, "nested-nat");
  CHECK(std::regex_search(up.text, std::regex(R"(interrupted: \d+ of \d+ actions done; run 'lab up' again to continue)")));
  CHECK(AllAlive(made));
  ContinuesAndConverges(sb, "nested-nat", /*lock_left=*/false);
}

TEST_CASE("A second signal ends lab up at once, and the next up continues from the journal", "[root][e2e][interrupt]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // Stopped between the kernel call of the third action and its record: that action is left
  // intended in the journal.
  Background up = Start(sb, {"up", File("nested-nat"), "--jobs", "1"}, {"LAB_PAUSE_AT=5"}, /*own_group=*/true);
  REQUIRE(up.WaitFor("Plan:"));
  REQUIRE(WaitStopped(up.pid));
  NoteMarks(sb);
  // Two different signals: two of the same would be one while it is stopped.
  ::kill(-up.pid, SIGINT);
  ::kill(-up.pid, SIGTERM);
  ::kill(up.pid, SIGCONT);
  const int code = up.Wait();
  INFO(up.text);
  CHECK(code == 130);
  auto made = RunningPids(sb, "nested-nat");
  CHECK(up.text.find("lab: interrupted again: stopping now; run 'lab up' again to continue") != std::string::npos);
  CHECK(AllAlive(made));
  ContinuesAndConverges(sb, "nested-nat", /*lock_left=*/true);
}

TEST_CASE("Ctrl-C during lab down stops it with 130, and the next down removes the rest", "[root][e2e][interrupt]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + File("nested-nat")).code == 0);
  NoteMarks(sb);
  auto pids = InitPids(sb, "nested-nat");
  Background down = Start(sb, {"down", "nested-nat", "--jobs", "1"}, {"LAB_PAUSE_AT=2"}, /*own_group=*/true);
  REQUIRE(down.WaitFor("removing"));
  REQUIRE(WaitStopped(down.pid));
  ::kill(-down.pid, SIGINT);
  ::kill(down.pid, SIGCONT);
  const int code = down.Wait();
  INFO(down.text);
  CHECK(code == 130);
  CHECK(std::regex_search(down.text,
                          std::regex(R"(interrupted: \d+ of \d+ actions done; run 'lab down' again to continue)")));
  CHECK(Records(sb, "nested-nat") > 0);  // the lab is still recorded: the rest is removed next time
  Run again = sb.Lab("down nested-nat");
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("took over the lock") == std::string::npos);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}
