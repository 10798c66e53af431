#include "engine/executor.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "base/text.h"

namespace lab::engine {

const char* const kPendingFacts = R"({"pending":true})";

bool IsPending(const std::string& facts) { return facts == kPendingFacts; }

namespace {

template <typename Spec>
Spec As(const Resource& r) {
  return r.spec.get<Spec>();
}

/// One node of the DAG run by the worker pool.
struct Node {
  const Action* action = nullptr;
  bool teardown = false;
  std::vector<size_t> next;     // nodes waiting on this one
  int waiting = 0;              // unfinished predecessors
  bool blocked = false;         // a predecessor failed or was skipped
  bool subsumed = false;        // teardown: removed with the partitions that hold it (HomesOf)
};


class Runner {
 public:
  Runner(const std::string& lab, hv::Hypervisor& hv, state::Store& store, const ExecOptions& options,
         ExecReport& report)
      : lab_(lab), hv_(hv), store_(store), options_(options), report_(report) {}

  /// Runs the nodes, respecting edges; returns when all are finished or skipped.
  void Run(std::vector<Node>& nodes, int jobs) {
    nodes_ = &nodes;
    remaining_ = nodes.size();
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].waiting == 0) ready_.push_back(i);
    jobs = std::max(1, jobs);
    std::vector<std::thread> workers;
    for (int i = 0; i < jobs; ++i) workers.emplace_back([this] { Work(); });
    for (auto& w : workers) w.join();
  }

  /// After a teardown run: a subsumed resource is recorded as removed once every partition that
  /// held it was removed; while one is left, its record stays (the next run removes it for real:
  /// removing what is already gone is success).
  void Settle(const std::vector<Node>& nodes) {
    // One transaction for all of them: they are records only (the kernel objects went with
    // their partitions), and 1,000 transactions one after the other were a tenth of a `down`.
    std::vector<std::pair<const Node*, bool>> settle;  // node, whether everything holding it went
    std::vector<state::Store::Removed> removed;
    for (const Node& n : nodes) {
      if (!n.subsumed || n.blocked) continue;
      auto homes = HomesOf(n.action->old);
      bool gone = std::all_of(homes.begin(), homes.end(), [&](const std::string& k) { return removed_.count(k) > 0; });
      if (gone) removed.push_back({n.action->old.key, n.action->reason + " (removed with " + Join(homes, ", ") + ")"});
      settle.emplace_back(&n, gone);
    }
    const Status recorded = store_.RecordRemoved(lab_, removed);
    for (const auto& [n, gone] : settle) {
      StepEvent ev;
      ev.action = n->action;
      ev.teardown = true;
      if (!gone && Interrupted()) {
        ++report_.not_run;  // its partitions were not removed: the next run removes it
        continue;
      } else if (!gone) {
        ev.skipped = true;
        ++report_.skipped;
      } else if (recorded.ok()) {
        ++report_.done;
      } else {
        ev.status = recorded;
        ++report_.failed;
        report_.errors.push_back(n->action->old.key + ": " + recorded.message());
      }
      if (options_.on_step) options_.on_step(ev);
    }
  }

 private:
  bool Interrupted() const { return options_.interrupt && options_.interrupt->load(); }

