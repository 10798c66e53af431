// FakeHypervisor: the engine's hypervisor as a recording fake (ninja's FakeCommandRunner).
//
// Every call is recorded as one line, in the order the calls happened: the method name and the
// object it names ("CreatePartition middle", "ConnectAdapter nested1/Ethernet",
// "RemoveNat middle/LocalNAT", "PartitionRunning lan", "Probe nested1 ping www.example.test").
// A test can make one call fail (by its line), mark objects as dead (PartitionRunning and
// StandInRunning answer false for them) and fill the table Probe answers from. It touches no
// kernel object, so engine tests run without root.
//
// The executor calls from several threads: every member is safe to call concurrently.
// The engine makes a hypervisor per operation through a factory; Factory() hands out forwarding
// hypervisors that all record into this one fake, which must outlive the engine using it.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "base/text.h"
#include "engine/engine.h"
#include "hv/hypervisor.h"

namespace lab::testing {

class FakeHypervisor : public hv::Hypervisor {
 public:
  /// Makes the call recorded as `line` fail with `message` (every time, until Heal).
  void FailOn(const std::string& line, const std::string& message = "injected failure") {
    std::lock_guard guard(mu_);
    failures_[line] = message;
  }
  void Heal() {
    std::lock_guard guard(mu_);
    failures_.clear();
  }

  /// PartitionRunning (of a machine, or of the partition a network lives in) and StandInRunning
  /// answer false for objects named `name` (a machine or network name).
  void MarkDead(const std::string& name) {
    std::lock_guard guard(mu_);
    dead_.insert(name);
  }
  void Revive(const std::string& name) {
    std::lock_guard guard(mu_);
    dead_.erase(name);
  }

  /// Observe reports the recorded object `key` as found different: `what` (until ClearDrift);
  /// `in_place`: there with only its settings gone (hv::Finding).
  void SetDrift(const std::string& key, const std::string& what, bool in_place = false) {
    std::lock_guard guard(mu_);
    drift_[key] = hv::Finding(what, in_place);
  }
  void ClearDrift() {
    std::lock_guard guard(mu_);
    drift_.clear();
  }

  /// Probe(machine, {kind, target}) answers with `answers` in turn; the last one repeats.
  void SetProbe(const std::string& machine, const std::string& kind, const std::string& target,
                std::vector<Result<hv::ProbeAnswer>> answers) {
    std::lock_guard guard(mu_);
    probes_[{machine, kind, target}] = ProbeScript{std::move(answers), 0};
  }
  void SetProbe(const std::string& machine, const std::string& kind, const std::string& target,
                hv::ProbeAnswer answer) {
    SetProbe(machine, kind, target, std::vector<Result<hv::ProbeAnswer>>{std::move(answer)});
  }

  /// Every call so far, in order.
  std::vector<std::string> Calls() const {
    std::lock_guard guard(mu_);
    return calls_;
  }
  /// The calls whose method is `method` (the first word of the line).
  std::vector<std::string> Calls(const std::string& method) const {
    std::vector<std::string> out;
    for (auto& c : Calls())
      if (c.rfind(method + " ", 0) == 0 || c == method) out.push_back(c);
    return out;
  }
  /// The calls that change something (Create*, Remove*, Connect*, Set*, Clear*, Start*, Stop*),
  /// leaving out the observing ones (PartitionRunning, StandInRunning, Probe, ObserveTeam).
  std::vector<std::string> Mutations() const {
    std::vector<std::string> out;
    for (auto& c : Calls())
      if (c.rfind("PartitionRunning", 0) != 0 && c.rfind("StandInRunning", 0) != 0 && c.rfind("Probe", 0) != 0 &&
          c.rfind("ObserveTeam", 0) != 0)
        out.push_back(c);
    return out;
  }
  void ClearCalls() {
    std::lock_guard guard(mu_);
    calls_.clear();
  }
  /// The contexts the factory was asked for, in order.
  std::vector<hv::LabContext> Contexts() const {
    std::lock_guard guard(mu_);
    return contexts_;
  }

