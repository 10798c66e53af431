// The lab state store on SQLite (see store.h for the contract).
//
// One connection per Store, guarded by one mutex: every public method takes it, so calls from
// several threads are serialized and prepared statements can be cached on the connection.
// Writes that touch more than one row run in BEGIN IMMEDIATE transactions: the write lock is
// taken up front, so a transaction never fails halfway on SQLITE_BUSY (busy_timeout waits for
// another process instead). The database runs in WAL mode with synchronous=NORMAL: a commit is
// an append to the WAL, fsynced at checkpoints only; a power loss may lose the last commits but
// never leaves half of one.
#include "state/store.h"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string_view>
#include <utility>

#include "base/proc.h"
#include "base/text.h"

namespace lab::state {
namespace {

constexpr const char* kDbFile = "state.db";

// kMigrations[v] brings a database from schema version v to v + 1, in one transaction.
// Forward only: a released step is never edited; a schema change is a new step.
constexpr std::array<const char*, Store::kSchemaVersion> kMigrations = {
    // 0 -> 1: the initial schema.
    R"sql(
      CREATE TABLE schema_version(version INTEGER NOT NULL);
      CREATE TABLE labs(
        name TEXT PRIMARY KEY,
        uid TEXT NOT NULL,
        file TEXT NOT NULL,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL);
      CREATE TABLE resources(
        lab TEXT NOT NULL REFERENCES labs(name) ON DELETE CASCADE,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        parent TEXT NOT NULL,
        spec_hash TEXT NOT NULL,
        spec TEXT NOT NULL,
        facts TEXT NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY(lab, key));
      CREATE TABLE journal(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lab TEXT NOT NULL,
        action TEXT NOT NULL,
        key TEXT NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL CHECK(status IN ('intended', 'done', 'failed')),
        error TEXT NOT NULL DEFAULT '',
        started INTEGER NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0);
      CREATE INDEX journal_by_lab ON journal(lab, id);
      CREATE TABLE locks(
        lab TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        start_time INTEGER NOT NULL,
        since INTEGER NOT NULL);
    )sql",
    // 1 -> 2: where `lab move` put a VM, over the lab file's placement.
    R"sql(
      CREATE TABLE placements(
        lab TEXT NOT NULL REFERENCES labs(name) ON DELETE CASCADE,
        machine TEXT NOT NULL,
        host TEXT NOT NULL,
        PRIMARY KEY(lab, machine));
    )sql",
    // 2 -> 3: the lab file's text as last applied (the records drive the lifecycle verbs and
    // `lab check` when the file moved or no longer parses), and the VMs the user stopped.
    R"sql(
      ALTER TABLE labs ADD COLUMN source TEXT NOT NULL DEFAULT '';
      CREATE TABLE stopped(
        lab TEXT NOT NULL REFERENCES labs(name) ON DELETE CASCADE,
        machine TEXT NOT NULL,
        PRIMARY KEY(lab, machine));
    )sql",
    // 3 -> 4: which labs run on which cached images (lab image rm refuses an image in use).
    R"sql(
      CREATE TABLE image_uses(
        lab TEXT NOT NULL REFERENCES labs(name) ON DELETE CASCADE,
        key TEXT NOT NULL,
        image TEXT NOT NULL,
        since INTEGER NOT NULL,
        PRIMARY KEY(lab, key));
    )sql",
};

int64_t NowSeconds() { return NowMillis() / 1000; }

// "YYYY-MM-DD HH:MM:SS" in local time.
std::string LocalTime(int64_t millis) {
  const time_t t = static_cast<time_t>(millis / 1000);
  struct tm tm {};
  if (!::localtime_r(&t, &tm)) return std::to_string(millis / 1000);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// The start time (field 22 of /proc/PID/stat, clock ticks since boot): with the pid it names one
// process for the life of the machine, so a recycled pid is not mistaken for a holder.
std::optional<int64_t> ProcessStartTime(pid_t pid) {
  ProcStat st = ReadProcStat(pid);
  if (!st.found) return std::nullopt;
  return static_cast<int64_t>(st.start_time);
}

// Whether the process that recorded (pid, start_time) still runs.
bool HolderAlive(pid_t pid, int64_t start_time) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  auto now = ProcessStartTime(pid);
  // Unreadable /proc (hidepid, no procfs) or an unknown recorded start time: a process with that
  // pid exists, so assume it is the holder; taking a live lock is worse than a stale one.
  if (!now) return !(::kill(pid, 0) != 0 && errno == ESRCH);
  if (start_time == 0) return true;
  return *now == start_time;
}

