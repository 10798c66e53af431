// Cleanup by ownership marks alone, for when a lab's records are lost (state database deleted or
// corrupt): everything of lab NAME carries "<NAME>-<uid>" in its paths and cgroups, so it can be
// found on the machine and removed without any record, and nothing else is touched.
//
// Found by mark: directories RUN/<NAME>-<uid> and STATE/disks/<NAME>-<uid>, where <uid> is 12 hex
// digits (the form every lab's uid has). Removed for each mark: every process in the cgroup
// lab/<NAME>-<uid> and below (init of every partition, so their network namespaces, links, nft
// tables go with them), every mount under its run and disk directories (namespace handles,
// overlay roots), those directories, and the cgroups. Links and tables live only inside the
// lab's own namespaces, never in the machine's, so they need no search of their own.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "hv/hypervisor.h"

namespace lab::hv {

/// The uids of lab `lab` found by their marks among the entries of `dirs` (a run root, a state
/// root's disks/), sorted. Cgroups are not searched: the "lab" cgroup is shared by every state
/// and run directory on the machine, and a lab of the same name under other directories is not
/// this one.
std::vector<std::string> FindLabUids(const std::string& lab, const std::vector<std::string>& dirs);

/// What SweepLab found still there, and removed.
struct Swept {
  int processes = 0;
  size_t mounts = 0;
  bool empty() const { return processes == 0 && mounts == 0; }
  /// "3 processes, 14 mounts"
  std::string Describe() const;
};

/// Removes everything carrying ctx.Mark() (see above); what is already gone is success.
/// Says in `swept` what it found there.
Status SweepLab(const LabContext& ctx, Swept* swept = nullptr);

}  // namespace lab::hv
