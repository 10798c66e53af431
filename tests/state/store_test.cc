#include "state/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "base/text.h"
#include "tests/support.h"

using lab::state::JournalEntry;
using lab::state::LabLock;
using lab::state::LabRecord;
using lab::state::ResourceRecord;
using lab::state::Store;

namespace {

// A state dir removed at the end of the test.
struct StateDir {
  std::string path = lab::testing::TempDir("lab-state");
  ~StateDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string Db() const { return path + "/state.db"; }
};

std::unique_ptr<Store> OpenOrFail(const std::string& dir) {
  auto store = Store::Open(dir);
  INFO(store.message());
  REQUIRE(store);
  return std::move(store).value();
}

ResourceRecord Resource(const std::string& key, const std::string& spec_hash = "h1") {
  ResourceRecord r;
  r.kind = "partition";
  r.key = key;
  r.parent = "network/lab0";
  r.spec_hash = spec_hash;
  r.spec = R"({"name":")" + key + R"("})";
  r.facts = R"({"pid":42})";
  return r;
}

void PutLab(Store& store, const std::string& name) {
  REQUIRE(store.PutLab(LabRecord{name, "", "/labs/" + name + ".yaml"}).ok());
}

// Runs SQL on the database through a connection of its own, as another program would.
void Sql(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  const std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  INFO(msg);
  REQUIRE(rc == SQLITE_OK);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

const std::regex kLockedMessage(R"(lab '(\w+)' is locked by pid (\d+) \(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\))");

}  // namespace

TEST_CASE("Opening a missing state dir creates it private, with the database in WAL mode", "[state]") {
  StateDir dir;
  const std::string nested = dir.path + "/var/lib/lab";
  auto store = OpenOrFail(nested);
  struct stat st {};
  REQUIRE(::stat(nested.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);
  CHECK(Exists(nested + "/state.db"));
  CHECK(Exists(nested + "/state.db-wal"));
  CHECK(store->schema_version() == Store::kSchemaVersion);
}

TEST_CASE("Reopening the store keeps what was recorded", "[state]") {
  StateDir dir;
  {
    auto store = OpenOrFail(dir.path);
    PutLab(*store, "alpha");
    auto id = store->BeginAction("alpha", "create", "partition/middle", "new");
    REQUIRE(id);
    REQUIRE(store->CommitAction(*id, "alpha", Resource("partition/middle"), "").ok());
  }
  auto store = OpenOrFail(dir.path);
  auto snap = store->Load("alpha");
  REQUIRE(snap);
  REQUIRE(snap->lab);
  CHECK(snap->lab->file == "/labs/alpha.yaml");
  REQUIRE(snap->resources.count("partition/middle") == 1);
  CHECK(snap->resources["partition/middle"].facts == R"({"pid":42})");
  CHECK(store->Journal("alpha").size() == 1);
}

TEST_CASE("A lab record round-trips and keeps its uid and creation time on update", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  REQUIRE(store->PutLab(LabRecord{"alpha", "", "/labs/a.yaml", 1000, 1000}).ok());
  auto first = store->Load("alpha");
  REQUIRE(first);
  REQUIRE(first->lab);
  CHECK(std::regex_match(first->lab->uid, std::regex("[0-9a-f]{12}")));
  CHECK(first->lab->created == 1000);

  REQUIRE(store->PutLab(LabRecord{"alpha", "ffffffffffff", "/labs/b.yaml", 2000, 2000}).ok());
  auto second = store->Load("alpha");
  REQUIRE(second);
  REQUIRE(second->lab);
  CHECK(second->lab->uid == first->lab->uid);
  CHECK(second->lab->created == 1000);
  CHECK(second->lab->file == "/labs/b.yaml");
  CHECK(second->lab->updated == 2000);

  REQUIRE(store->PutLab(LabRecord{"beta", "0123456789ab", "/labs/c.yaml"}).ok());
  auto labs = store->ListLabs();
  REQUIRE(labs.size() == 2);
  CHECK(labs[0].name == "alpha");
  CHECK(labs[1].uid == "0123456789ab");
  CHECK(labs[1].created > 0);
}

TEST_CASE("Loading an unknown lab gives an empty snapshot", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  auto snap = store->Load("nowhere");
  REQUIRE(snap);
  CHECK_FALSE(snap->lab);
  CHECK(snap->resources.empty());
}

TEST_CASE("Committing an action writes the resource, and a later one erases it", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");

  auto create = store->BeginAction("alpha", "create", "partition/middle", "not recorded");
  REQUIRE(create);
  CHECK(store->Journal("alpha").front().status == "intended");
  CHECK(store->Load("alpha")->resources.empty());
  REQUIRE(store->CommitAction(*create, "alpha", Resource("partition/middle"), "").ok());
  auto snap = store->Load("alpha");
  REQUIRE(snap->resources.size() == 1);
  const ResourceRecord& r = snap->resources.at("partition/middle");
  CHECK(r.kind == "partition");
  CHECK(r.parent == "network/lab0");
  CHECK(r.spec_hash == "h1");
  CHECK(r.updated > 0);

  auto update = store->BeginAction("alpha", "update", "partition/middle", "memory changed");
  REQUIRE(update);
  REQUIRE(store->CommitAction(*update, "alpha", Resource("partition/middle", "h2"), "").ok());
  CHECK(store->Load("alpha")->resources.at("partition/middle").spec_hash == "h2");

  auto remove = store->BeginAction("alpha", "delete", "partition/middle", "not in the file");
  REQUIRE(remove);
  REQUIRE(store->CommitAction(*remove, "alpha", std::nullopt, "partition/middle").ok());
  CHECK(store->Load("alpha")->resources.empty());

  const auto journal = store->Journal("alpha");
  REQUIRE(journal.size() == 3);
  for (const JournalEntry& e : journal) {
    CHECK(e.status == "done");
    CHECK(e.finished >= e.started);
  }
}

TEST_CASE("Removals recorded together are journaled as done and erase only their records, of their lab",
          "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  PutLab(*store, "beta");
  for (const char* key : {"adapter/vm1/eth0", "adapter/vm2/eth0", "partition/vm1"}) {
    auto id = store->BeginAction("alpha", "create", key, "not recorded");
    REQUIRE(id);
    REQUIRE(store->CommitAction(*id, "alpha", Resource(key), "").ok());
  }
  auto other = store->BeginAction("beta", "create", "adapter/vm1/eth0", "not recorded");
  REQUIRE(other);
  REQUIRE(store->CommitAction(*other, "beta", Resource("adapter/vm1/eth0"), "").ok());

  REQUIRE(store->RecordRemoved("alpha", {{"adapter/vm1/eth0", "removed with partition/vm1"},
                                         {"adapter/vm2/eth0", "removed with partition/vm2"}})
              .ok());
  auto snap = store->Load("alpha");
  CHECK(snap->resources.size() == 1);
  CHECK(snap->resources.count("partition/vm1") == 1);
  CHECK(store->Load("beta")->resources.count("adapter/vm1/eth0") == 1);
  const auto journal = store->Journal("alpha", 2);
  REQUIRE(journal.size() == 2);
  for (const JournalEntry& e : journal) {
    CHECK(e.action == "delete");
    CHECK(e.status == "done");
    CHECK(e.reason.rfind("removed with partition/", 0) == 0);
  }
  CHECK(store->RecordRemoved("alpha", {}).ok());
}

TEST_CASE("Committing an action that was never begun fails and changes nothing", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  CHECK_FALSE(store->CommitAction(12345, "alpha", Resource("partition/x"), "").ok());
  CHECK(store->Load("alpha")->resources.empty());
}

TEST_CASE("A resource of an unrecorded lab is refused and its action stays intended", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  auto id = store->BeginAction("ghost", "create", "partition/x", "");
  REQUIRE(id);
  lab::Status s = store->CommitAction(*id, "ghost", Resource("partition/x"), "");
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains("lab 'ghost' is not recorded"));
  CHECK(store->Journal("ghost").front().status == "intended");
}

TEST_CASE("A failed action records its error and leaves the resource as it was", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  auto create = store->BeginAction("alpha", "create", "partition/middle", "");
  REQUIRE(create);
  REQUIRE(store->CommitAction(*create, "alpha", Resource("partition/middle"), "").ok());

  auto update = store->BeginAction("alpha", "update", "partition/middle", "memory changed");
  REQUIRE(update);
  REQUIRE(store->FailAction(*update, "VM 'middle': cgroup memory.max: Device or resource busy").ok());
  CHECK(store->Load("alpha")->resources.at("partition/middle").spec_hash == "h1");

  const auto journal = store->Journal("alpha");
  REQUIRE(journal.size() == 2);
  CHECK(journal[0].id == *update);
  CHECK(journal[0].status == "failed");
  CHECK(journal[0].error == "VM 'middle': cgroup memory.max: Device or resource busy");
  CHECK(journal[0].finished >= journal[0].started);
  CHECK(journal[1].status == "done");
  CHECK_FALSE(store->FailAction(999999, "nope").ok());
}

TEST_CASE("The journal lists a lab's actions newest first, up to the limit", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto id = store->BeginAction("alpha", "create", "switch/s" + std::to_string(i), "reason " + std::to_string(i));
    REQUIRE(id);
    ids.push_back(*id);
  }
  REQUIRE(store->CommitAction(ids[0], "alpha", Resource("switch/s0"), "").ok());
  REQUIRE(store->FailAction(ids[1], "boom").ok());
  auto other = store->BeginAction("beta", "create", "switch/x", "");
  REQUIRE(other);

