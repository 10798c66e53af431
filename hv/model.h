// The rules model of the embedded hypervisor: the VM state machine and every rule and limit of
// nested virtualization that the seeds (../shared/seeds/) state, as pure functions over plain
// facts. No I/O, no kernel, no schema: the engine fills the facts (from schema::Lab, the state
// store and what the hypervisor observes) and asks before it touches anything, so a lab that
// breaks a rule fails at `lab plan`, not halfway through `lab up`.
//
// Three compatibility profiles: the two generations the seeds describe, and Hyper-V as Microsoft's
// current guide states it:
//  - kV8 ("v8", the default): configuration version 8.0 behaviour (build 14361 and later):
//    checkpoints, save and start work for VMs with nesting; dynamic memory and runtime memory
//    resize are incompatible only while a hypervisor runs inside; live migration of such a VM
//    is refused; nesting needs configuration version 8.0.
//  - kPreview10565 ("preview-10565"): the first preview (build 10565): once nesting is enabled,
//    no checkpoints, no save/restore, no live migration, no dynamic memory and no runtime
//    resize; a host with Device Guard cannot expose the extensions.
//  - kWs2022 ("ws2022"): current Hyper-V (Windows Server 2022 / Windows 11 hosts), as Microsoft's
//    guide "Run Hyper-V in a Virtual Machine with Nested Virtualization" states it now: v8's
//    behaviour, with nesting on Intel (VT-x and EPT, version 8.0 or later) and on AMD EPYC/Ryzen
//    (version 10.0 or later). v8 and preview-10565 keep the seeds' "nesting is currently
//    Intel-only". Dynamic memory on a VM with exposed extensions: allowed under v8 and ws2022
//    while no hypervisor runs inside (a warning says it will not fluctuate once one does); a VM
//    that runs nested VMs or owns switches needs static memory in every profile.
//
// Every rule has an id (Rules() lists them with the seed sentence each comes from; docs/rules.md
// is the same table for people). Every Violation names the VM, the Hyper-V setting and the fix.
// Invariants: CheckTransition never returns an allowed Verdict whose next state the state
// machine does not allow; a refused Verdict keeps next == the current state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/net.h"
#include "base/status.h"

namespace lab::hv::model {

enum class Profile { kV8, kPreview10565, kWs2022 };
/// "v8", "preview-10565" or "ws2022", as written after `compatibility:` in a lab file.
const char* ToString(Profile p);
/// The profile named `name`, or nullopt.
std::optional<Profile> ParseProfile(std::string_view name);
/// Every profile name, the default first.
std::vector<std::string> ProfileNames();

/// Lifecycle of one VM: Off -> Running <-> Saved; Stop from Saved discards the saved state.
enum class State { kOff, kRunning, kSaved };
const char* ToString(State s);

/// What can be done to a VM. Each is one Hyper-V cmdlet (ToString gives it).
enum class Operation {
  kStart,                           // Start-VM: Off -> Running, Saved -> Running (restore)
  kStop,                            // Stop-VM: Running -> Off, Saved -> Off (saved state discarded)
  kSave,                            // Save-VM: Running -> Saved
  kCreateCheckpoint,                // Checkpoint-VM
  kApplyCheckpoint,                 // Restore-VMCheckpoint (the VM must be off; it stays off)
  kLiveMigrate,                     // Move-VM of a running VM (an off or saved VM moves without a live migration)
  kResizeMemory,                    // Set-VMMemory -StartupBytes
  kExposeVirtualizationExtensions,  // Set-VMProcessor -ExposeVirtualizationExtensions $true
  kHideVirtualizationExtensions,    // Set-VMProcessor -ExposeVirtualizationExtensions $false
  kEnableDynamicMemory,             // Set-VMMemory -DynamicMemoryEnabled $true
  kDisableDynamicMemory,            // Set-VMMemory -DynamicMemoryEnabled $false
  kUpdateVersion,                   // Update-VMVersion
};
/// The cmdlet, e.g. "Set-VMProcessor -ExposeVirtualizationExtensions $true".
const char* ToString(Operation op);

/// The processor whose virtualization extensions a VM would see. kNone: the hypervisor uses no
/// hardware virtualization (the Linux realization: kernel isolation), so the vendor is moot.
enum class ProcessorVendor { kNone, kIntel, kAmd, kOther };

/// How QEMU runs a qemu VM's processor: KVM (the processor of the machine QEMU runs on, passed
/// through) or TCG (software emulation).
enum class Accelerator { kTcg, kKvm };
const char* ToString(Accelerator a);

/// The processor a qemu VM's guest sees, so the one its virtualization extensions come from:
/// under TCG an AMD one whatever the hardware (QEMU emulates AMD SVM with NPT, not Intel VMX);
/// under KVM `underlying`, the processor of the machine QEMU runs on (Intel VT-x with EPT or
/// AMD-V). Pure: the engine finds the accelerator and the processor (engine/facts.h).
ProcessorVendor QemuProcessor(Accelerator accel, ProcessorVendor underlying);

/// One VM as the rules see it.
struct VmFacts {
  std::string name;
  State state = State::kOff;
  bool expose_virtualization_extensions = false;
  bool dynamic_memory = false;
  std::string version = "9.0";       // configuration version
  bool vbs = false;                  // virtualization-based security on the VM
  /// A hypervisor runs inside: the VM is running, exposes its extensions and has child VMs
  /// running. Only this (not merely exposing) blocks memory changes and live migration in v8.
  bool hypervisor_running = false;
  /// The machine the VM runs on (host or middle VM) has Device Guard / VBS enabled.
  bool host_device_guard = false;
  ProcessorVendor vendor = ProcessorVendor::kNone;
  /// A qemu VM: where its processor comes from (LabFacts::ProcessorSourceOf), which refusals
  /// about the processor say; "" for a partition (its host's processor).
  std::string processor_source;
};

enum class Severity {
  kError,    // refused: the operation or lab is not allowed
  kWarning,  // allowed, but it behaves as the seeds say (frames dropped, memory static)
};

struct Violation {
  std::string rule;     // an id of Rules(), e.g. "nesting-only-while-off"
  Severity severity = Severity::kError;
  std::string message;  // "VM 'middle': ... (the cmdlet that fixes it)"
  /// What it is about, so that a caller can point at it in the lab file (CheckLab fills them;
  /// empty when not known): the machine, and its interface (NIC or adapter) or switch.
  std::string machine;
  std::string interface;
  std::string switch_name;
};

/// The answer to "may this VM do that now?".
struct Verdict {
  State next = State::kOff;               // the state after the operation; the current one if refused
  std::vector<Violation> violations;      // errors refuse; warnings say how it will behave
  std::vector<std::string> effects;       // what else happens ("the saved state is discarded")