  /// A factory for engine::EngineOptions::hypervisor whose hypervisors record into this fake.
  engine::HypervisorFactory Factory() {
    return [this](const hv::LabContext& ctx) -> std::unique_ptr<hv::Hypervisor> {
      {
        std::lock_guard guard(mu_);
        contexts_.push_back(ctx);
      }
      return std::make_unique<Forwarding>(*this);
    };
  }

  // ---- hv::Hypervisor ----

  Result<std::string> CreateNetwork(const hv::NetworkSpec& s) override { return Make("CreateNetwork " + s.name, true); }
  Status RemoveNetwork(const hv::NetworkSpec& s, const std::string&) override { return Call("RemoveNetwork " + s.name); }

  Result<std::string> CreatePartition(const hv::PartitionSpec& s) override {
    auto facts = Make("CreatePartition " + s.name, true);
    if (facts) {
      std::lock_guard guard(mu_);
      dead_.erase(s.name);
    }
    return facts;
  }
  Status RemovePartition(const hv::PartitionSpec& s, const std::string&) override {
    return Call("RemovePartition " + s.name);
  }
  bool PartitionRunning(const hv::PartitionSpec& s, const std::string&) override {
    return Alive("PartitionRunning " + s.name, s.name);
  }
  /// Liveness as the default does, plus what SetDrift set for keys that are recorded.
  hv::Drift Observe(const hv::ObserveRequest& r) override {
    hv::Drift d = hv::Hypervisor::Observe(r);
    std::lock_guard guard(mu_);
    auto recorded = [&r](const std::string& key) {
      bool found = false;
      auto in = [&](const auto& list) {
        for (const auto& x : list) found = found || x.key == key;
      };
      in(r.networks), in(r.partitions), in(r.nics), in(r.switches), in(r.adapters), in(r.nats), in(r.dns),
          in(r.standins);
      return found;
    };
    for (const auto& [key, what] : drift_)
      if (recorded(key)) d.emplace(key, what);
    return d;
  }

  Result<std::string> RunCommands(const hv::RunSpec& s) override { return Make("RunCommands " + s.machine); }
  Status ClearRunLog(const hv::RunSpec& s) override { return Call("ClearRunLog " + s.machine); }

  Result<std::string> CreateNic(const hv::NicSpec& s) override { return Make("CreateNic " + s.machine + "/" + s.name); }
  Status RemoveNic(const hv::NicSpec& s, const std::string&) override { return Call("RemoveNic " + s.machine + "/" + s.name); }

  Result<std::string> CreateSwitch(const hv::SwitchSpec& s) override {
    return Make("CreateSwitch " + s.owner + "/" + s.name);
  }
  Status RemoveSwitch(const hv::SwitchSpec& s, const std::string&) override {
    return Call("RemoveSwitch " + s.owner + "/" + s.name);
  }

  Result<std::string> ConnectAdapter(const hv::AdapterSpec& s) override {
    return Make("ConnectAdapter " + s.vm + "/" + s.name);
  }
  Status RemoveAdapter(const hv::AdapterSpec& s, const std::string&) override {
    return Call("RemoveAdapter " + s.vm + "/" + s.name);
  }
  Result<std::string> SetAdapter(const hv::AdapterSpec& s, const std::string& facts) override {
    LAB_RETURN_IF_ERROR(Call("SetAdapter " + s.vm + "/" + s.name + " mac_address_spoofing=" +
                             (s.mac_address_spoofing ? "on" : "off") + Address(s.ip, s.gateway)));
    return facts;
  }
  Result<std::string> SetNicAddress(const hv::NicSpec& s, const std::string& facts) override {
    LAB_RETURN_IF_ERROR(Call("SetNicAddress " + s.machine + "/" + s.name + Address(s.ip, s.gateway)));
    return facts;
  }
  Result<std::string> SetSwitch(const hv::SwitchSpec& s, const std::string& facts) override {
    LAB_RETURN_IF_ERROR(Call("SetSwitch " + s.owner + "/" + s.name + " bridge=" + s.ifname + Address(s.ip, s.gateway)));
    return facts;
  }
  /// " ip=10.0.0.2/24 gateway=10.0.0.1", "" for neither.
  static std::string Address(const std::optional<Cidr>& ip, const std::optional<Ipv4>& gateway) {
    return (ip ? " ip=" + ip->ToString() : "") + (gateway ? " gateway=" + gateway->ToString() : "");
  }

