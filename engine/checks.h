// `lab check`: the lab file's checks, run from inside machines, judged against expectations.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "hv/hypervisor.h"
#include "schema/lab.h"

namespace lab::engine {

struct CheckOutcome {
  schema::Check check;
  bool passed = false;
  std::string observed;   // what happened: "reply from 10.10.0.1", "source 10.10.0.10", "timeout"
  std::string reason;     // why it failed, empty when passed
  int attempts = 0;
  double millis = 0;
};

/// Runs every check (in parallel, `jobs` at a time), with its timeout and retries.
/// `machines` maps machine name -> its partition spec.
std::vector<CheckOutcome> RunChecks(const std::vector<schema::Check>& checks,
                                    const std::map<std::string, hv::PartitionSpec>& machines,
                                    hv::Hypervisor& hv, int jobs);

/// Judges one probe answer against a check's expectations (pure; exposed for tests).
CheckOutcome Judge(const schema::Check& check, const Result<hv::ProbeAnswer>& answer);

}  // namespace lab::engine