// 12 random hex digits: the lab's ownership mark.
std::string NewUid() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    // getrandom only fails this early on ancient kernels; time and pid still separate labs.
    v = static_cast<uint64_t>(NowMillis()) * 1000003u ^ static_cast<uint64_t>(::getpid());
  }
  return Hex(v, 12);
}

// Creates `dir` and its missing parents; `dir` itself gets mode 0700 (it holds the state of
// every lab), parents get 0755.
Status MakeDirs(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Status::Error("state dir " + dir + " exists and is not a directory");
    return Status::Ok();
  }
  for (size_t pos = dir.find('/', 1); pos != std::string::npos; pos = dir.find('/', pos + 1)) {
    const std::string parent = dir.substr(0, pos);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus("cannot create " + parent + " for the state dir " + dir);
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("cannot create the state dir " + dir);
  }
  return Status::Ok();
}

// A cached prepared statement; reset and unbound when the handle goes away, so the next use
// starts clean and no read transaction is left open by an unfinished SELECT.
class Stmt {
 public:
  explicit Stmt(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Stmt(Stmt&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)), bind_rc_(other.bind_rc_) {}
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_) {
      ::sqlite3_reset(stmt_);
      ::sqlite3_clear_bindings(stmt_);
    }
  }

  template <typename... Args>
  Stmt& Bind(const Args&... args) {
    int i = 1;
    (BindOne(i++, args), ...);
    return *this;
  }
  /// SQLITE_ROW, SQLITE_DONE or an error code (a failed bind included).
  int Step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : ::sqlite3_step(stmt_); }
  /// Ready to step again from the start, bindings kept.
  void Reset() { ::sqlite3_reset(stmt_); }
  int64_t Int(int col) const { return ::sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const auto* p = reinterpret_cast<const char*>(::sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(::sqlite3_column_bytes(stmt_, col))) : std::string();
  }

 private:
  void Note(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  void BindOne(int i, int64_t v) { Note(::sqlite3_bind_int64(stmt_, i, v)); }
  void BindOne(int i, int v) { Note(::sqlite3_bind_int64(stmt_, i, v)); }
  void BindOne(int i, const std::string& v) {
    Note(::sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void BindOne(int i, const char* v) { Note(::sqlite3_bind_text(stmt_, i, v, -1, SQLITE_TRANSIENT)); }

  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

// The connection and what is done with it; Store::Impl adds the mutex that guards it.
struct Connection {
  sqlite3* db = nullptr;
  std::string path;
  int version = 0;
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts;

  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    for (auto& [sql, stmt] : stmts) ::sqlite3_finalize(stmt);
    // The last connection to close checkpoints the WAL and removes it.
    if (db) ::sqlite3_close_v2(db);
  }

  /// An error about `what` with SQLite's message. A file that is not a database, or a corrupt
  /// one, says how to recover instead: the file is the user's to move, never ours to replace.
  Status Error(const std::string& what, int rc) const {
    const std::string detail = db ? ::sqlite3_errmsg(db) : ::sqlite3_errstr(rc);
    const int primary = rc & 0xff;
    if (primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT) {
      return Status::Error(path + " is not a usable lab state database (" + detail +
                           "); move it away (with its -wal and -shm files) and run again; "
                           "`lab down LAB` still removes a lab's objects by their ownership marks");
    }
    return Status::Error("state database " + path + ": " + what + ": " + detail);
  }

  Result<Stmt> Prepare(std::string_view sql) {
    auto it = stmts.find(sql);
    if (it == stmts.end()) {
      sqlite3_stmt* stmt = nullptr;
      const int rc = ::sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                          SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) return Error("preparing a statement", rc);
      it = stmts.emplace(std::string(sql), stmt).first;
    }
    return Stmt(it->second);
  }

  /// Runs SQL that carries no values (transaction control, migration DDL).
  Status Exec(const char* sql, const std::string& what) {
    const int rc = ::sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    return rc == SQLITE_OK ? Status::Ok() : Error(what, rc);
  }

  /// Runs a statement that returns no rows.
  Status Run(Stmt& stmt, const std::string& what) {
    const int rc = stmt.Step();
    return rc == SQLITE_DONE ? Status::Ok() : Error(what, rc);
  }

  Result<int> ReadVersion();
  Status Migrate();
};

// A transaction rolled back unless committed.
class Txn {
 public:
  explicit Txn(Connection& impl) : impl_(impl) {}
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (active_ && !::sqlite3_get_autocommit(impl_.db)) {
      ::sqlite3_exec(impl_.db, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  /// `write`: take the write lock now (BEGIN IMMEDIATE), waiting up to busy_timeout.
  Status Begin(bool write) {
    LAB_RETURN_IF_ERROR(impl_.Exec(write ? "BEGIN IMMEDIATE" : "BEGIN", "starting a transaction"));
    active_ = true;
    return Status::Ok();
  }
  Status Commit() {
    LAB_RETURN_IF_ERROR(impl_.Exec("COMMIT", "committing"));
    active_ = false;
    return Status::Ok();
  }

 private:
  Connection& impl_;
  bool active_ = false;
};

Result<int> Connection::ReadVersion() {
  auto has = Prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  if (!has) return has.status();
  int rc = has->Step();
  if (rc != SQLITE_ROW) return Error("reading the schema", rc);
  if (has->Int(0) == 0) return 0;
  auto v = Prepare("SELECT max(version) FROM schema_version");
  if (!v) return v.status();
  rc = v->Step();
  if (rc != SQLITE_ROW) return Error("reading the schema version", rc);
  return static_cast<int>(v->Int(0));
}

Status Connection::Migrate() {
  for (;;) {
    Txn txn(*this);
    LAB_RETURN_IF_ERROR(txn.Begin(true));
    // Read under the write lock: another process may have migrated while we waited.
    auto current = ReadVersion();
    if (!current) return current.status();
    version = *current;
    if (version > Store::kSchemaVersion) {
      return Status::Error(path + " has schema version " + std::to_string(version) +
                           ", newer than this lab understands (" + std::to_string(Store::kSchemaVersion) +
                           "); upgrade lab to use it");
    }
    if (version == Store::kSchemaVersion) return txn.Commit();
    const std::string step = "migrating the schema to version " + std::to_string(version + 1);
    LAB_RETURN_IF_ERROR(Exec(kMigrations[static_cast<size_t>(version)], step));
    {
      auto del = Prepare("DELETE FROM schema_version");
      if (!del) return del.status();
      LAB_RETURN_IF_ERROR(Run(*del, step));
      auto ins = Prepare("INSERT INTO schema_version(version) VALUES (?)");
      if (!ins) return ins.status();
      ins->Bind(version + 1);
      LAB_RETURN_IF_ERROR(Run(*ins, step));
    }
    LAB_RETURN_IF_ERROR(txn.Commit());
    version += 1;
  }
}

}  // namespace

struct Store::Impl : Connection {
  std::mutex mu;
};

int64_t NowMillis() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// ---- Store ----

Result<std::unique_ptr<Store>> Store::Open(const std::string& dir) {
  LAB_RETURN_IF_ERROR(MakeDirs(dir));
  std::unique_ptr<Store> store(new Store());
  store->impl_ = std::make_unique<Impl>();
  Impl& impl = *store->impl_;
  impl.path = dir + "/" + kDbFile;
  // NOMUTEX: Impl::mu already serializes every use of the connection.
  const int rc = ::sqlite3_open_v2(impl.path.c_str(), &impl.db,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return impl.Error("cannot open", rc);
  ::sqlite3_extended_result_codes(impl.db, 1);
  // Before anything that may wait on another process's lock.
  ::sqlite3_busy_timeout(impl.db, 5000);

  // The first read of the file: a file that is not a database fails here, untouched.
  {
    auto mode = impl.Prepare("PRAGMA journal_mode=WAL");
    if (!mode) return mode.status();
    // Switching the journal mode needs the file's exclusive lock, and SQLite answers SQLITE_BUSY
    // there without calling the busy handler (two processes opening at once could otherwise
    // deadlock). So wait here, as busy_timeout would: up to 5 s in 1-10 ms steps.
    int step = mode->Step();
    for (int waited = 0, nap = 1; (step & 0xff) == SQLITE_BUSY && waited < 5000; waited += nap) {
      mode->Reset();
      ::sqlite3_sleep(nap);
      nap = nap < 10 ? nap + 1 : 10;
      step = mode->Step();
    }
    if (step != SQLITE_ROW) return impl.Error("switching to WAL mode", step);
    if (mode->Text(0) != "wal") {
      return Status::Error("state database " + impl.path + ": cannot use WAL mode (journal mode is " +
                           mode->Text(0) + "); is the state dir on a file system without shared memory?");
    }
  }
  LAB_RETURN_IF_ERROR(impl.Exec("PRAGMA synchronous=NORMAL", "setting synchronous=NORMAL"));
  LAB_RETURN_IF_ERROR(impl.Exec("PRAGMA foreign_keys=ON", "enabling foreign keys"));
  LAB_RETURN_IF_ERROR(impl.Migrate());
  return store;
}

Result<std::unique_ptr<Store>> Store::OpenReadOnly(const std::string& dir) {
  std::unique_ptr<Store> store(new Store());
  store->impl_ = std::make_unique<Impl>();
  Impl& impl = *store->impl_;
  impl.path = dir + "/" + kDbFile;
  struct stat st {};
  if (::stat(impl.path.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR || errno == EACCES)) {
    // No state (or a state dir this user may not enter: the caller says so): no labs. An empty database in memory answers every read the same way.
    const int rc = ::sqlite3_open_v2(":memory:", &impl.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return impl.Error("cannot open an empty state in memory", rc);
    LAB_RETURN_IF_ERROR(impl.Migrate());
    return store;
  }
  const std::string uri = "file:" + impl.path + "?mode=ro";
  int rc = ::sqlite3_open_v2(uri.c_str(), &impl.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                             nullptr);
  auto version = rc == SQLITE_OK ? impl.ReadVersion() : Result<int>(impl.Error("cannot open", rc));
  if (!version && ::geteuid() != 0) {
    // A WAL database needs its -shm file, which a user without write access to the dir cannot
    // make: read the file as it is (immutable: no locks, no -shm; what a running `lab up` has
    // not yet checkpointed into it is not seen, as for any plan made while another runs).
    ::sqlite3_close_v2(impl.db);
    impl.db = nullptr;
    const std::string frozen = "file:" + impl.path + "?immutable=1";
    rc = ::sqlite3_open_v2(frozen.c_str(), &impl.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                           nullptr);
    version = rc == SQLITE_OK ? impl.ReadVersion() : Result<int>(impl.Error("cannot open", rc));
  }
  if (!version && ::geteuid() == 0) return version.status();
  if (!version)
    return Status::Error("cannot read the state database " + impl.path + " as user " + std::to_string(::geteuid()) +
                         " (" + version.message() + "); run this as root, or with --state-dir a directory you can read");
  ::sqlite3_busy_timeout(impl.db, 5000);
  impl.version = *version;
  if (impl.version != kSchemaVersion)
    return Status::Error(impl.path + " has schema version " + std::to_string(impl.version) + ", not " +
                         std::to_string(kSchemaVersion) + "; run lab as root once to migrate it");
  return store;
}

Store::~Store() = default;

int Store::schema_version() const {
  std::lock_guard<std::mutex> guard(impl_->mu);
  return impl_->version;
}

Result<Snapshot> Store::Load(const std::string& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  Snapshot snap;
  // One read transaction: the lab and its resources from the same commit.
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(false));
  {
    auto st = impl.Prepare("SELECT name, uid, file, created, updated, source FROM labs WHERE name = ?");
    if (!st) return st.status();
    st->Bind(lab);
    const int rc = st->Step();
    if (rc == SQLITE_ROW) {
      snap.lab = LabRecord{st->Text(0), st->Text(1), st->Text(2), st->Int(3), st->Int(4), st->Text(5)};
    } else if (rc != SQLITE_DONE) {
      return impl.Error("reading lab '" + lab + "'", rc);
    }
  }
  {
    auto st = impl.Prepare(
        "SELECT kind, key, parent, spec_hash, spec, facts, updated FROM resources WHERE lab = ? ORDER BY key");
    if (!st) return st.status();
    st->Bind(lab);
    int rc;
    while ((rc = st->Step()) == SQLITE_ROW) {
      ResourceRecord r{st->Text(0), st->Text(1), st->Text(2), st->Text(3), st->Text(4), st->Text(5), st->Int(6)};
      std::string key = r.key;
      snap.resources.emplace(std::move(key), std::move(r));
    }
    if (rc != SQLITE_DONE) return impl.Error("reading the resources of lab '" + lab + "'", rc);
  }
  {
    auto st = impl.Prepare("SELECT machine, host FROM placements WHERE lab = ? ORDER BY machine");
    if (!st) return st.status();
    st->Bind(lab);
    int rc;
    while ((rc = st->Step()) == SQLITE_ROW) snap.placements[st->Text(0)] = st->Text(1);
    if (rc != SQLITE_DONE) return impl.Error("reading the placements of lab '" + lab + "'", rc);
  }
  {
    auto st = impl.Prepare("SELECT machine FROM stopped WHERE lab = ? ORDER BY machine");
    if (!st) return st.status();
    st->Bind(lab);
    int rc;
    while ((rc = st->Step()) == SQLITE_ROW) snap.stopped.insert(st->Text(0));
    if (rc != SQLITE_DONE) return impl.Error("reading the stopped VMs of lab '" + lab + "'", rc);
  }
  LAB_RETURN_IF_ERROR(txn.Commit());
  return snap;
}

Status Store::SetPlacement(const std::string& lab, const std::string& machine, const std::string& host) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  auto st = host.empty() ? impl.Prepare("DELETE FROM placements WHERE lab = ? AND machine = ?")
                         : impl.Prepare("INSERT INTO placements(lab, machine, host) VALUES (?, ?, ?) "
                                        "ON CONFLICT(lab, machine) DO UPDATE SET host = excluded.host");
  if (!st) return st.status();
  if (host.empty())
    st->Bind(lab, machine);
  else
    st->Bind(lab, machine, host);
  return impl.Run(*st, "recording where '" + machine + "' of lab '" + lab + "' runs");
}

Status Store::SetStopped(const std::string& lab, const std::string& machine, bool stopped) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  auto st = stopped ? impl.Prepare("INSERT INTO stopped(lab, machine) VALUES (?, ?) ON CONFLICT DO NOTHING")
                    : impl.Prepare("DELETE FROM stopped WHERE lab = ? AND machine = ?");
  if (!st) return st.status();
  st->Bind(lab, machine);
  return impl.Run(*st, "recording that '" + machine + "' of lab '" + lab + "' is " +
                           (stopped ? "stopped" : "no longer stopped"));
}

Status Store::SetImageUses(const std::string& lab, const std::vector<ImageUse>& uses) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  LAB_RETURN_IF_ERROR(impl.Exec("BEGIN IMMEDIATE", "recording the images of lab '" + lab + "'"));
  auto done = [&](Status st) {
    (void)impl.Exec(st.ok() ? "COMMIT" : "ROLLBACK", "recording the images of lab '" + lab + "'");
    return st;
  };
  auto del = impl.Prepare("DELETE FROM image_uses WHERE lab = ?");
  if (!del) return done(del.status());
  del->Bind(lab);
  if (Status st = impl.Run(*del, "recording the images of lab '" + lab + "'"); !st.ok()) return done(st);
  const int64_t now = NowSeconds();
  for (const auto& u : uses) {
    auto ins = impl.Prepare("INSERT INTO image_uses(lab, key, image, since) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING");
    if (!ins) return done(ins.status());
    ins->Bind(lab, u.key, u.image, now);
    if (Status st = impl.Run(*ins, "recording that lab '" + lab + "' uses image '" + u.image + "'"); !st.ok())
      return done(st);
  }
  return done(Status::Ok());
}

