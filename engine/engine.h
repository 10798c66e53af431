// The engine: what the commands do, above the hypervisor, the store and the schema.
//
// Every mutating operation takes the lab's lock first, reads the records, observes the kernel
// (liveness of partitions and services), plans, and executes. The hypervisor is made per lab
// by a factory, so tests can put a recording fake in place of the Linux realization.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/checks.h"
#include "engine/executor.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "hv/hypervisor.h"
#include "hv/qemu_host.h"
#include "schema/lab.h"
#include "state/store.h"

namespace lab::engine {

using HypervisorFactory = std::function<std::unique_ptr<hv::Hypervisor>(const hv::LabContext&)>;

struct EngineOptions {
  std::string state_dir = "/var/lib/lab";
  std::string run_dir = "/run/lab";
  std::string init_path;            // the lab-init binary
  int jobs = 2;
  HypervisorFactory hypervisor;     // default: the Linux realization
  bool read_only = false;           // the state only read, nothing created (state::Store::OpenReadOnly)
  /// What this machine offers qemu VMs (their accelerator and processor, for the rules): unset,
  /// hv::ProbeQemuHost(run_dir) when a lab has a qemu VM; tests set it.
  std::optional<hv::QemuHostFacts> qemu_host;
};

struct ApplyResult {
  Plan plan;
  ExecReport report;
  std::string note;                 // e.g. a lock taken over from a dead process
  /// Marks removed without records (hv/sweep.h): "nested-nat-0123456789ab (3 processes, 30 mounts)".
  std::vector<std::string> swept;
};

/// One interface of a machine (a NIC, an adapter, a switch's vEthernet) as recorded and as found.
struct InterfaceStatus {
  std::string key;                  // its resource key
  std::string name;                 // "Ethernet", "vEthernet (VmNAT)"
  std::string recorded;             // the address the lab file gives it ("" for none)
  std::string mac;                  // its MAC address as the lab file or lab's default gives it
  /// What it is plugged into: an adapter's switch, a NIC's network, a vEthernet's own switch.
  std::string switch_name;
  std::string network;              // a NIC's lab network ("" for adapters and vEthernets)
  bool observed = false;            // looked at (its machine runs)
  bool up = false;                  // administratively up, as found
  std::vector<std::string> addresses;  // as found
  bool differs = false;             // down, or the recorded address not among those found
};

struct MachineStatus {
  std::string name;
  std::string kind;                 // host | vm | network
  std::string parent;
  std::string driver;               // VMs: partition | qemu (the recorded spec's); "" for hosts and networks
  std::string state;                // running | missing
  /// "Ethernet 10.10.0.10/24" as found where the machine runs (as recorded otherwise), marked
  /// where it differs: "Ethernet 10.10.0.9/24 (recorded 10.10.0.10/24)", "... (link down)".
  std::vector<std::string> addresses;
  std::vector<InterfaceStatus> interfaces;
  std::vector<std::string> gateways;           // the lab file's default gateways of the machine
  std::vector<std::string> default_routes;     // gateways of its default routes, as found
  std::vector<std::string> dns;                // the lab file's DNS servers of the machine
  std::optional<std::vector<std::string>> dns_found;  // resolv.conf's nameservers, as found
  std::vector<std::string> checkpoints;        // a VM's checkpoints, oldest first (Get-VMSnapshot)
  /// What drifted of this machine and the objects in it ("adapter/middle/Ethernet: link down"):
  /// LabStatus::drift's entries that belong to it.
  std::vector<std::string> drift;
  /// The prefix length of a network's subnet (its stand-in answers at the gateway in it); 0 else.
  int network_prefix = 0;
  int pid = 0;
};

/// A SET switch's team as `lab status` shows it.
struct TeamStatus {
  std::string owner;
  std::string switch_name;
  std::vector<hv::TeamMember> members;
};

struct LabStatus {
  std::string lab;
  std::string uid;
  std::string file;
  /// The lab file moved, changed or no longer parses (RecordedLab::warnings).
  std::vector<std::string> warnings;
  std::vector<MachineStatus> machines;
  std::vector<std::string> drift;   // "partition/middle: not running"
  std::vector<TeamStatus> teams;    // SET switches whose owner runs
  size_t resources = 0;
};

/// The machines of `st` as a tree: networks, then each host followed by the VMs inside it, depth
/// first (siblings by name), each with its depth (0 for networks and hosts, 1 for a host's VMs,
/// 2 for nested VMs...). The nesting `lab graph` draws; a machine whose parent is not listed
/// comes last, at depth 0.
std::vector<std::pair<const MachineStatus*, int>> MachineTree(const LabStatus& st);

/// A lab as its records say it was last applied.
struct RecordedLab {
  state::LabRecord record;
  schema::Lab lab;                    // the recorded text of its file, parsed
  /// "the lab file F is gone (moved or deleted); ...": the file itself is not what the records
  /// hold. Warnings, not errors: the records suffice.
  std::vector<std::string> warnings;
};

/// One image of the cache as `lab image ls` shows it.
struct ImageRow {
  std::string name, key, kind, source;
  uint64_t size = 0;
  int64_t created = 0, last_used = 0;     // unix seconds
  std::vector<std::string> used_by;       // labs up on it (or on an image over it)
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Open(EngineOptions options);

