// Crash safety: `lab up` and `lab down` of a nested lab killed with SIGKILL at every action
// boundary in turn (LAB_KILL_AT, engine/executor.h: each action has two kill points, right after
// its kernel call and right after its record is committed), and `lab up` killed from outside at
// random moments. After each kill the next `lab up` converges (a plan after it says "No
// changes."), the lab's checks pass, and `lab down` leaves nothing.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

namespace {

const char* kLab = "nested-nat";

std::string File() { return lab::testing::Src("labs/nested-nat.yaml"); }

/// From whatever a kill left: up converges, plan has nothing left to do, the checks pass.
void Converges(const Sandbox& sb, const std::string& after) {
  INFO("after " << after);
  Run up = sb.Lab("up " + File());
  INFO(up.out);
  REQUIRE(up.code == 0);
  NoteMarks(sb);
  Run plan = sb.Lab("plan " + File());
  INFO(plan.out);
  REQUIRE(plan.out.find("No changes.") != std::string::npos);
  Run check = sb.Lab("check " + std::string(kLab));
  INFO(check.out);
  REQUIRE(check.code == 0);
}

/// `lab down` removes everything: no process, mount, cgroup, file, link or table is left.
void DownLeavesNothing(const Sandbox& sb, const std::string& after, std::vector<int> pids = {}) {
  INFO("after " << after);
  auto now = InitPids(sb, kLab);
  pids.insert(pids.end(), now.begin(), now.end());
  NoteMarks(sb);
  Run down = sb.Lab("down " + std::string(kLab));
  INFO(down.out);
  REQUIRE(down.code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  REQUIRE(left.empty());
}

}  // namespace

TEST_CASE("lab up killed at every action boundary: the next up converges, checks pass, down leaves nothing",
          "[root][e2e][crash]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  int points = 0;
  for (int n = 1;; ++n) {
    Run killed = sb.Lab("up " + File(), "LAB_KILL_AT=" + std::to_string(n));
    if (killed.code == 0) break;  // fewer kill points than n: the sweep is complete
    INFO("LAB_KILL_AT=" << n << "\n" << killed.out);
    REQUIRE(killed.code == 128 + SIGKILL);
    ++points;
    std::string after = "up killed at point " + std::to_string(n);
    Converges(sb, after);
    DownLeavesNothing(sb, after);
  }
  // nested-nat has 17 resources, two kill points each.
  CHECK(points == 34);
  DownLeavesNothing(sb, "the last, complete up");
}

TEST_CASE("lab down killed at every action boundary: the next up converges, checks pass, down leaves nothing",
          "[root][e2e][crash]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + File()).code == 0);
  int points = 0;
  for (int n = 1;; ++n) {
    auto pids = InitPids(sb, kLab);
    NoteMarks(sb);
    Run killed = sb.Lab("down " + std::string(kLab), "LAB_KILL_AT=" + std::to_string(n));
    if (killed.code == 0) {
      auto left = OwnLeftovers(sb, pids);
      INFO(lab::Join(left, "\n"));
      CHECK(left.empty());
      break;
    }
    INFO("LAB_KILL_AT=" << n << "\n" << killed.out);
    REQUIRE(killed.code == 128 + SIGKILL);
    ++points;
    std::string after = "down killed at point " + std::to_string(n);
    // Every other point the next command is `down` (it must finish what the killed one began),
    // the others `up` (it must rebuild what was half removed): both follow each kind of point.
    if (n % 4 == 1 || n % 4 == 2) {
      DownLeavesNothing(sb, after, pids);
      REQUIRE(sb.Lab("up " + File()).code == 0);
    } else {
      Converges(sb, after);
    }
  }
  // Down makes kernel calls for 6 of the 17 (4 partitions, the network, its stand-in), two kill
  // points each; the 11 links, switches, NAT and DNS settings go with the partitions that hold
  // them and are only recorded as removed afterwards (a kill before that leaves records that
  // the next run settles: removing what is gone is success).
  CHECK(points == 12);
}

TEST_CASE("lab up killed from outside at 20 random moments: the next up converges, checks pass, down leaves nothing",
          "[root][e2e][crash]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // How long a whole up takes here, so the kills fall inside it: the second one, as the kills'
  // ups are (the first also builds the base layer, which outlasts a down).
  REQUIRE(sb.Lab("up " + File()).code == 0);
  DownLeavesNothing(sb, "a first complete up");
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(sb.Lab("up " + File()).code == 0);
  int whole_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  DownLeavesNothing(sb, "a complete up");
  unsigned seed = std::random_device{}();
  if (const char* s = std::getenv("LAB_CRASH_SEED")) seed = static_cast<unsigned>(std::strtoul(s, nullptr, 10));
  WARN("random kills: LAB_CRASH_SEED=" << seed << ", up takes " << whole_ms << " ms");
  std::mt19937 rng(seed);
  // A loaded machine makes some ups faster or slower than the measured one: a kill that came
  // after the run had ended narrows the range the next delays are drawn from, so the kills keep
  // landing inside runs whatever the load.
  int upper_ms = whole_ms;
  int killed_mid_run = 0;
  for (int i = 0; i < 20; ++i) {
    int ms = std::uniform_int_distribution<int>(0, upper_ms)(rng);
    Background up = Start(sb, {"up", File()});
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    ::kill(up.pid, SIGKILL);  // ours, by pid
    int code = up.Wait();
    if (code == 128 + SIGKILL)
      ++killed_mid_run;
    else
      upper_ms = std::max(1, ms * 3 / 4);
    std::string after = "up killed from outside after " + std::to_string(ms) + " ms";
    Converges(sb, after);
    DownLeavesNothing(sb, after);
  }
  // Most kills land inside the run (a few may come after it ended).
  CHECK(killed_mid_run >= 10);
}