std::vector<ImageUse> Store::ImageUses() {
  std::lock_guard<std::mutex> guard(impl_->mu);
  std::vector<ImageUse> out;
  auto st = impl_->Prepare("SELECT lab, key, image, since FROM image_uses ORDER BY key, lab");
  if (!st) return out;
  while (st->Step() == SQLITE_ROW) out.push_back(ImageUse{st->Text(0), st->Text(1), st->Text(2), st->Int(3)});
  return out;
}

std::vector<LabRecord> Store::ListLabs() {
  std::lock_guard<std::mutex> guard(impl_->mu);
  std::vector<LabRecord> labs;
  auto st = impl_->Prepare("SELECT name, uid, file, created, updated FROM labs ORDER BY name");
  if (!st) return labs;
  while (st->Step() == SQLITE_ROW) {
    labs.push_back(LabRecord{st->Text(0), st->Text(1), st->Text(2), st->Int(3), st->Int(4)});
  }
  return labs;
}

Status Store::PutLab(const LabRecord& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const int64_t now = NowSeconds();
  auto st = impl.Prepare(
      "INSERT INTO labs(name, uid, file, created, updated, source) VALUES (?, ?, ?, ?, ?, ?) "
      "ON CONFLICT(name) DO UPDATE SET file = excluded.file, updated = excluded.updated, source = excluded.source");
  if (!st) return st.status();
  st->Bind(lab.name, lab.uid.empty() ? NewUid() : lab.uid, lab.file, lab.created ? lab.created : now,
           lab.updated ? lab.updated : now, lab.source);
  return impl.Run(*st, "recording lab '" + lab.name + "'");
}