  /// What `up` would do now (no lock, no changes), to be shown: the resources it would create
  /// carry no spec (null); Up makes its own plan, with every spec.
  Result<Plan> PlanUp(const schema::Lab& lab);
  /// Makes the kernel match the lab file. `on_plan` sees the plan before anything runs.
  /// With `only`, just the actions on resources that live in those machines run (lab start),
  /// and the record of the file last applied is kept as it is.
  /// One lab, one file: a lab that is up from another file is refused, naming that file, unless
  /// `take_over` (lab up --force). VMs the user stopped (Snapshot::stopped), and what lives in
  /// them, are left off; the plan says so in a note.
  Result<ApplyResult> Up(const schema::Lab& lab, const std::function<void(const Plan&)>& on_plan,
                         const ExecOptions& exec, const std::set<std::string>* only = nullptr,
                         bool take_over = false);
  /// Removes everything the lab made, from its records.
  Result<ApplyResult> Down(const std::string& lab, const std::function<void(const Plan&)>& on_plan,
                           const ExecOptions& exec);
  /// Removes every object of `lab` found on the machine by its ownership marks, with no records
  /// at all: for a lab whose state database was deleted or is corrupt (Open fails). Touches only
  /// objects carrying "<lab>-<uid>"; returns the marks removed, as ApplyResult::swept.
  static Result<std::vector<std::string>> SweepByMarks(const EngineOptions& options, const std::string& lab);
  Result<LabStatus> Status(const std::string& lab);
  std::vector<state::LabRecord> Labs();
  /// Runs the lab's checks against the running lab.
  Result<std::vector<CheckOutcome>> Check(const schema::Lab& lab);
  /// Runs a command inside a machine of a running lab (found ignoring case); returns its exit code.
  Result<int> Exec(const std::string& lab, const std::string& machine, const hv::ExecRequest& request);
  /// What a machine's `run:` commands printed (`lab logs LAB MACHINE`), oldest first; "" when
  /// none ran yet.
  Result<std::string> Logs(const std::string& lab, const std::string& machine);
  /// The recorded lab (its file path, for commands that take a lab name).
  Result<state::LabRecord> Find(const std::string& lab);
  /// The lab as last applied, from its records: the file's text recorded at `lab up` (for a lab
  /// recorded before the text was kept, or a text this version no longer accepts, the file).
  /// Fails only when neither loads.
  Result<RecordedLab> Recorded(const std::string& lab);
  /// The lab as it runs now: Recorded with its moves (lab move) applied, so each VM sits under
  /// the host it runs on; a move the file no longer allows is a warning (the VM is where the
  /// file puts it).
  Result<RecordedLab> AsPlaced(const std::string& lab);

  /// The image cache (lab image ...), newest state: what is there and which labs use it.
  std::vector<ImageRow> Images();
  /// Imports PATH (a directory, a tar, an OCI layout or a `docker save` tar) as image `name`;
  /// an import already cached is found, not made again.
  Result<ImageRow> ImportImage(const std::string& path, const std::string& name,
                               const std::function<void(const std::string&)>& progress);
  /// Removes an image by name or key (prefix); refused while a lab uses it or an image is
  /// layered on it, naming them.
  Result<ImageRow> RemoveImage(const std::string& name_or_key);
  /// Removes the images no lab uses and none has used for `days` days; returns them.
  Result<std::vector<ImageRow>> PruneImages(int days);

  /// For verbs built on the engine's parts (lifecycle): the store and a hypervisor for a lab.
  state::Store& store() { return *store_; }
  std::unique_ptr<hv::Hypervisor> MakeHypervisor(const std::string& lab, const std::string& uid);
  const EngineOptions& options() const { return options_; }

 private:
  explicit Engine(EngineOptions options, std::unique_ptr<state::Store> store)
      : options_(std::move(options)), store_(std::move(store)) {}
  Observed Observe(hv::Hypervisor& hv, const state::Snapshot& snap,
                   const std::vector<state::JournalEntry>& interrupted = {});
  /// The plan for `lab` with the rules model's verdicts (refusals, notes) on it; `interrupted`
  /// are actions a killed run left intended. `shown_only`: the plan will not be applied, so the
  /// resources it creates need no spec.
  /// `images`: the lab's images as the cache holds them (MakeImages); machines on an image not
  /// in it are planned with the image's name only.
  Plan PlanFor(const schema::Lab& lab, const std::string& uid, const state::Snapshot& snap, hv::Hypervisor& hv,
               const std::vector<state::JournalEntry>& interrupted = {}, bool shown_only = false,
               const MachineImages* images = nullptr);
  /// The images the lab's machines use, made first when `make` (lab up), only looked up when
  /// not (lab plan: each image still to make is a note of `notes`).
  Result<MachineImages> MakeImages(const schema::Lab& lab, bool make, const ExecOptions& exec,
                                   std::vector<std::string>* notes);
  /// Removes what carries the mark of `lab` with `uid`: "<mark> (N processes, M mounts)".
  /// `found`: whether there was any process or mount to remove.
  static Result<std::string> SweepOne(const EngineOptions& options, const std::string& lab, const std::string& uid,
                                      bool* found = nullptr);
  Result<std::map<std::string, hv::PartitionSpec>> RunningMachines(const std::string& lab);

  EngineOptions options_;
  std::unique_ptr<state::Store> store_;
};

/// A fresh ownership mark: 12 random hex digits.
std::string NewUid();

}  // namespace lab::engine