  Status RepairNic(const hv::NicSpec& s) override { return Call("RepairNic " + s.machine + "/" + s.name); }
  Status RepairAdapter(const hv::AdapterSpec& s) override { return Call("RepairAdapter " + s.vm + "/" + s.name); }
  Status RepairSwitch(const hv::SwitchSpec& s) override { return Call("RepairSwitch " + s.owner + "/" + s.name); }
  /// "AnnounceAdapter vm/adapter flush owner/bridge,owner/bridge".
  Status AnnounceAdapter(const hv::AdapterSpec& s, const std::vector<hv::BridgeAt>& flush) override {
    std::vector<std::string> at;
    for (const auto& b : flush) at.push_back(b.owner + "/" + b.ifname);
    return Call("AnnounceAdapter " + s.vm + "/" + s.name + " flush " + Join(at, ","));
  }

  /// Links are up until SetLink downs them; ReconcileTeam binds the ports as the Linux
  /// realization does (hv::AssignTeam over the members up), from the links set here.
  Status SetLink(const hv::PartitionSpec& m, const std::string& ifname, bool up) override {
    LAB_RETURN_IF_ERROR(Call("SetLink " + m.name + "/" + ifname + (up ? " up" : " down")));
    std::lock_guard guard(mu_);
    if (up) down_links_.erase(m.name + "/" + ifname);
    else down_links_.insert(m.name + "/" + ifname);
    return Status::Ok();
  }
  Result<std::vector<hv::TeamMember>> ReconcileTeam(const hv::SwitchSpec& s,
                                                    const std::vector<hv::TeamPort>& ports) override {
    LAB_RETURN_IF_ERROR(Call("ReconcileTeam " + s.owner + "/" + s.name));
    std::lock_guard guard(mu_);
    std::vector<bool> up;
    for (const auto& u : s.uplinks) up.push_back(!down_links_.count(s.owner + "/" + u));
    return teams_[s.owner + "/" + s.name] = hv::AssignTeam(s.uplinks, up, ports);
  }

  /// The bindings as the last ReconcileTeam left them, links as SetLink left them; changes nothing.
  Result<std::vector<hv::TeamMember>> ObserveTeam(const hv::SwitchSpec& s, const std::vector<hv::TeamPort>&) override {
    std::lock_guard guard(mu_);
    calls_.push_back("ObserveTeam " + s.owner + "/" + s.name);
    std::vector<hv::TeamMember> team = teams_[s.owner + "/" + s.name];
    for (auto& m : team) m.link_up = !down_links_.count(s.owner + "/" + m.name);
    return team;
  }

  Result<std::string> CreateNat(const hv::NatSpec& s) override { return Make("CreateNat " + s.owner + "/" + s.name); }
  Status RemoveNat(const hv::NatSpec& s, const std::string&) override { return Call("RemoveNat " + s.owner + "/" + s.name); }

  Result<std::string> SetDns(const hv::DnsSpec& s) override { return Make("SetDns " + s.machine); }
  Status ClearDns(const hv::DnsSpec& s, const std::string&) override { return Call("ClearDns " + s.machine); }

  Result<std::string> StartStandIn(const hv::StandInSpec& s) override { return Make("StartStandIn " + s.network, true); }
  Status StopStandIn(const hv::StandInSpec& s, const std::string&) override { return Call("StopStandIn " + s.network); }
  bool StandInRunning(const hv::StandInSpec& s, const std::string&) override {
    return Alive("StandInRunning " + s.network, s.network);
  }