  /// True when no violation is an error.
  bool allowed() const;
  /// Ok, or the messages of the errors joined by "; ", each ending with its rule id: "... [rule-id]".
  Status ToStatus() const;
};

/// Checks one operation on one VM against the state machine and every rule of `profile`.
Verdict CheckTransition(const VmFacts& vm, Operation op, Profile profile);

/// Whether the VM's memory may change by itself (dynamic memory at work). False while a
/// hypervisor runs inside (v8: a dynamic-memory VM then behaves as static) and, in the 10565
/// preview, as soon as nesting is enabled.
bool MemoryFluctuates(const VmFacts& vm, Profile profile);

// ---- A whole lab's static configuration -------------------------------------------------------

enum class SwitchKind { kExternal, kInternal, kPrivate };

/// A host's NIC or a VM's network adapter.
struct InterfaceFacts {
  std::string name;                    // "Ethernet"
  std::string switch_name;             // adapters: the switch of the parent it connects to
  bool mac_address_spoofing = false;   // adapters only
  std::optional<Cidr> ip;
  std::optional<Ipv4> gateway;
};

/// A virtual switch (New-VMSwitch) owned by a host or a middle VM.
struct SwitchFacts {
  std::string name;
  SwitchKind kind = SwitchKind::kInternal;
  std::vector<std::string> binds;      // external: the owner's NICs / adapters it takes
  bool allow_management_os = true;     // external
  bool embedded_teaming = false;       // SET
  bool lacp = false;                   // teaming mode LACP was asked for
  std::optional<Cidr> ip;              // the owner's vEthernet (NAME) address
  std::optional<Cidr> nat_prefix;      // New-NetNat on this switch
};

/// A host or a VM at any depth.
struct MachineFacts {
  std::string name;
  std::string parent;                  // "" for a host
  bool is_host = false;
  bool expose_virtualization_extensions = false;
  bool dynamic_memory = false;
  std::string version = "9.0";
  bool vbs = false;                    // VMs: virtualization-based security (Device Guard)
  std::vector<InterfaceFacts> interfaces;  // a host's NICs or a VM's adapters
  std::vector<SwitchFacts> switches;       // switches it owns
  /// Hosts: the processor (the lab file's `processor: {vendor: ...}`); kNone leaves LabFacts::vendor.
  ProcessorVendor vendor = ProcessorVendor::kNone;
  /// VMs: `driver: qemu`, a QEMU guest whose processor is QemuProcessor's (LabFacts::ProcessorOf).
  bool qemu = false;
};

struct LabFacts {
  Profile profile = Profile::kV8;
  ProcessorVendor vendor = ProcessorVendor::kNone;  // the hosts' processor where a host does not say
  bool host_device_guard = false;      // the physical hosts run Device Guard
  std::vector<MachineFacts> machines;  // parents before children
  /// Where qemu VMs run on this machine (only read when the lab has one): the accelerator QEMU
  /// gets here, and the real processor KVM would pass through (/proc/cpuinfo's vendor_id). A
  /// host's `processor: {vendor: ...}` is the processor partitions simulate; a qemu VM gets a
  /// real one.
  Accelerator accel = Accelerator::kTcg;
  ProcessorVendor cpu = ProcessorVendor::kNone;