  void Work() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return !ready_.empty() || remaining_ == 0; });
      if (remaining_ == 0) return;
      size_t i = ready_.back();
      ready_.pop_back();
      Node& n = (*nodes_)[i];
      StepEvent ev;
      ev.action = n.action;
      ev.teardown = n.teardown;
      if (n.subsumed && !n.blocked) {
        // Nothing to do now; Settle records it once its partitions are gone.
        for (size_t j : n.next)
          if (--(*nodes_)[j].waiting == 0) ready_.push_back(j);
        --remaining_;
        cv_.notify_all();
        continue;
      }
      if (Interrupted()) {
        // Not started, not shown: the next run makes it. What waits on it is not started either.
        ++report_.not_run;
        for (size_t j : n.next)
          if (--(*nodes_)[j].waiting == 0) ready_.push_back(j);
        --remaining_;
        cv_.notify_all();
        continue;
      }
      if (n.blocked) {
        ev.skipped = true;
        ++report_.skipped;
      } else {
        lock.unlock();
        auto t0 = std::chrono::steady_clock::now();
        ev.status = RunOne(*n.action, n.teardown);
        ev.millis = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        lock.lock();
        if (ev.status.ok()) {
          ++report_.done;
          if (n.teardown) removed_.insert(n.action->old.key);
        } else {
          ++report_.failed;
          report_.errors.push_back(n.action->resource.key + ": " + ev.status.message());
        }
      }
      bool failed = ev.skipped || !ev.status.ok();
      if (options_.on_step) options_.on_step(ev);
      for (size_t j : n.next) {
        Node& m = (*nodes_)[j];
        if (failed) m.blocked = true;
        if (--m.waiting == 0) ready_.push_back(j);
      }
      --remaining_;
      cv_.notify_all();
    }
  }

  Status RunOne(const Action& a, bool teardown) {
    const char* verb = teardown ? "delete" : (a.type == ActionType::kUpdate ? "update" : "create");
    const bool makes = !teardown && a.type != ActionType::kUpdate;
    // -v: each step's phases with their times (journal entry, kernel, record), as it ends.
    using Clock = std::chrono::steady_clock;
    const auto t_begin = Clock::now();
    Clock::time_point t_kernel = t_begin, t_record = t_begin;
    auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    const std::string& key = teardown ? a.old.key : a.resource.key;
    if (!teardown && a.resource.kind == Kind::kRun)
      for (const auto& c : a.resource.spec.value("commands", std::vector<std::string>{}))
        spdlog::debug("{}: will run inside '{}': {}", key, a.resource.spec.value("machine", std::string()), c);
    // What is made is recorded before it is made, with the journal entry: a process killed while
    // making it leaves a record saying so, and the next run removes whatever half of it exists
    // (interrupted actions, engine.cc).
    std::optional<state::ResourceRecord> pending;
    if (makes) pending = Record(a.resource, kPendingFacts);
    auto id = store_.BeginAction(lab_, verb, a.resource.key, a.reason, pending ? &*pending : nullptr);
    if (!id) return id.status();
    t_kernel = Clock::now();
    Status st;
    std::optional<state::ResourceRecord> put;
    std::string erase;
    if (!options_.fail_key.empty() &&
        (options_.fail_key == a.resource.key || (!teardown && options_.fail_key == "+" + a.resource.key))) {
      st = Status::Error("injected failure (LAB_INJECT_FAILURE)");
      if (makes) UndoPending(a);
      (void)store_.FailAction(*id, st.message());
      return st;
    }
    if (teardown) {
      // A VM that is remade is the same VM restarted: Stop-VM keeps its disk. Only a VM that
      // leaves the lab file loses it. Likewise the log of run: commands run again.
      const bool remade = a.type == ActionType::kReplace;
      st = remade && a.old.kind == Kind::kPartition ? hv_.StopPartition(a.old.spec.get<hv::PartitionSpec>(), a.old_facts)
           : remade && a.old.kind == Kind::kRun     ? Status::Ok()
                                                    : RemoveResource(hv_, a.old, a.old_facts);
      // The old half of a remake keeps its record until the new half replaces it: if the make
      // fails or is skipped, the resource is still known (found not running, remade by the next
      // run), never lost from the lab. A run: action's record goes at once: if its commands fail
      // again, the next run runs them again.
      if (a.type == ActionType::kDelete || a.old.kind == Kind::kRun) erase = a.old.key;
    } else {
      auto facts = a.type != ActionType::kUpdate ? ApplyResource(hv_, a.resource)
                   : a.repair                     ? RepairResource(hv_, a.resource, a.old_facts)
                                                  : UpdateResource(hv_, a.resource, a.old, a.old_facts);
      st = facts.status();
      if (facts) put = Record(a.resource, *facts);
      // A switch renamed in place: its record moves to the new key in the same transaction.
      if (a.type == ActionType::kUpdate && a.old.key != a.resource.key) erase = a.old.key;
    }
    t_record = Clock::now();
    if (!st.ok()) {
      spdlog::debug("{} {} failed after {:.1f} ms (journal {:.1f} ms, kernel {:.1f} ms): {}", verb, key,
                    ms(t_begin, Clock::now()), ms(t_begin, t_kernel), ms(t_kernel, t_record), st.message());
      // A failed make undid its own partial work (hv contract): nothing new is left to record.
      if (makes) UndoPending(a);
      (void)store_.FailAction(*id, st.message());
      return st;
    }
    KillPoint();  // made (or removed) in the kernel, not yet recorded
    Status committed = store_.CommitAction(*id, lab_, put, erase);
    if (committed.ok()) KillPoint();  // recorded: the boundary before the next action
    const auto t_end = Clock::now();
    spdlog::debug("{} {}: {:.1f} ms (journal {:.1f} ms, kernel {:.1f} ms, record {:.1f} ms){}", verb, key,
                  ms(t_begin, t_end), ms(t_begin, t_kernel), ms(t_kernel, t_record), ms(t_record, t_end),
                  a.reason.empty() ? "" : ": " + a.reason);
    return committed;
  }

  /// After a failed make: a new resource's pending record goes; a remade one gets its old
  /// record back.
  void UndoPending(const Action& a) {
    if (a.type == ActionType::kReplace)
      (void)store_.RestorePending(lab_, kPendingFacts, Record(a.old, a.old_facts));
    else
      (void)store_.ErasePending(lab_, a.resource.key, kPendingFacts);
  }

  static state::ResourceRecord Record(const Resource& r, const std::string& facts) {
    return state::ResourceRecord{ToString(r.kind), r.key, r.deps.empty() ? "" : r.deps.front(), r.Hash(),
                                 r.ToRecordJson(), facts, 0};
  }

  /// Fault injection (ExecOptions::kill_at, pause_at): dies here, as SIGKILL from outside would,
  /// or stops until continued.
  void KillPoint() {
    const int n = ++kill_points_;
    if (options_.kill_at > 0 && n == options_.kill_at) ::kill(::getpid(), SIGKILL);
    if (options_.pause_at > 0 && n == options_.pause_at) ::kill(::getpid(), SIGSTOP);
  }

  const std::string& lab_;
  hv::Hypervisor& hv_;
  state::Store& store_;
  const ExecOptions& options_;
  ExecReport& report_;
  std::atomic<int> kill_points_{0};
  std::vector<Node>* nodes_ = nullptr;
  std::set<std::string> removed_;  // keys whose teardown succeeded
  std::vector<size_t> ready_;
  size_t remaining_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace

Result<std::string> ApplyResource(hv::Hypervisor& hv, const Resource& r) {
  switch (r.kind) {
    case Kind::kNetwork: return hv.CreateNetwork(As<hv::NetworkSpec>(r));
    case Kind::kPartition: return hv.CreatePartition(As<hv::PartitionSpec>(r));
    case Kind::kNic: return hv.CreateNic(As<hv::NicSpec>(r));
    case Kind::kSwitch: return hv.CreateSwitch(As<hv::SwitchSpec>(r));
    case Kind::kAdapter: return hv.ConnectAdapter(As<hv::AdapterSpec>(r));
    case Kind::kNat: return hv.CreateNat(As<hv::NatSpec>(r));
    case Kind::kDns: return hv.SetDns(As<hv::DnsSpec>(r));
    case Kind::kStandIn: return hv.StartStandIn(As<hv::StandInSpec>(r));
    case Kind::kRun: return hv.RunCommands(As<hv::RunSpec>(r));
  }
  return Status::Error("unknown resource kind");
}

Status RemoveResource(hv::Hypervisor& hv, const Resource& r, const std::string& facts) {
  switch (r.kind) {
    case Kind::kNetwork: return hv.RemoveNetwork(As<hv::NetworkSpec>(r), facts);
    case Kind::kPartition: return hv.RemovePartition(As<hv::PartitionSpec>(r), facts);
    case Kind::kNic: return hv.RemoveNic(As<hv::NicSpec>(r), facts);
    case Kind::kSwitch: return hv.RemoveSwitch(As<hv::SwitchSpec>(r), facts);
    case Kind::kAdapter: return hv.RemoveAdapter(As<hv::AdapterSpec>(r), facts);
    case Kind::kNat: return hv.RemoveNat(As<hv::NatSpec>(r), facts);
    case Kind::kDns: return hv.ClearDns(As<hv::DnsSpec>(r), facts);
    case Kind::kStandIn: return hv.StopStandIn(As<hv::StandInSpec>(r), facts);
    case Kind::kRun: return hv.ClearRunLog(As<hv::RunSpec>(r));
  }
  return Status::Error("unknown resource kind");
}

Result<std::string> UpdateResource(hv::Hypervisor& hv, const Resource& r, const Resource& old,
                                   const std::string& old_facts) {
  // Addresses, gateways, MAC address spoofing and names change on the live objects: the planner
  // updates these kinds in place only for such changes (UpdatableInPlace, plan.cc).
  if (r.kind == Kind::kAdapter) return hv.SetAdapter(As<hv::AdapterSpec>(r), old_facts);
  if (r.kind == Kind::kNic) return hv.SetNicAddress(As<hv::NicSpec>(r), old_facts);
  if (r.kind == Kind::kSwitch) return hv.SetSwitch(As<hv::SwitchSpec>(r), old_facts);
  // The planner updates a VM in place only for a memory change the rules allow at runtime.
  if (r.kind == Kind::kPartition) return hv.SetPartitionMemory(As<hv::PartitionSpec>(r), old_facts);
  // A NAT's DNS proxy is a process: the old one stops before the new spec starts its own.
  bool nat_proxy = r.kind == Kind::kNat && old.spec.contains("dns_proxy");
  if (r.kind == Kind::kStandIn || nat_proxy) LAB_RETURN_IF_ERROR(RemoveResource(hv, old, old_facts));
  // DNS settings are rewritten and a NAT table is flushed and refilled atomically: applying the
  // new spec is the update.
  return ApplyResource(hv, r);
}

