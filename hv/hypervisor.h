// The embedded hypervisor's API, as the engine sees it.
//
// One method per Hyper-V concept; specs are plain data (hv/spec.h). Create* returns the facts
// observed while making the object (JSON text: pids and start times, kernel names), which the
// engine records and hands back to Remove* and Running*. Remove* of something already gone is
// success, so an interrupted teardown can simply run again.
//
// Implementations: LinuxHypervisor (kernel isolation; hv/linux_hypervisor.h) and, in tests, a
// recording fake. A future QEMU/KVM driver sits behind the same interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/spec.h"

namespace lab::hv {

/// Where a lab's objects live, and the mark they carry.
struct LabContext {
  std::string lab;                      // lab name
  std::string uid;                      // the lab's ownership mark (12 hex digits)
  std::string run_root = "/run/lab";    // namespace handles, partition roots
  std::string state_root = "/var/lib/lab";  // disks (writable layers), base layer
  std::string init_path;                // the lab-init binary
  /// "<lab>-<uid>": the name every object path of the lab contains.
  std::string Mark() const { return lab + "-" + uid; }
};

/// What `lab check` asks a machine to do.
struct ProbeRequest {
  std::string kind;                     // ping | resolve | tcp | http
  std::string target;
  int timeout_ms = 2000;
};
struct ProbeAnswer {
  bool ok = false;
  std::string detail;
  std::string value;
};

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  virtual Result<std::string> CreateNetwork(const NetworkSpec& s) = 0;
  virtual Status RemoveNetwork(const NetworkSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> CreatePartition(const PartitionSpec& s) = 0;
  virtual Status RemovePartition(const PartitionSpec& s, const std::string& facts) = 0;
  /// Whether the partition recorded with `facts` is still running (its init alive).
  virtual bool PartitionRunning(const PartitionSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> CreateNic(const NicSpec& s) = 0;
  virtual Status RemoveNic(const NicSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> CreateSwitch(const SwitchSpec& s) = 0;
  virtual Status RemoveSwitch(const SwitchSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> ConnectAdapter(const AdapterSpec& s) = 0;
  virtual Status RemoveAdapter(const AdapterSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> CreateNat(const NatSpec& s) = 0;
  virtual Status RemoveNat(const NatSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> SetDns(const DnsSpec& s) = 0;
  virtual Status ClearDns(const DnsSpec& s, const std::string& facts) = 0;

  virtual Result<std::string> StartStandIn(const StandInSpec& s) = 0;
  virtual Status StopStandIn(const StandInSpec& s, const std::string& facts) = 0;
  virtual bool StandInRunning(const StandInSpec& s, const std::string& facts) = 0;

  /// Runs a probe from inside a machine.
  virtual Result<ProbeAnswer> Probe(const PartitionSpec& machine, const ProbeRequest& request) = 0;
  /// Runs a command inside a machine with the caller's stdio; returns its exit code.
  virtual Result<int> Exec(const PartitionSpec& machine, const std::vector<std::string>& argv) = 0;

  /// After a complete teardown: removes the lab's own top-level directories and cgroups, which
  /// are empty by then (a non-empty one is left alone and reported).
  virtual Status RemoveLabRoot() = 0;
};

/// The Linux realization (kernel isolation).
std::unique_ptr<Hypervisor> MakeLinuxHypervisor(const LabContext& ctx);

}  // namespace lab::hv
