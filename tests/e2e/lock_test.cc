// Locking: while `lab up` runs, a second `up` or `down` of the same lab exits 1 at once with
// "lab 'NAME' is locked by pid N (since TIME)"; a lock left by a killed lab is taken over with a
// warning; two different labs come up side by side and both pass their checks.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <regex>

#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

namespace {
std::string File(const std::string& lab) { return lab::testing::Src("labs/" + lab + ".yaml"); }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}
}  // namespace

TEST_CASE("A second up or down of a lab while up runs exits 1 within a second, naming the holder",
          "[root][e2e][lock]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // Held for as long as the test wants: the first up stops itself once its first action is
  // recorded (LAB_PAUSE_AT, a kill point of the executor), with the lock held, and is continued
  // after the second commands have been refused. An up here takes well under a second, too
  // short a window to aim at from outside.
  Background first = Start(sb, {"up", File("nested-nat")}, {"LAB_PAUSE_AT=2"});
  // The plan is printed once the lock is held, before anything is made.
  REQUIRE(first.WaitFor("Plan:"));
  REQUIRE(WaitStopped(first.pid));
  const std::regex locked("lab 'nested-nat' is locked by pid " + std::to_string(first.pid) +
                          R"( \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\))");
  for (const std::string& second : {"up " + File("nested-nat"), std::string("down nested-nat")}) {
    auto t0 = std::chrono::steady_clock::now();
    Run r = sb.Lab(second);
    double took = Seconds(t0);
    INFO(second << "\n" << r.out);
    CHECK(r.code == 1);
    CHECK(std::regex_search(r.out, locked));
    CHECK(took < 1.0);
  }
  ::kill(first.pid, SIGCONT);  // ours, by pid
  INFO(first.text);
  REQUIRE(first.Wait() == 0);
  NoteMarks(sb);
  // Exactly one proceeded: the lab is whole and checks pass.
  CHECK(sb.Lab("plan " + File("nested-nat")).out.find("No changes.") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 0);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("A lock left by a killed lab is taken over with a warning", "[root][e2e][lock]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Background killed = Start(sb, {"up", File("nested-nat")});
  REQUIRE(killed.WaitFor("Plan:"));
  ::kill(killed.pid, SIGKILL);  // ours, by pid, while it holds the lock
  REQUIRE(killed.Wait() == 128 + SIGKILL);
  Run up = sb.Lab("up " + File("nested-nat"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  NoteMarks(sb);
  CHECK(up.out.find("warning: took over the lock of lab 'nested-nat' left by pid " + std::to_string(killed.pid)) !=
        std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 0);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

TEST_CASE("Two different labs come up at the same time and both pass their checks", "[root][e2e][lock]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Background a = Start(sb, {"up", File("nested-nat")});
  Background b = Start(sb, {"up", File("two-hosts")});
  int ca = a.Wait(), cb = b.Wait();
  INFO(a.text << "\n" << b.text);
  REQUIRE(ca == 0);
  REQUIRE(cb == 0);
  NoteMarks(sb);
  CHECK(a.text.find("locked") == std::string::npos);
  CHECK(b.text.find("locked") == std::string::npos);
  Run check_a = sb.Lab("check nested-nat");
  Run check_b = sb.Lab("check two-hosts");
  INFO(check_a.out << "\n" << check_b.out);
  CHECK(check_a.code == 0);
  CHECK(check_b.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  auto more = InitPids(sb, "two-hosts");
  pids.insert(pids.end(), more.begin(), more.end());
  Background da = Start(sb, {"down", "nested-nat"});
  Background db = Start(sb, {"down", "two-hosts"});
  CHECK(da.Wait() == 0);
  CHECK(db.Wait() == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}