  const auto journal = store->Journal("alpha");
  REQUIRE(journal.size() == 5);
  for (size_t i = 0; i < journal.size(); ++i) CHECK(journal[i].id == ids[4 - i]);
  CHECK(journal[4].status == "done");
  CHECK(journal[3].status == "failed");
  CHECK(journal[2].status == "intended");
  CHECK(journal[2].reason == "reason 2");
  CHECK(journal[2].lab == "alpha");
  CHECK(journal[2].action == "create");
  CHECK(journal[2].key == "switch/s2");
  CHECK(journal[2].finished == 0);
  CHECK(store->Journal("alpha", 2).size() == 2);
}

TEST_CASE("Taking a lab's lock twice in one process fails with who holds it", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  auto lock = store->Lock("alpha");
  REQUIRE(lock);
  CHECK(lock->takeover_note().empty());
  auto again = store->Lock("alpha");
  REQUIRE_FALSE(again);
  std::smatch m;
  const std::string msg = again.message();
  REQUIRE(std::regex_match(msg, m, kLockedMessage));
  CHECK(m[1] == "alpha");
  CHECK(m[2] == std::to_string(::getpid()));

  // Another lab is independent, and releasing the lock frees the lab.
  CHECK(store->Lock("beta"));
  { LabLock released = std::move(lock).value(); }
  CHECK(store->Lock("alpha"));
}