  Result<hv::ProbeAnswer> Probe(const hv::PartitionSpec& machine, const hv::ProbeRequest& r) override {
    std::string line = "Probe " + machine.name + " " + r.kind + " " + r.target;
    std::lock_guard guard(mu_);
    calls_.push_back(line);
    auto it = probes_.find({machine.name, r.kind, r.target});
    if (it == probes_.end()) return Status::Error("fake: no answer for `" + line + "`");
    ProbeScript& script = it->second;
    if (script.answers.empty()) return Status::Error("fake: no answer for `" + line + "`");
    size_t i = std::min(script.next, script.answers.size() - 1);
    ++script.next;
    return script.answers[i];
  }

  Result<int> Exec(const hv::PartitionSpec& machine, const hv::ExecRequest& request) override {
    std::string line = "Exec " + machine.name + " " + Join(request.argv, " ");
    LAB_RETURN_IF_ERROR(Call(line));
    return 0;
  }

  Status RemoveLabRoot() override { return Call("RemoveLabRoot"); }
  void TearingDownLab() override { (void)Call("TearingDownLab"); }

  /// A stopped partition reads as not running until it is created (started) again.
  /// Recorded as "MigratePartition VM FROM->TO ADAPTER@OWNER/BRIDGE...".
  Result<hv::LiveMigration> MigratePartition(const hv::PartitionSpec& from, const std::string&, const hv::PartitionSpec& to,
                                             const std::vector<hv::AdapterSpec>& adapters) override {
    std::string line = "MigratePartition " + from.name + " " + from.parent() + "->" + to.parent();
    for (const auto& a : adapters) line += " " + a.vm + "/" + a.name + "@" + a.owner + "/" + a.switch_ifname;
    auto facts = Make(line, true);
    if (!facts) return facts.status();
    return hv::LiveMigration{*facts, 420, 42};
  }
  Status StopPartition(const hv::PartitionSpec& s, const std::string&) override {
    LAB_RETURN_IF_ERROR(Call("StopPartition " + s.name));
    std::lock_guard guard(mu_);
    dead_.insert(s.name);
    return Status::Ok();
  }
  Result<std::string> SetPartitionMemory(const hv::PartitionSpec& s, const std::string& facts) override {
    LAB_RETURN_IF_ERROR(Call("SetPartitionMemory " + s.name + " " + std::to_string(s.memory_bytes >> 20) + "MiB"));
    return facts;
  }
  Status SavePartition(const hv::PartitionSpec& s, const std::string&) override {
    LAB_RETURN_IF_ERROR(Call("SavePartition " + s.name));
    std::lock_guard guard(mu_);
    saved_.insert(s.name);
    return Status::Ok();
  }
  Status ResumePartition(const hv::PartitionSpec& s, const std::string&) override {
    LAB_RETURN_IF_ERROR(Call("ResumePartition " + s.name));
    std::lock_guard guard(mu_);
    saved_.erase(s.name);
    return Status::Ok();
  }
  bool PartitionSaved(const hv::PartitionSpec& s, const std::string&) override {
    std::lock_guard guard(mu_);
    return saved_.count(s.name) > 0;
  }
  Status CreateCheckpoint(const hv::PartitionSpec& s, const std::string&, const std::string& name) override {
    LAB_RETURN_IF_ERROR(Call("CreateCheckpoint " + s.name + " " + name));
    std::lock_guard guard(mu_);
    checkpoints_[s.name].push_back(name);
    return Status::Ok();
  }
  Status RestoreCheckpoint(const hv::PartitionSpec& s, const std::string& name) override {
    return Call("RestoreCheckpoint " + s.name + " " + name);
  }
  std::vector<std::string> Checkpoints(const hv::PartitionSpec& s) override {
    std::lock_guard guard(mu_);
    return checkpoints_[s.name];
  }
  Status RemoveCheckpoint(const hv::PartitionSpec& s, const std::string& name) override {
    LAB_RETURN_IF_ERROR(Call("RemoveCheckpoint " + s.name + " " + name));
    std::lock_guard guard(mu_);
    auto& all = checkpoints_[s.name];
    auto it = std::find(all.begin(), all.end(), name);
    if (it == all.end()) return Status::Error("no checkpoint '" + name + "'");
    all.erase(it);
    return Status::Ok();
  }

