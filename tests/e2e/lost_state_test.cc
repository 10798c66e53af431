// Lost state: with the state database deleted or corrupt, `lab down LAB` still removes all of
// that lab, found by its ownership marks, and nothing of a second lab that is up; a corrupt
// database is reported by name, never crashed on.
#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <filesystem>

#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;
namespace fs = std::filesystem;

namespace {

std::string File(const std::string& lab) { return lab::testing::Src("labs/" + lab + ".yaml"); }

struct TwoLabs {
  Sandbox sb;
  std::vector<int> nat, hosts;  // init pids of each lab
  TwoLabs() {
    REQUIRE(sb.Lab("up " + File("nested-nat")).code == 0);
    REQUIRE(sb.Lab("up " + File("two-hosts")).code == 0);
    NoteMarks(sb);
    nat = InitPids(sb, "nested-nat");
    hosts = InitPids(sb, "two-hosts");
    REQUIRE(AllAlive(nat));
    REQUIRE(AllAlive(hosts));
  }
  /// Takes `lab` down by its marks and checks that its every process is gone and the other
  /// lab's all run, with its directories in place.
  void DownByMarks(const std::string& lab, const std::vector<int>& gone, const std::vector<int>& kept,
                   const std::string& kept_lab) {
    Run down = sb.Lab("down " + lab);
    INFO(down.out);
    REQUIRE(down.code == 0);
    CHECK(down.out.find("removed by its ownership mark " + lab + "-") != std::string::npos);
    for (int pid : gone) CHECK(ProcessGone(pid));
    CHECK(MachineRun(sb, lab, "x").empty());
    if (kept_lab.empty()) return;
    CHECK(AllAlive(kept));
    CHECK(!MachineRun(sb, kept_lab, "x").empty());
  }
  void AllGone() {
    std::vector<int> all = nat;
    all.insert(all.end(), hosts.begin(), hosts.end());
    auto left = OwnLeftovers(sb, all);
    INFO(lab::Join(left, "\n"));
    CHECK(left.empty());
  }
};

}  // namespace

TEST_CASE("With the state database deleted, down removes a lab by its marks and leaves another lab up",
          "[root][e2e][lost-state]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  TwoLabs t;
  for (const char* f : {"state.db", "state.db-wal", "state.db-shm"}) fs::remove(t.sb.state + "/" + f);
  t.DownByMarks("nested-nat", t.nat, t.hosts, "two-hosts");
  t.DownByMarks("two-hosts", t.hosts, {}, "");
  t.AllGone();
}

TEST_CASE("A corrupt state database is reported by name, and down still removes a lab by its marks",
          "[root][e2e][lost-state]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  TwoLabs t;
  for (const char* f : {"state.db-wal", "state.db-shm"}) fs::remove(t.sb.state + "/" + f);
  REQUIRE(lab::WriteFileAtomic(t.sb.state + "/state.db", std::string(8192, 'x')));

  Run status = t.sb.Lab("status nested-nat");
  INFO(status.out);
  CHECK(status.code == 1);  // an error, not a crash (which would be 128+signal)
  CHECK(status.out.find(t.sb.state + "/state.db") != std::string::npos);
  Run up = t.sb.Lab("up " + File("nested-nat"));
  CHECK(up.code == 1);
  CHECK(AllAlive(t.nat));  // a failed up changes nothing

  t.DownByMarks("nested-nat", t.nat, t.hosts, "two-hosts");
  t.DownByMarks("two-hosts", t.hosts, {}, "");
  // The corrupt file is left for its owner to look at, never silently replaced.
  CHECK(lab::ReadFile(t.sb.state + "/state.db").value_or("") == std::string(8192, 'x'));
  t.AllGone();
}

TEST_CASE("A VM whose record was lost is still removed by down, found by the lab's mark",
          "[root][e2e][lost-state]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + File("nested-nat")).code == 0);
  NoteMarks(sb);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(AllAlive(pids));
  // As if a killed run had made nested2 without noting it: its records are gone, it runs.
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((sb.state + "/state.db").c_str(), &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "DELETE FROM resources WHERE key LIKE '%nested2%'", nullptr, nullptr, nullptr) == SQLITE_OK);
  CHECK(sqlite3_changes(db) > 0);
  sqlite3_close(db);

  Run down = sb.Lab("down nested-nat");
  INFO(down.out);
  CHECK(down.code == 0);
  CHECK(down.out.find("removed by its ownership mark nested-nat-") != std::string::npos);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}