Status Store::DeleteLab(const std::string& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "deleting lab '" + lab + "'";
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(true));
  for (const char* sql : {"DELETE FROM resources WHERE lab = ?", "DELETE FROM journal WHERE lab = ?",
                          "DELETE FROM placements WHERE lab = ?", "DELETE FROM stopped WHERE lab = ?",
                          "DELETE FROM locks WHERE lab = ?", "DELETE FROM labs WHERE name = ?"}) {
    auto st = impl.Prepare(sql);
    if (!st) return st.status();
    st->Bind(lab);
    LAB_RETURN_IF_ERROR(impl.Run(*st, what));
  }
  return txn.Commit();
}

namespace {

/// The statement writing `r` as lab `lab`'s record (new, or over the old one with its key), bound.
Result<Stmt> PrepareResourceWrite(Connection& impl, const std::string& lab, const ResourceRecord& r) {
  auto st = impl.Prepare(
        "INSERT INTO resources(lab, key, kind, parent, spec_hash, spec, facts, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(lab, key) DO UPDATE SET kind = excluded.kind, parent = excluded.parent, "
        "spec_hash = excluded.spec_hash, spec = excluded.spec, facts = excluded.facts, updated = excluded.updated");
  if (!st) return st.status();
  st->Bind(lab, r.key, r.kind, r.parent, r.spec_hash, r.spec, r.facts, r.updated ? r.updated : NowSeconds());
  return st;
}

}  // namespace