 private:
  struct ProbeScript {
    std::vector<Result<hv::ProbeAnswer>> answers;
    size_t next = 0;
  };

  /// Forwards to the fake that made it, so the engine can own (and destroy) its hypervisor.
  class Forwarding : public hv::Hypervisor {
   public:
    explicit Forwarding(FakeHypervisor& fake) : f_(fake) {}
    Result<std::string> CreateNetwork(const hv::NetworkSpec& s) override { return f_.CreateNetwork(s); }
    Status RemoveNetwork(const hv::NetworkSpec& s, const std::string& x) override { return f_.RemoveNetwork(s, x); }
    Result<std::string> CreatePartition(const hv::PartitionSpec& s) override { return f_.CreatePartition(s); }
    Status RemovePartition(const hv::PartitionSpec& s, const std::string& x) override { return f_.RemovePartition(s, x); }
    bool PartitionRunning(const hv::PartitionSpec& s, const std::string& x) override { return f_.PartitionRunning(s, x); }
    Result<std::string> RunCommands(const hv::RunSpec& s) override { return f_.RunCommands(s); }
    Status ClearRunLog(const hv::RunSpec& s) override { return f_.ClearRunLog(s); }
    hv::Drift Observe(const hv::ObserveRequest& r) override { return f_.Observe(r); }
    Result<std::string> CreateNic(const hv::NicSpec& s) override { return f_.CreateNic(s); }
    Status RemoveNic(const hv::NicSpec& s, const std::string& x) override { return f_.RemoveNic(s, x); }
    Result<std::string> CreateSwitch(const hv::SwitchSpec& s) override { return f_.CreateSwitch(s); }
    Status RemoveSwitch(const hv::SwitchSpec& s, const std::string& x) override { return f_.RemoveSwitch(s, x); }
    Result<std::string> ConnectAdapter(const hv::AdapterSpec& s) override { return f_.ConnectAdapter(s); }
    Status RemoveAdapter(const hv::AdapterSpec& s, const std::string& x) override { return f_.RemoveAdapter(s, x); }
    Result<std::string> SetAdapter(const hv::AdapterSpec& s, const std::string& x) override {
      return f_.SetAdapter(s, x);
    }
    Result<std::string> SetNicAddress(const hv::NicSpec& s, const std::string& x) override {
      return f_.SetNicAddress(s, x);
    }
    Result<std::string> SetSwitch(const hv::SwitchSpec& s, const std::string& x) override { return f_.SetSwitch(s, x); }
    Status SetLink(const hv::PartitionSpec& m, const std::string& i, bool up) override { return f_.SetLink(m, i, up); }
    Status RepairNic(const hv::NicSpec& s) override { return f_.RepairNic(s); }
    Status RepairAdapter(const hv::AdapterSpec& s) override { return f_.RepairAdapter(s); }
    Status RepairSwitch(const hv::SwitchSpec& s) override { return f_.RepairSwitch(s); }
    Status AnnounceAdapter(const hv::AdapterSpec& s, const std::vector<hv::BridgeAt>& f) override {
      return f_.AnnounceAdapter(s, f);
    }
    Result<std::vector<hv::TeamMember>> ReconcileTeam(const hv::SwitchSpec& s,
                                                      const std::vector<hv::TeamPort>& p) override {
      return f_.ReconcileTeam(s, p);
    }
    Result<std::vector<hv::TeamMember>> ObserveTeam(const hv::SwitchSpec& s,
                                                    const std::vector<hv::TeamPort>& p) override {
      return f_.ObserveTeam(s, p);
    }
    Result<std::string> CreateNat(const hv::NatSpec& s) override { return f_.CreateNat(s); }
    Status RemoveNat(const hv::NatSpec& s, const std::string& x) override { return f_.RemoveNat(s, x); }
    Result<std::string> SetDns(const hv::DnsSpec& s) override { return f_.SetDns(s); }
    Status ClearDns(const hv::DnsSpec& s, const std::string& x) override { return f_.ClearDns(s, x); }
    Result<std::string> StartStandIn(const hv::StandInSpec& s) override { return f_.StartStandIn(s); }
    Status StopStandIn(const hv::StandInSpec& s, const std::string& x) override { return f_.StopStandIn(s, x); }
    bool StandInRunning(const hv::StandInSpec& s, const std::string& x) override { return f_.StandInRunning(s, x); }
    Result<hv::ProbeAnswer> Probe(const hv::PartitionSpec& m, const hv::ProbeRequest& r) override {
      return f_.Probe(m, r);
    }
    Result<int> Exec(const hv::PartitionSpec& m, const hv::ExecRequest& r) override {
      return f_.Exec(m, r);
    }
    Status RemoveLabRoot() override { return f_.RemoveLabRoot(); }
    void TearingDownLab() override { f_.TearingDownLab(); }
    Result<hv::LiveMigration> MigratePartition(const hv::PartitionSpec& s, const std::string& x, const hv::PartitionSpec& t,
                                               const std::vector<hv::AdapterSpec>& a) override {
      return f_.MigratePartition(s, x, t, a);
    }
    Status StopPartition(const hv::PartitionSpec& s, const std::string& x) override { return f_.StopPartition(s, x); }
    Status SavePartition(const hv::PartitionSpec& s, const std::string& x) override { return f_.SavePartition(s, x); }
    Result<std::string> SetPartitionMemory(const hv::PartitionSpec& s, const std::string& x) override {
      return f_.SetPartitionMemory(s, x);
    }
    Status ResumePartition(const hv::PartitionSpec& s, const std::string& x) override {
      return f_.ResumePartition(s, x);
    }
    bool PartitionSaved(const hv::PartitionSpec& s, const std::string& x) override { return f_.PartitionSaved(s, x); }
    Status CreateCheckpoint(const hv::PartitionSpec& s, const std::string& x, const std::string& n) override {
      return f_.CreateCheckpoint(s, x, n);
    }
    Status RestoreCheckpoint(const hv::PartitionSpec& s, const std::string& n) override {
      return f_.RestoreCheckpoint(s, n);
    }
    std::vector<std::string> Checkpoints(const hv::PartitionSpec& s) override { return f_.Checkpoints(s); }
    Status RemoveCheckpoint(const hv::PartitionSpec& s, const std::string& n) override { return f_.RemoveCheckpoint(s, n); }