TEST_CASE("A moved lock is released once, by its last owner", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  auto taken = store->Lock("alpha");
  REQUIRE(taken);
  LabLock outer;
  {
    LabLock inner = std::move(taken).value();
    outer = std::move(inner);
  }
  CHECK_FALSE(store->Lock("alpha"));
  outer = LabLock();
  CHECK(store->Lock("alpha"));
}

TEST_CASE("A lock left by a process that is gone is taken over with a note", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  Sql(dir.Db(), "INSERT INTO locks(lab, pid, start_time, since) VALUES ('alpha', " + std::to_string(child) +
                    ", 12345, 0)");

  auto lock = store->Lock("alpha");
  INFO(lock.message());
  REQUIRE(lock);
  CHECK(lock->takeover_note() == "took over the lock of lab 'alpha' left by pid " + std::to_string(child) +
                                     ", which is no longer running");
  // The lock is now ours.
  auto again = store->Lock("alpha");
  REQUIRE_FALSE(again);
  CHECK_THAT(again.message(), Catch::Contains("locked by pid " + std::to_string(::getpid())));
}

TEST_CASE("A lock whose pid now belongs to another process is taken over", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  // Our own pid with a start time that is not ours: the recorded holder died and the pid was reused.
  Sql(dir.Db(), "INSERT INTO locks(lab, pid, start_time, since) VALUES ('alpha', " + std::to_string(::getpid()) +
                    ", 1, 0)");
  auto lock = store->Lock("alpha");
  REQUIRE(lock);
  CHECK_THAT(lock->takeover_note(), Catch::Contains("which is no longer running"));
}