Result<int64_t> Store::BeginAction(const std::string& lab, const std::string& action, const std::string& key,
                                   const std::string& reason, const ResourceRecord* pending) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "journaling " + action + " " + key + " of lab '" + lab + "'";
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(true));
  auto st = impl.Prepare(
      "INSERT INTO journal(lab, action, key, reason, status, started) VALUES (?, ?, ?, ?, 'intended', ?)");
  if (!st) return st.status();
  st->Bind(lab, action, key, reason, NowMillis());
  LAB_RETURN_IF_ERROR(impl.Run(*st, what));
  const auto id = static_cast<int64_t>(::sqlite3_last_insert_rowid(impl.db));
  if (pending) {
    auto put = PrepareResourceWrite(impl, lab, *pending);
    if (!put) return put.status();
    LAB_RETURN_IF_ERROR(impl.Run(*put, "recording '" + pending->key + "' of lab '" + lab + "' as being made"));
  }
  LAB_RETURN_IF_ERROR(txn.Commit());
  return id;
}

Status Store::CommitAction(int64_t id, const std::string& lab, const std::optional<ResourceRecord>& put,
                           const std::string& erase_key) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "recording action " + std::to_string(id) + " of lab '" + lab + "'";
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(true));
  {
    auto st = impl.Prepare("UPDATE journal SET status = 'done', error = '', finished = ? WHERE id = ? AND lab = ?");
    if (!st) return st.status();
    st->Bind(NowMillis(), id, lab);
    LAB_RETURN_IF_ERROR(impl.Run(*st, what));
    if (::sqlite3_changes(impl.db) != 1) {
      return Status::Error(what + ": no such journal entry (was it begun with BeginAction for this lab?)");
    }
  }
  if (!erase_key.empty()) {
    auto st = impl.Prepare("DELETE FROM resources WHERE lab = ? AND key = ?");
    if (!st) return st.status();
    st->Bind(lab, erase_key);
    LAB_RETURN_IF_ERROR(impl.Run(*st, what));
  }
  if (put) {
    auto st = PrepareResourceWrite(impl, lab, *put);
    if (!st) return st.status();
    const int rc = st->Step();
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
      return Status::Error(what + ": lab '" + lab + "' is not recorded; PutLab must come before its resources");
    }
    if (rc != SQLITE_DONE) return impl.Error(what, rc);
  }
  return txn.Commit();
}

