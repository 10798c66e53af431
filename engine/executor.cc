#include "engine/executor.h"

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace lab::engine {
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
};

class Runner {
 public:
  Runner(const std::string& lab, hv::Hypervisor& hv, state::Store& store, const ExecOptions& options,
         ExecReport& report)
      : lab_(lab), hv_(hv), store_(store), options_(options), report_(report) {}

  /// Runs the nodes, respecting edges; returns when all are finished or skipped.
  void Run(std::vector<Node>& nodes) {
    nodes_ = &nodes;
    remaining_ = nodes.size();
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i].waiting == 0) ready_.push_back(i);
    int jobs = std::max(1, options_.jobs);
    std::vector<std::thread> workers;
    for (int i = 0; i < jobs; ++i) workers.emplace_back([this] { Work(); });
    for (auto& w : workers) w.join();
  }

 private:
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
    auto id = store_.BeginAction(lab_, verb, a.resource.key, a.reason);
    if (!id) return id.status();
    Status st;
    std::optional<state::ResourceRecord> put;
    std::string erase;
    if (!options_.fail_key.empty() && options_.fail_key == a.resource.key) {
      st = Status::Error("injected failure (LAB_INJECT_FAILURE)");
      (void)store_.FailAction(*id, st.message());
      return st;
    }
    if (teardown) {
      // A VM that is remade is the same VM restarted: Stop-VM keeps its disk. Only a VM that
      // leaves the lab file loses it.
      st = a.type == ActionType::kReplace && a.old.kind == Kind::kPartition
               ? hv_.StopPartition(a.old.spec.get<hv::PartitionSpec>(), a.old_facts)
               : RemoveResource(hv_, a.old, a.old_facts);
      erase = a.old.key;
    } else {
      auto facts = a.type == ActionType::kUpdate ? UpdateResource(hv_, a.resource, a.old, a.old_facts)
                                                 : ApplyResource(hv_, a.resource);
      st = facts.status();
      if (facts) {
        put = state::ResourceRecord{ToString(a.resource.kind),
                                    a.resource.key,
                                    a.resource.deps.empty() ? "" : a.resource.deps.front(),
                                    a.resource.Hash(),
                                    a.resource.ToRecordJson(),
                                    *facts,
                                    0};
      }
    }
    if (!st.ok()) {
      (void)store_.FailAction(*id, st.message());
      return st;
    }
    return store_.CommitAction(*id, lab_, put, erase);
  }

  const std::string& lab_;
  hv::Hypervisor& hv_;
  state::Store& store_;
  const ExecOptions& options_;
  ExecReport& report_;
  std::vector<Node>* nodes_ = nullptr;
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
  }
  return Status::Error("unknown resource kind");
}

Result<std::string> UpdateResource(hv::Hypervisor& hv, const Resource& r, const Resource& old,
                                   const std::string& old_facts) {
  if (r.kind == Kind::kAdapter) return hv.SetAdapter(As<hv::AdapterSpec>(r), old_facts);
  // The planner updates a VM in place only for a memory change the rules allow at runtime.
  if (r.kind == Kind::kPartition) return hv.SetPartitionMemory(As<hv::PartitionSpec>(r), old_facts);
  // A NAT's DNS proxy is a process: the old one stops before the new spec starts its own.
  bool nat_proxy = r.kind == Kind::kNat && old.spec.contains("dns_proxy");
  if (r.kind == Kind::kStandIn || nat_proxy) LAB_RETURN_IF_ERROR(RemoveResource(hv, old, old_facts));
  // DNS settings are rewritten and a NAT table is flushed and refilled atomically: applying the
  // new spec is the update.
  return ApplyResource(hv, r);
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
      down.push_back(Node{&a, true, {}, 0, false});
    }
  for (size_t i = 0; i < down.size(); ++i)
    for (const auto& dep : down[i].action->old.deps)
      if (auto it = down_index.find(dep); it != down_index.end()) {
        down[i].next.push_back(it->second);  // dep waits for its dependent i
        ++down[it->second].waiting;
      }
  runner.Run(down);
  if (!report.ok()) return report;

  // Phase 2: apply, a resource after what it depends on.
  std::vector<Node> up;
  std::map<std::string, size_t> up_index;
  for (const auto& a : plan.actions)
    if (a.type != ActionType::kDelete) {
      up_index[a.resource.key] = up.size();
      up.push_back(Node{&a, false, {}, 0, false});
    }
  for (size_t i = 0; i < up.size(); ++i)
    for (const auto& dep : up[i].action->resource.deps)
      if (auto it = up_index.find(dep); it != up_index.end()) {
        up[it->second].next.push_back(i);
        ++up[i].waiting;
      }
  runner.Run(up);
  return report;
}

}  // namespace lab::engine