Result<std::string> RepairResource(hv::Hypervisor& hv, const Resource& r, const std::string& facts) {
  Status st;
  switch (r.kind) {
    case Kind::kNic: st = hv.RepairNic(As<hv::NicSpec>(r)); break;
    case Kind::kAdapter: st = hv.RepairAdapter(As<hv::AdapterSpec>(r)); break;
    case Kind::kSwitch: st = hv.RepairSwitch(As<hv::SwitchSpec>(r)); break;
    // resolv.conf is written whole: setting the servers again is the repair.
    case Kind::kDns: return hv.SetDns(As<hv::DnsSpec>(r));
    default: return Status::Error(std::string("a ") + ToString(r.kind) + " cannot be repaired in place");
  }
  if (!st.ok()) return st;
  return facts;
}

constexpr int kTeardownJobsPerJob = 4;
constexpr int kMaxTeardownJobs = 16;

// A teardown of every adapter one by one would cost a netlink and an nft round trip each, in the
// owner every VM shares; the owner's destruction removes them all at once.
std::vector<std::string> HomesOf(const Resource& r) {
  auto partition = [&r](const char* field) { return "partition/" + r.spec.value(field, std::string()); };
  switch (r.kind) {
    case Kind::kAdapter: return {partition("vm"), partition("owner")};
    case Kind::kNic: return {partition("machine"), "network/" + r.spec.value("network", std::string())};
    case Kind::kSwitch: return {partition("owner")};
    case Kind::kNat:
      if (r.spec.contains("dns_proxy") && !r.spec["dns_proxy"].is_null()) return {};
      return {partition("owner")};
    case Kind::kDns: return {partition("machine")};
    default: return {};
  }
}

bool ResourceAlive(hv::Hypervisor& hv, const Resource& r, const std::string& facts) {
  switch (r.kind) {
    case Kind::kNetwork:
    case Kind::kPartition: return hv.PartitionRunning(As<hv::PartitionSpec>(r), facts);
    case Kind::kStandIn: return hv.StandInRunning(As<hv::StandInSpec>(r), facts);
    default: return true;
  }
}

ExecReport Execute(const Plan& plan, const std::string& lab, hv::Hypervisor& hv, state::Store& store,
                   const ExecOptions& options) {
  ExecReport report;
  Runner runner(lab, hv, store, options, report);

  // Phase 1: teardown, a resource after everything recorded as depending on it.
  std::vector<Node> down;
  std::map<std::string, size_t> down_index;
  for (const auto& a : plan.actions)
    if (a.type == ActionType::kDelete || a.type == ActionType::kReplace) {
      down_index[a.old.key] = down.size();
      down.push_back(Node{&a, true, {}, 0, false, false});
    }
  for (size_t i = 0; i < down.size(); ++i)
    for (const auto& dep : down[i].action->old.deps)
      if (auto it = down_index.find(dep); it != down_index.end()) {
        down[i].next.push_back(it->second);  // dep waits for its dependent i
        ++down[it->second].waiting;
      }
  // Deleted (not replaced: a remade VM's disk is kept) partitions, and what goes with them.
  std::set<std::string> destroyed;
  for (const auto& n : down)
    if (n.action->type == ActionType::kDelete &&
        (n.action->old.kind == Kind::kPartition || n.action->old.kind == Kind::kNetwork))
      destroyed.insert(n.action->old.key);
  for (auto& n : down) {
    auto homes = HomesOf(n.action->old);
    n.subsumed = n.action->type == ActionType::kDelete && !homes.empty() &&
                 std::all_of(homes.begin(), homes.end(), [&](const std::string& k) { return destroyed.count(k) > 0; });
  }
  // Teardown mostly waits (processes to die, RCU grace periods of umount and cgroup writes), it
  // hardly computes: more workers than cores overlap the waits. `--jobs 1` stays one at a time.
  // Known before anything runs: a run interrupted in its teardown still says "N of M".
  report.total = static_cast<int>(down.size());
  for (const auto& a : plan.actions) report.total += a.type != ActionType::kDelete;
  runner.Run(down, options.jobs <= 1 ? 1 : std::min(options.jobs * kTeardownJobsPerJob, kMaxTeardownJobs));
  runner.Settle(down);
  if (!report.ok()) return report;

  // Phase 2: apply, a resource after what it depends on.
  std::vector<Node> up;
  std::map<std::string, size_t> up_index;
  for (const auto& a : plan.actions)
    if (a.type != ActionType::kDelete) {
      up_index[a.resource.key] = up.size();
      up.push_back(Node{&a, false, {}, 0, false, false});
    }
  for (size_t i = 0; i < up.size(); ++i)
    for (const auto& dep : up[i].action->resource.deps)
      if (auto it = up_index.find(dep); it != up_index.end()) {
        up[it->second].next.push_back(i);
        ++up[i].waiting;
      }
  runner.Run(up, options.jobs);
  return report;
}

}  // namespace lab::engine