   private:
    FakeHypervisor& f_;
  };

  Status Call(const std::string& line) {
    std::lock_guard guard(mu_);
    calls_.push_back(line);
    if (auto it = failures_.find(line); it != failures_.end()) return Status::Error(it->second);
    return Status::Ok();
  }

  /// A create: facts name a process for objects that have one (partitions, networks, stand-ins).
  Result<std::string> Make(const std::string& line, bool has_process = false) {
    LAB_RETURN_IF_ERROR(Call(line));
    std::lock_guard guard(mu_);
    int pid = ++last_pid_;
    if (has_process) return R"({"init":{"pid":)" + std::to_string(pid) + R"(,"start_time":1}})";
    return R"({"made":")" + line + R"("})";
  }

  bool Alive(const std::string& line, const std::string& name) {
    std::lock_guard guard(mu_);
    calls_.push_back(line);
    return !dead_.count(name);
  }

  mutable std::mutex mu_;
  std::vector<std::string> calls_;
  std::map<std::string, std::string> failures_;
  std::set<std::string> dead_;
  std::map<std::string, hv::Finding> drift_;
  std::set<std::string> saved_;
  std::set<std::string> down_links_;           // "machine/ifname"
  std::map<std::string, std::vector<hv::TeamMember>> teams_;  // "owner/switch" -> last ReconcileTeam
  std::map<std::string, std::vector<std::string>> checkpoints_;
  std::map<std::tuple<std::string, std::string, std::string>, ProbeScript> probes_;
  std::vector<hv::LabContext> contexts_;
  int last_pid_ = 1000;
};

}  // namespace lab::testing