  const MachineFacts* Find(const std::string& name) const;
  /// The processor a machine's extensions come from (ProcessorOf).
  ProcessorVendor VendorOf(const MachineFacts& m) const;
  /// The processor the software of `m` runs on: a host's own; a partition's parent's (one
  /// kernel); a qemu VM's QemuProcessor: under `accel` on `cpu` when its QEMU runs outside any
  /// qemu VM, else inside the nearest qemu VM Q above it, under KVM on Q's processor when Q
  /// exposes its extensions (TCG otherwise).
  ProcessorVendor ProcessorOf(const MachineFacts& m) const;
  /// Where the processor of `m` comes from when a qemu VM gives it (`m` or one above it), as a
  /// clause of a refusal: "as a qemu VM it gets an AMD processor: QEMU's software emulation
  /// (TCG) offers only AMD SVM, not Intel VT-x"; "" when a host gives it.
  std::string ProcessorSourceOf(const MachineFacts& m) const;
};

/// Every rule of the lab's static configuration: nesting (exposed parents, static memory,
/// version, VBS, Device Guard, Intel), switches (SET, management OS, private) and networking
/// (CheckNetworking). Errors and warnings in machine order.
std::vector<Violation> CheckLab(const LabFacts& lab);

/// The networking options of nested VMs: a nested VM on an external switch inside its middle
/// VM whose bound adapter does not spoof MACs has its frames dropped (warning; fix: MAC
/// spoofing on, or NAT); a nested VM behind a NAT needs an address and the NAT adapter as its
/// gateway (warning).
std::vector<Violation> CheckNetworking(const LabFacts& lab);

/// The facts of lab machine `name` in `state`; `children_running` says whether any of its
/// child VMs runs (which, with exposed extensions, means a hypervisor runs inside it).
VmFacts VmFactsOf(const LabFacts& lab, const MachineFacts& vm, State state, bool children_running);

// ---- Changing a VM's settings -----------------------------------------------------------------

/// Settings to change on one VM (what differs between the recorded and the desired VM).
struct VmChange {
  std::optional<bool> expose_virtualization_extensions;
  std::optional<bool> dynamic_memory;
  bool resize_memory = false;
  bool update_version = false;
};

/// The operations that make a change, in order (Stop and Start around it when a setting can
/// change only while the VM is off), each checked with CheckTransition.
struct ChangePlan {
  std::vector<Operation> steps;
  std::string reason;                  // "expose_virtualization_extensions can only change while the VM is off: stop, set, start"
  std::vector<Violation> violations;   // errors: the change cannot be made (nothing may run)
  bool allowed() const;
};
ChangePlan PlanChange(const VmFacts& vm, const VmChange& change, Profile profile);

// ---- The rules ---------------------------------------------------------------------------------

enum class Enforcement {
  kModel,          // this model refuses (or warns); see the functions above
  kSchema,         // lab file validation refuses it (schema/validate.cc); CheckLab agrees
  kRealization,    // the Linux realization behaves so (kernel: seccomp, bridge filter, ...)
  kNotApplicable,  // does not apply to this hypervisor; `note` says why
};

struct Rule {
  const char* id;
  const char* seed;       // file in ../shared/seeds/, or kMicrosoftGuide
  const char* sentence;   // quoted in the seed's language
  const char* gloss;      // in English
  const char* profiles;   // "both" (every profile), "v8", "preview-10565", "ws2022", "v8, ws2022"
  Enforcement enforcement;
  const char* note;       // how it is enforced, or why it does not apply
};

/// The source of the ws2022 rules that are not in the seeds: Microsoft's current guide.
inline constexpr const char* kMicrosoftGuide =
    "learn.microsoft.com/en-us/virtualization/hyper-v-on-windows/user-guide/nested-virtualization";

/// Every rule of the seeds, one entry each; docs/rules.md is this table for people.
const std::vector<Rule>& Rules();
const Rule* FindRule(std::string_view id);

}  // namespace lab::hv::model
