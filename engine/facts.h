// The lab file as the rules model sees it (schema::Lab -> hv::model::LabFacts), and the rules
// checked against it before anything is planned: a lab that breaks a rule of the seeds fails at
// `lab plan`, naming the VM, the Hyper-V setting and the fix, instead of halfway through `up`.
#pragma once

#include <string>
#include <vector>

#include "hv/model.h"
#include "hv/qemu_host.h"
#include "schema/lab.h"

namespace lab::engine {

/// The compatibility profile the lab file chooses (`compatibility:`), v8 by default.
hv::model::Profile ProfileOf(const schema::Lab& lab);

/// Every machine with its interfaces and switches, parents before children; `qemu` is what this
/// machine offers qemu VMs (their processor: hv::model::QemuProcessor), read only when the lab
/// has one.
hv::model::LabFacts LabFactsOf(const schema::Lab& lab, const hv::QemuHostFacts& qemu = {});

/// True when some VM of the lab has driver: qemu (only then is this machine probed for them).
bool HasQemu(const schema::Lab& lab);

/// The rules' verdict on the lab's static configuration, split by severity; each line names the
/// rule: "VM 'middle': ... [rule-id]".
struct RuleReport {
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
};
/// With qemu VMs, also what this machine cannot give them as asked (a warning: a processor count
/// above the machine's).
RuleReport CheckRules(const schema::Lab& lab, const hv::QemuHostFacts& qemu = {});

/// The same verdict as diagnostics of the lab file, for `lab validate`: each at the object it is
/// about (the adapter, NIC, switch or machine; the file's start when none is named), errors and
/// warnings with the model's message and rule id, in file order.
std::vector<schema::Diagnostic> RuleDiagnostics(const schema::Lab& lab, const hv::QemuHostFacts& qemu = {});

}  // namespace lab::engine
