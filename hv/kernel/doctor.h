// What this machine supports, for `lab doctor`: Get-NestedVirtStatus.ps1 for the embedded
// hypervisor.
//
// Each capability is tested for real where a test is cheap: namespaces are unshared in forked
// children, veth/bridge/altname and nftables are made inside a throwaway network namespace (a
// helper thread's, alive only as long as its handle), and overlayfs is mounted in a forked child's
// private mount namespace under a temporary directory in /tmp that is removed afterwards. Nothing
// is ever made in the machine's own namespaces, and the calling process never changes namespace.
#pragma once

#include <string>
#include <vector>

namespace lab::hv::kernel {

/// One line of the doctor's table.
struct Capability {
  std::string name;    // "network namespace", "cgroup memory", "/dev/kvm", ...
  std::string state;   // "ok", "missing" or "n/a"
  std::string detail;  // what was found, or why it failed
  std::string fix;     // when missing: the package, kernel option, sysctl or "run as root"
  bool required = false;  // partitions cannot run without it
};

inline constexpr const char* kCapOk = "ok";
inline constexpr const char* kCapMissing = "missing";
inline constexpr const char* kCapNotApplicable = "n/a";

/// Probes every capability, in a fixed order. `init_path` is the lab-init binary partitions run
/// (see cli/common.cc). Never fails: a probe that cannot run reports its capability missing.
std::vector<Capability> Diagnose(const std::string& init_path);

/// True when no required capability is missing (optional ones may be).
bool AllRequiredPresent(const std::vector<Capability>& caps);

}  // namespace lab::hv::kernel