TEST_CASE("A lock held by another live process makes Lock fail at once", "[state]") {
  StateDir dir;
  int ready[2];
  int release[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(release) == 0);
  // Fork before this process opens the database: SQLite connections must not cross a fork.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(ready[0]);
    ::close(release[1]);
    char c = 'e';
    int code = 1;
    {
      auto store = Store::Open(dir.path);
      if (store) {
        auto lock = (*store)->Lock("alpha");
        if (lock) {
          c = 'r';
          code = 0;
        }
        (void)!::write(ready[1], &c, 1);
        (void)!::read(release[0], &c, 1);
      } else {
        (void)!::write(ready[1], &c, 1);
      }
    }
    ::_exit(code);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char c = 0;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  REQUIRE(c == 'r');

  auto store = OpenOrFail(dir.path);
  const auto start = std::chrono::steady_clock::now();
  auto lock = store->Lock("alpha");
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed < std::chrono::seconds(1));
  REQUIRE_FALSE(lock);
  std::smatch m;
  const std::string msg = lock.message();
  REQUIRE(std::regex_match(msg, m, kLockedMessage));
  CHECK(m[2] == std::to_string(child));

  // The child releases its lock on the way out; then the lab is free, with no takeover.
  REQUIRE(::write(release[1], "x", 1) == 1);
  int wstatus = 0;
  REQUIRE(::waitpid(child, &wstatus, 0) == child);
  CHECK(WIFEXITED(wstatus));
  CHECK(WEXITSTATUS(wstatus) == 0);
  auto after = store->Lock("alpha");
  REQUIRE(after);
  CHECK(after->takeover_note().empty());
  ::close(ready[0]);
  ::close(release[1]);
}

TEST_CASE("A file that is not a database is reported by name and left alone", "[state]") {
  StateDir dir;
  std::string garbage;
  for (int i = 0; i < 100; ++i) garbage += "this is not an SQLite database, just garbage\n";
  REQUIRE(lab::WriteFileAtomic(dir.Db(), garbage));

  auto store = Store::Open(dir.path);
  REQUIRE_FALSE(store);
  CHECK_THAT(store.message(), Catch::Contains(dir.Db()));
  CHECK_THAT(store.message(), Catch::Contains("move it away"));
  CHECK_THAT(store.message(), Catch::Contains("lab down LAB"));
  CHECK(lab::ReadFile(dir.Db()) == garbage);
}

TEST_CASE("A database from a newer lab is refused with a request to upgrade", "[state]") {
  StateDir dir;
  { auto store = OpenOrFail(dir.path); }
  Sql(dir.Db(), "UPDATE schema_version SET version = " + std::to_string(Store::kSchemaVersion + 1));
  auto store = Store::Open(dir.path);
  REQUIRE_FALSE(store);
  CHECK_THAT(store.message(), Catch::Contains(dir.Db()));
  CHECK_THAT(store.message(), Catch::Contains("upgrade lab"));
}

