// The lab as a Hyper-V PowerShell script: the seeds' cmdlets that build the same lab on real
// Hyper-V hosts (`lab export FILE --format powershell`).
//
// The script runs one host's part at a time (-LabHost, as Administrator on that host). On a host
// it makes the switches and the host's addresses, then each VM in the order the seeds give:
// New-VM, nesting and static memory configured while the VM is off, Start-VM, the guest renamed
// to its computer name, then inside the VM through PowerShell Direct (Invoke-Command -VMName):
// Hyper-V installed (for a middle VM), its switches, NAT (with the DNS Server role where the NAT
// proxies DNS) and addresses, and its own nested VMs the same way, to any depth.
//
// It converges, as `lab up` does: every New-*/Add-* runs only where the Get-* of the same object
// finds nothing, settings that need the VM off are applied only while it is off, and a second run
// goes on from where the first stopped. Every wait is bounded (-WaitMinutes) and says what it
// waits for. Without -VhdDirectory the VMs have no operating system, so the host's part stops
// once they are made, saying what to do. -Version is written only where the file gives version:.
//
// Invariant: every value taken from the lab file reaches the script either as a single-quoted
// string made by PsQuote or inside a comment with line breaks removed, so no name, address or
// path can end a string or a comment early, whatever validation let through.
#pragma once

#include <string>
#include <string_view>

#include "base/quote.h"
#include "schema/lab.h"

namespace lab::engine {

/// The single-quoted PowerShell literal of base/quote.h, which every cmdlet hint shares.
using ::lab::PsQuote;

/// The whole script for `lab`, deterministic (same lab, same text). Comments name the file
/// `lab.file` it was generated from.
std::string ExportPowerShell(const schema::Lab& lab);

}  // namespace lab::engine
