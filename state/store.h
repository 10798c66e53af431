// The lab state store: SQLite (WAL) under the state dir, one database for all labs.
//
// Tables: labs, resources (kind, key, parent, spec hash, spec, observed facts), journal (each
// action: intended -> done | failed, with timestamps), locks (pid + process start time), and
// schema_version with forward migrations. Every applied action is recorded in one transaction
// (CommitAction): the journal entry turns done and the resource row is written or erased
// together, so a crash leaves either the old or the new record, never half of one.
// A Store may be used from several threads; calls are serialized inside.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"

namespace lab::state {

struct LabRecord {
  std::string name;
  std::string uid;        // random, 12 hex digits, made at the first `up`; the ownership mark
  std::string file;       // absolute path of the lab file last applied
  int64_t created = 0;    // unix seconds
  int64_t updated = 0;
  /// The lab file's text as last applied ("" for a lab recorded before it was kept): what the
  /// lifecycle verbs, `lab check` and `lab status` read when the file moved or no longer parses.
  std::string source;
};

struct ResourceRecord {
  std::string kind;       // "network", "partition", "switch", "adapter", "nat", "service", ...
  std::string key;        // unique in the lab, e.g. "partition/middle"
  std::string parent;     // key of the resource it lives in ("" for none)
  std::string spec_hash;
  std::string spec;       // JSON: enough to tear the object down without the lab file
  std::string facts;      // JSON: what was observed when it was made (pids, names, ...)
  int64_t updated = 0;
};

struct JournalEntry {
  int64_t id = 0;
  std::string lab;
  std::string action;     // "create", "delete", "update", ...
  std::string key;
  std::string reason;
  std::string status;     // "intended", "done", "failed"
  std::string error;
  int64_t started = 0;    // unix milliseconds
  int64_t finished = 0;
};

struct Snapshot {
  std::optional<LabRecord> lab;
  std::map<std::string, ResourceRecord> resources;  // by key
  /// VM -> host, where `lab move` put it, over the lab file's placement.
  std::map<std::string, std::string> placements;
  /// VMs the user stopped (lab stop): they stay off when their parent starts again and on
  /// `lab up`, until `lab start` (Hyper-V's automatic start action: what was off stays off).
  std::set<std::string> stopped;
};

/// A lab running on a cached image (images/cache.h): recorded by `lab up`, forgotten with the lab.
struct ImageUse {
  std::string lab;
  std::string key;        // the image's cache key
  std::string image;      // its name in the lab file
  int64_t since = 0;      // unix seconds
};

class Store;

/// Holds a lab's lock until destroyed. Move-only; the Store that made it must outlive it.
class LabLock {
 public:
  LabLock() = default;
  LabLock(LabLock&&) noexcept;
  LabLock& operator=(LabLock&&) noexcept;
  LabLock(const LabLock&) = delete;
  LabLock& operator=(const LabLock&) = delete;
  ~LabLock();
  /// Set when the lock was taken over from a dead process: a warning for the user.
  const std::string& takeover_note() const { return takeover_note_; }

 private:
  friend class Store;
  Store* store_ = nullptr;
  std::string lab_;
  std::string takeover_note_;
};

class Store {
 public:
  /// Opens (creating if needed) `dir`/state.db, applies migrations. A file that is not a
  /// usable database is reported as an error naming the file; it is never silently replaced.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir);
  /// Opens `dir`/state.db for reading only and creates nothing, for the commands any user may
  /// run (lab plan): no state dir, no database there, or a state dir this user may not enter
  /// reads as no labs (an empty database in memory); a database this user cannot read is an
  /// error naming it and saying that root can.
  static Result<std::unique_ptr<Store>> OpenReadOnly(const std::string& dir);
  ~Store();

  static constexpr int kSchemaVersion = 4;
  int schema_version() const;

  /// The lab record and its resources; an empty Snapshot when the lab is unknown.
  Result<Snapshot> Load(const std::string& lab);
  std::vector<LabRecord> ListLabs();
  /// Inserts the lab or updates its file/updated/source fields (uid and created are kept).
  Status PutLab(const LabRecord& lab);
  /// Removes the lab, its resources and journal (after a complete `down`).
  Status DeleteLab(const std::string& lab);

  /// Records that `machine` runs on `host` (lab move); an empty `host` forgets it, so the VM
  /// is where the lab file puts it. Forgotten with the lab.
  Status SetPlacement(const std::string& lab, const std::string& machine, const std::string& host);

  /// Records that the user stopped `machine` (lab stop), or forgets it (lab start). Forgotten
  /// with the lab.
  Status SetStopped(const std::string& lab, const std::string& machine, bool stopped);

  /// Replaces the images the lab runs on (one transaction). Needs the lab's record.
  Status SetImageUses(const std::string& lab, const std::vector<ImageUse>& uses);
  /// Every lab's images, by key.
  std::vector<ImageUse> ImageUses();

  /// Journals an action as intended; returns its id. With `pending`, writes that record in the
  /// same transaction, before the object is made (its facts saying it is pending): an object
  /// half made by a process killed mid-action is still known and removable. The action stays
  /// intended; CommitAction overwrites the record with the real facts.
  Result<int64_t> BeginAction(const std::string& lab, const std::string& action, const std::string& key,
                              const std::string& reason, const ResourceRecord* pending = nullptr);
  /// In one transaction: marks the action done and writes `put` (if set) and erases
  /// `erase_key` (if non-empty) for the lab.
  Status CommitAction(int64_t id, const std::string& lab, const std::optional<ResourceRecord>& put,
                      const std::string& erase_key);
  /// What went with something else (an adapter with its VM's partition): in one transaction,
  /// journals each key as a delete done with its reason and erases its record. Either all of
  /// them are recorded or none (then they stay recorded, and a later run removes what is gone).
  struct Removed {
    std::string key, reason;
  };
  Status RecordRemoved(const std::string& lab, const std::vector<Removed>& removed);
  /// Erases the record of `key` if it still has the pending `facts` BeginAction wrote (the
  /// make failed and undid its own partial work).
  Status ErasePending(const std::string& lab, const std::string& key, const std::string& facts);
  /// Puts `old` back in place of the record of old.key if that still has the pending `facts`:
  /// the remake of a resource failed (and undid its own partial work), and its old record, which
  /// says what may still be there, must not be lost.
  Status RestorePending(const std::string& lab, const std::string& facts, const ResourceRecord& old);
  /// The lab's actions still marked intended, oldest first. Read while holding the lab's lock,
  /// they were begun by a process that ended before finishing them (interrupted).
  std::vector<JournalEntry> Intended(const std::string& lab);
  /// Marks the lab's intended actions up to id `last` failed ("interrupted"), once a run has
  /// redone what they left behind.
  Status SettleInterrupted(const std::string& lab, int64_t last);
  /// Marks the action failed with the error text.
  Status FailAction(int64_t id, const std::string& error);
  /// Newest first.
  std::vector<JournalEntry> Journal(const std::string& lab, int limit = 100);

  /// Takes the lab's lock, or fails at once with
  /// "lab 'NAME' is locked by pid N (since TIME)". A lock whose holder is dead (pid gone or
  /// its start time differs) is taken over, with takeover_note() set.
  Result<LabLock> Lock(const std::string& lab);

 private:
  friend class LabLock;
  Store() = default;
  void Unlock(const std::string& lab);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Now, in unix milliseconds.
int64_t NowMillis();

}  // namespace lab::state