TEST_CASE("Actions committed from four threads at once are all recorded", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  constexpr int kThreads = 4;
  constexpr int kActions = 200;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kActions; ++i) {
        const std::string key = "adapter/t" + std::to_string(t) + "-" + std::to_string(i);
        auto id = store->BeginAction("alpha", "create", key, "");
        if (!id || !store->CommitAction(*id, "alpha", Resource(key), "").ok()) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) CHECK(f == 0);
  CHECK(store->Load("alpha")->resources.size() == kThreads * kActions);
  const auto journal = store->Journal("alpha", kThreads * kActions + 10);
  REQUIRE(journal.size() == kThreads * kActions);
  for (const auto& e : journal) CHECK(e.status == "done");
}

TEST_CASE("Deleting a lab removes its resources, journal and lock and nothing of another lab", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  for (const char* name : {"alpha", "beta"}) {
    PutLab(*store, name);
    auto id = store->BeginAction(name, "create", "partition/p", "");
    REQUIRE(id);
    REQUIRE(store->CommitAction(*id, name, Resource("partition/p"), "").ok());
  }
  auto alpha_lock = store->Lock("alpha");
  auto beta_lock = store->Lock("beta");
  REQUIRE(alpha_lock);
  REQUIRE(beta_lock);

  REQUIRE(store->DeleteLab("alpha").ok());
  auto alpha = store->Load("alpha");
  REQUIRE(alpha);
  CHECK_FALSE(alpha->lab);
  CHECK(alpha->resources.empty());
  CHECK(store->Journal("alpha").empty());
  CHECK(store->Lock("alpha"));  // the lock row went with the lab

  auto beta = store->Load("beta");
  REQUIRE(beta);
  CHECK(beta->lab);
  CHECK(beta->resources.size() == 1);
  CHECK(store->Journal("beta").size() == 1);
  CHECK_FALSE(store->Lock("beta"));
  REQUIRE(store->ListLabs().size() == 1);
  CHECK(store->DeleteLab("nowhere").ok());
}

TEST_CASE("NowMillis is the wall clock in milliseconds", "[state]") {
  const int64_t now = lab::state::NowMillis();
  const int64_t secs = static_cast<int64_t>(::time(nullptr));
  CHECK(now / 1000 >= secs - 1);
  CHECK(now / 1000 <= secs + 1);
}

TEST_CASE("Placements from lab move are recorded per lab, replaced, forgotten, and go with the lab", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  PutLab(*store, "alpha");
  PutLab(*store, "beta");
  REQUIRE(store->SetPlacement("alpha", "web", "hv2").ok());
  REQUIRE(store->SetPlacement("alpha", "db", "hv2").ok());
  REQUIRE(store->SetPlacement("beta", "web", "hv9").ok());
  REQUIRE(store->SetPlacement("alpha", "web", "hv3").ok());  // moved again
  auto a = store->Load("alpha");
  REQUIRE(a);
  CHECK(a->placements == std::map<std::string, std::string>{{"db", "hv2"}, {"web", "hv3"}});
  REQUIRE(store->SetPlacement("alpha", "db", "").ok());  // moved back where the file puts it
  CHECK(store->Load("alpha")->placements == std::map<std::string, std::string>{{"web", "hv3"}});
  // A placement belongs to a recorded lab.
  CHECK_FALSE(store->SetPlacement("gamma", "web", "hv2").ok());
  REQUIRE(store->DeleteLab("alpha").ok());
  CHECK(store->Load("alpha")->placements.empty());
  CHECK(store->Load("beta")->placements == std::map<std::string, std::string>{{"web", "hv9"}});
}

TEST_CASE("A version-1 database is migrated forward with its labs kept", "[state]") {
  StateDir dir;
  {
    auto store = OpenOrFail(dir.path);
    PutLab(*store, "alpha");
  }
  // What a version-1 store looked like: no placements, no stopped VMs, no lab file text, no images.
  Sql(dir.Db(), "DROP TABLE placements; DROP TABLE stopped; DROP TABLE image_uses; ALTER TABLE labs DROP COLUMN source; "
                "UPDATE schema_version SET version = 1");
  auto store = OpenOrFail(dir.path);
  CHECK(store->schema_version() == Store::kSchemaVersion);
  CHECK(store->Load("alpha")->lab.has_value());
  CHECK(store->Load("alpha")->lab->source.empty());
  REQUIRE(store->SetPlacement("alpha", "web", "hv2").ok());
  CHECK(store->Load("alpha")->placements.size() == 1);
  REQUIRE(store->SetStopped("alpha", "web", true).ok());
  CHECK(store->Load("alpha")->stopped == std::set<std::string>{"web"});
}