Status Store::RecordRemoved(const std::string& lab, const std::vector<Removed>& removed) {
  if (removed.empty()) return Status::Ok();
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "recording " + std::to_string(removed.size()) + " removals of lab '" + lab + "'";
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(true));
  auto journal = impl.Prepare(
      "INSERT INTO journal(lab, action, key, reason, status, started, finished) "
      "VALUES (?, 'delete', ?, ?, 'done', ?, ?)");
  if (!journal) return journal.status();
  auto erase = impl.Prepare("DELETE FROM resources WHERE lab = ? AND key = ?");
  if (!erase) return erase.status();
  const int64_t now = NowMillis();
  for (const Removed& r : removed) {
    journal->Reset();
    journal->Bind(lab, r.key, r.reason, now, now);
    LAB_RETURN_IF_ERROR(impl.Run(*journal, what));
    erase->Reset();
    erase->Bind(lab, r.key);
    LAB_RETURN_IF_ERROR(impl.Run(*erase, what));
  }
  return txn.Commit();
}

Status Store::ErasePending(const std::string& lab, const std::string& key, const std::string& facts) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  auto st = impl.Prepare("DELETE FROM resources WHERE lab = ? AND key = ? AND facts = ?");
  if (!st) return st.status();
  st->Bind(lab, key, facts);
  return impl.Run(*st, "erasing the pending record of '" + key + "' of lab '" + lab + "'");
}