TEST_CASE("A lab keeps the text of its file and the VMs the user stopped until it goes down", "[state]") {
  StateDir dir;
  auto store = OpenOrFail(dir.path);
  REQUIRE(store->PutLab(LabRecord{"alpha", "", "/labs/a.yaml", 0, 0, "lab: alpha\n"}).ok());
  REQUIRE(store->PutLab(LabRecord{"beta", "", "/labs/b.yaml", 0, 0, "lab: beta\n"}).ok());
  CHECK(store->Load("alpha")->lab->source == "lab: alpha\n");
  // A later up records the file as applied then.
  REQUIRE(store->PutLab(LabRecord{"alpha", "", "/labs/a.yaml", 0, 0, "lab: alpha\n# edited\n"}).ok());
  CHECK(store->Load("alpha")->lab->source == "lab: alpha\n# edited\n");

  REQUIRE(store->SetStopped("alpha", "nested1", true).ok());
  REQUIRE(store->SetStopped("alpha", "nested1", true).ok());  // twice is once
  REQUIRE(store->SetStopped("alpha", "middle", true).ok());
  REQUIRE(store->SetStopped("beta", "web", true).ok());
  CHECK(store->Load("alpha")->stopped == std::set<std::string>{"middle", "nested1"});
  REQUIRE(store->SetStopped("alpha", "middle", false).ok());  // lab start
  CHECK(store->Load("alpha")->stopped == std::set<std::string>{"nested1"});
  CHECK_FALSE(store->SetStopped("gamma", "web", true).ok());  // only of a recorded lab
  REQUIRE(store->DeleteLab("alpha").ok());
  CHECK(store->Load("alpha")->stopped.empty());
  CHECK(store->Load("beta")->stopped == std::set<std::string>{"web"});
}

TEST_CASE("Processes opening a new state database at the same moment all get in", "[state]") {
  // Each open switches the file to WAL mode, which may need the file's exclusive lock; SQLite
  // answers a busy lock there at once instead of waiting, so Open must wait itself.
  constexpr int kRounds = 10;
  constexpr int kProcesses = 6;
  int failed = 0;
  for (int round = 0; round < kRounds; ++round) {
    StateDir dir;
    std::vector<pid_t> children;
    // The children start together: each blocks reading the pipe until the parent closes it.
    int gate[2];
    REQUIRE(::pipe(gate) == 0);
    for (int p = 0; p < kProcesses; ++p) {
      const pid_t child = ::fork();
      REQUIRE(child >= 0);
      if (child == 0) {
        ::close(gate[1]);
        char byte;
        (void)!::read(gate[0], &byte, 1);
        // Open, write and close again and again: the last connection to close checkpoints and
        // removes the WAL, under the exclusive lock, while the others open.
        for (int again = 0; again < 10; ++again) {
          auto store = Store::Open(dir.path);
          if (!store) {
            ::fprintf(stderr, "%s\n", store.message().c_str());
            ::_exit(1);
          }
          if (!(*store)->PutLab(LabRecord{"lab" + std::to_string(p), "", "/labs/x.yaml"}).ok()) ::_exit(2);
        }
        ::_exit(0);
      }
      children.push_back(child);
    }
    ::close(gate[0]);
    ::close(gate[1]);
    for (pid_t child : children) {
      int status = 0;
      REQUIRE(::waitpid(child, &status, 0) == child);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }
    auto store = OpenOrFail(dir.path);
    for (int p = 0; p < kProcesses; ++p) CHECK(store->Load("lab" + std::to_string(p))->lab.has_value());
  }
  CHECK(failed == 0);
}

TEST_CASE("An action begun with a pending record journals both in one step, and a failed make erases the record",
          "[state]") {
  StateDir dir;
  auto store = Store::Open(dir.path).value();
  REQUIRE(store->PutLab(LabRecord{"alpha", "0123456789ab", "/labs/a.yaml"}).ok());
  ResourceRecord pending{"partition", "partition/web", "", "hash1", "{}", "{\"pending\":true}", 0};
  auto id = store->BeginAction("alpha", "create", "partition/web", "new", &pending);
  REQUIRE(id.ok());
  auto snap = store->Load("alpha").value();
  REQUIRE(snap.resources.count("partition/web") == 1);
  CHECK(snap.resources.at("partition/web").facts == "{\"pending\":true}");
  auto intended = store->Intended("alpha");
  REQUIRE(intended.size() == 1);
  CHECK(intended[0].id == *id);
  CHECK(intended[0].key == "partition/web");

  // A record with other facts than the pending ones is not erased; the pending one is.
  CHECK(store->ErasePending("alpha", "partition/web", "{\"pid\":1}").ok());
  CHECK(store->Load("alpha").value().resources.count("partition/web") == 1);
  CHECK(store->ErasePending("alpha", "partition/web", "{\"pending\":true}").ok());
  CHECK(store->Load("alpha").value().resources.count("partition/web") == 0);
  REQUIRE(store->FailAction(*id, "refused").ok());
  CHECK(store->Intended("alpha").empty());
}

TEST_CASE("A read-only open creates nothing where there is no state, and reads the labs where there is", "[state]") {
  StateDir dir;
  const std::string absent = dir.path + "/absent";
  auto empty = Store::OpenReadOnly(absent);
  INFO(empty.message());
  REQUIRE(empty);
  CHECK((*empty)->ListLabs().empty());
  auto snap = (*empty)->Load("alpha");
  REQUIRE(snap);
  CHECK_FALSE(snap->lab);
  CHECK_FALSE(std::filesystem::exists(absent));

  {
    auto store = OpenOrFail(dir.path);
    REQUIRE(store->PutLab(LabRecord{"alpha", "0123456789ab", "/labs/a.yaml"}).ok());
  }
  auto ro = Store::OpenReadOnly(dir.path);
  INFO(ro.message());
  REQUIRE(ro);
  auto labs = (*ro)->ListLabs();
  REQUIRE(labs.size() == 1);
  CHECK(labs[0].uid == "0123456789ab");
  // Nothing is written through it.
  CHECK_FALSE((*ro)->PutLab(LabRecord{"beta", "ffffffffffff", "/labs/b.yaml"}).ok());

  // A file that is not a database: an error naming it.
  StateDir bad;
  { std::ofstream(bad.Db()) << std::string(200, 'x'); }
  auto broken = Store::OpenReadOnly(bad.path);
  REQUIRE_FALSE(broken);
  CHECK(broken.message().find(bad.Db()) != std::string::npos);
}

TEST_CASE("Store records which images a lab uses and forgets them with the lab", "[state][images]") {
  StateDir dir;
  auto store = Store::Open(dir.path);
  REQUIRE(store.ok());
  lab::state::LabRecord rec;
  rec.name = "one";
  rec.file = "/x.yaml";
  REQUIRE((*store)->PutLab(rec).ok());
  REQUIRE((*store)->SetImageUses("one", {{"one", std::string(64, 'a'), "web", 0}, {"one", std::string(64, 'b'), "tools", 0}}).ok());
  REQUIRE((*store)->SetImageUses("one", {{"one", std::string(64, 'a'), "web", 0}}).ok());
  auto uses = (*store)->ImageUses();
  REQUIRE(uses.size() == 1);
  CHECK(uses[0].lab == "one");
  CHECK(uses[0].image == "web");
  CHECK(uses[0].since > 0);
  REQUIRE((*store)->DeleteLab("one").ok());
  CHECK((*store)->ImageUses().empty());
}