Status Store::RestorePending(const std::string& lab, const std::string& facts, const ResourceRecord& old) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  auto st = impl.Prepare(
      "UPDATE resources SET kind = ?, parent = ?, spec_hash = ?, spec = ?, facts = ?, updated = ? "
      "WHERE lab = ? AND key = ? AND facts = ?");
  if (!st) return st.status();
  st->Bind(old.kind, old.parent, old.spec_hash, old.spec, old.facts, NowSeconds(), lab, old.key, facts);
  return impl.Run(*st, "restoring the record of '" + old.key + "' of lab '" + lab + "'");
}

std::vector<JournalEntry> Store::Intended(const std::string& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  std::vector<JournalEntry> entries;
  auto st = impl.Prepare(
      "SELECT id, lab, action, key, reason, status, error, started, finished FROM journal "
      "WHERE lab = ? AND status = 'intended' ORDER BY id");
  if (!st) return entries;
  st->Bind(lab);
  while (st->Step() == SQLITE_ROW)
    entries.push_back(JournalEntry{st->Int(0), st->Text(1), st->Text(2), st->Text(3), st->Text(4), st->Text(5),
                                   st->Text(6), st->Int(7), st->Int(8)});
  return entries;
}

Status Store::SettleInterrupted(const std::string& lab, int64_t last) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  auto st = impl.Prepare(
      "UPDATE journal SET status = 'failed', error = 'interrupted: the process running it ended first', "
      "finished = ? WHERE lab = ? AND status = 'intended' AND id <= ?");
  if (!st) return st.status();
  st->Bind(NowMillis(), lab, last);
  return impl.Run(*st, "marking interrupted actions of lab '" + lab + "'");
}

Status Store::FailAction(int64_t id, const std::string& error) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "recording the failure of action " + std::to_string(id);
  auto st = impl.Prepare("UPDATE journal SET status = 'failed', error = ?, finished = ? WHERE id = ?");
  if (!st) return st.status();
  st->Bind(error, NowMillis(), id);
  LAB_RETURN_IF_ERROR(impl.Run(*st, what));
  if (::sqlite3_changes(impl.db) != 1) return Status::Error(what + ": no such journal entry");
  return Status::Ok();
}

std::vector<JournalEntry> Store::Journal(const std::string& lab, int limit) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  std::vector<JournalEntry> entries;
  auto st = impl_->Prepare(
      "SELECT id, lab, action, key, reason, status, error, started, finished FROM journal "
      "WHERE lab = ? ORDER BY id DESC LIMIT ?");
  if (!st) return entries;
  st->Bind(lab, limit);
  while (st->Step() == SQLITE_ROW) {
    entries.push_back(JournalEntry{st->Int(0), st->Text(1), st->Text(2), st->Text(3), st->Text(4), st->Text(5),
                                   st->Text(6), st->Int(7), st->Int(8)});
  }
  return entries;
}

Result<LabLock> Store::Lock(const std::string& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  Impl& impl = *impl_;
  const std::string what = "locking lab '" + lab + "'";
  const pid_t me = ::getpid();
  const int64_t my_start = ProcessStartTime(me).value_or(0);
  std::string note;
  // Read and write under one write lock, so two processes cannot both see the lab free.
  Txn txn(impl);
  LAB_RETURN_IF_ERROR(txn.Begin(true));
  {
    auto st = impl.Prepare("SELECT pid, start_time, since FROM locks WHERE lab = ?");
    if (!st) return st.status();
    st->Bind(lab);
    const int rc = st->Step();
    if (rc == SQLITE_ROW) {
      const auto pid = static_cast<pid_t>(st->Int(0));
      const int64_t start = st->Int(1);
      // Our own lock counts as held: locks are not re-entrant, a second Lock is a bug upstream.
      const bool ours = pid == me && start == my_start;
      if (ours || HolderAlive(pid, start)) {
        return Status::Error("lab '" + lab + "' is locked by pid " + std::to_string(pid) + " (since " +
                             LocalTime(st->Int(2)) + ")");
      }
      note = "took over the lock of lab '" + lab + "' left by pid " + std::to_string(pid) +
             ", which is no longer running";
    } else if (rc != SQLITE_DONE) {
      return impl.Error(what, rc);
    }
  }
  {
    auto st = impl.Prepare("INSERT OR REPLACE INTO locks(lab, pid, start_time, since) VALUES (?, ?, ?, ?)");
    if (!st) return st.status();
    st->Bind(lab, static_cast<int64_t>(me), my_start, NowMillis());
    LAB_RETURN_IF_ERROR(impl.Run(*st, what));
  }
  LAB_RETURN_IF_ERROR(txn.Commit());
  LabLock lock;
  lock.store_ = this;
  lock.lab_ = lab;
  lock.takeover_note_ = std::move(note);
  return Result<LabLock>(std::move(lock));
}

void Store::Unlock(const std::string& lab) {
  std::lock_guard<std::mutex> guard(impl_->mu);
  // Only our own row: after a takeover by someone else, or in a forked child, it is not ours.
  auto st = impl_->Prepare("DELETE FROM locks WHERE lab = ? AND pid = ? AND start_time = ?");
  if (!st) return;
  st->Bind(lab, static_cast<int64_t>(::getpid()), ProcessStartTime(::getpid()).value_or(0));
  (void)st->Step();
}

// ---- LabLock ----

LabLock::LabLock(LabLock&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      lab_(std::move(other.lab_)),
      takeover_note_(std::move(other.takeover_note_)) {}

LabLock& LabLock::operator=(LabLock&& other) noexcept {
  if (this != &other) {
    if (store_) store_->Unlock(lab_);
    store_ = std::exchange(other.store_, nullptr);
    lab_ = std::move(other.lab_);
    takeover_note_ = std::move(other.takeover_note_);
  }
  return *this;
}

LabLock::~LabLock() {
  if (store_) store_->Unlock(lab_);
}

}  // namespace lab::state
