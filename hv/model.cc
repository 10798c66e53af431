// The rules model: the state machine, the rules of nested virtualization per compatibility
// profile, a lab's static rules, and the catalogue of every rule with the seed it comes from.
#include "hv/model.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "base/quote.h"

namespace lab::hv::model {

namespace {

std::string Q(const std::string& s) { return "'" + s + "'"; }
std::string Vm(const std::string& name) { return "VM " + Q(name) + ": "; }

/// The major number of a configuration version ("7.1" -> 7); 0 when it has none.
int VersionMajor(const std::string& version) {
  int major = 0;
  size_t i = 0;
  for (; i < version.size() && std::isdigit(static_cast<unsigned char>(version[i])) && i < 4; ++i)
    major = major * 10 + (version[i] - '0');
  return i == 0 ? 0 : major;
}

/// Update-VMVersion brings a VM to the newest version this hypervisor offers.
constexpr const char* kLatestVersion = "9.0";

bool HardwareNotIntel(ProcessorVendor v) { return v == ProcessorVendor::kAmd || v == ProcessorVendor::kOther; }

/// The seeds' sentence for the processor, quoted in the intel-only refusal.
constexpr const char* kIntelOnly = "\"nesting is currently Intel-only\"";

/// The processor rules of `profile` for a VM with exposed extensions on a `vendor` processor:
/// {rule id, message} of the refusal, or {nullptr, ""}. The seeds' profiles are Intel-only;
/// ws2022 takes Intel (VT-x and EPT, version 8.0, checked by version-8-for-nesting) and AMD
/// EPYC/Ryzen from configuration version 10.0 on.
/// `qemu_source` is where a qemu VM's processor comes from (LabFacts::ProcessorSourceOf), "" for
/// a partition, whose processor is its host's.
std::pair<const char*, std::string> ProcessorRefusal(ProcessorVendor vendor, Profile profile, const std::string& version,
                                                     const std::string& qemu_source = "") {
  if (!HardwareNotIntel(vendor)) return {nullptr, ""};
  const char* what = vendor == ProcessorVendor::kAmd ? "an AMD processor" : "a processor neither Intel nor AMD";
  std::string has = qemu_source.empty() ? std::string("its host has ") + what : qemu_source;
  std::string elsewhere = qemu_source.empty() ? "run the VM on an Intel host"
                                              : "run it where KVM passes an Intel processor through (lab doctor)";
  if (profile != Profile::kWs2022)
    return {"intel-only", std::string("expose_virtualization_extensions needs an Intel processor with VT-x and EPT (") +
                              kIntelOnly + " under compatibility " + ToString(profile) + "), and " + has + "; " +
                              elsewhere + ", use compatibility: ws2022 (Windows Server 2022 / "
                              "Windows 11 hosts nest on AMD EPYC/Ryzen from configuration version 10.0), or "
                              "Set-VMProcessor -ExposeVirtualizationExtensions $false"};
  if (vendor == ProcessorVendor::kOther)
    return {"ws2022-intel-or-amd",
            "expose_virtualization_extensions needs an Intel processor with VT-x and EPT or an AMD EPYC/Ryzen "
            "processor, and " + (qemu_source.empty() ? std::string("its host has neither") : qemu_source) +
            "; run the VM on such a host or "
            "Set-VMProcessor -ExposeVirtualizationExtensions $false"};
  if (VersionMajor(version) < 10)
    return {"ws2022-amd-version-10",
            "expose_virtualization_extensions on an AMD processor needs configuration version 10.0 or later, and "
            "this VM has " + version + "; set version: \"10.0\" (Update-VMVersion on a Windows Server 2022 / "
            "Windows 11 host) or run the VM on an Intel host (version 8.0 is enough there)"};
  return {nullptr, ""};
}

/// Collects the violations of one operation.
class Check {
 public:
  Check(const VmFacts& vm, Profile profile, Verdict& verdict) : vm_(vm), profile_(profile), verdict_(verdict) {}

  bool preview() const { return profile_ == Profile::kPreview10565; }
  /// A hypervisor runs inside: only a running VM with its extensions exposed can run one.
  bool hypervisor() const {
    return vm_.hypervisor_running && vm_.state == State::kRunning && vm_.expose_virtualization_extensions;
  }

  void Error(const char* rule, const std::string& message) {
    verdict_.violations.push_back(Violation{rule, Severity::kError, Vm(vm_.name) + message});
  }
  void Warn(const char* rule, const std::string& message) {
    verdict_.violations.push_back(Violation{rule, Severity::kWarning, Vm(vm_.name) + message});
  }
  void Effect(const std::string& what) { verdict_.effects.push_back(what); }

  /// The rules a VM with exposed extensions must meet to boot (Start-VM) or to expose them.
  void NestingPrerequisites(bool at_start) {
    if (!preview() && VersionMajor(vm_.version) < 8)
      Error("version-8-for-nesting",
            "expose_virtualization_extensions needs configuration version 8.0 or later, and this VM has " +
                vm_.version + " (Stop-VM, then Update-VMVersion, which removes the saved state; or " +
                "Set-VMProcessor -ExposeVirtualizationExtensions $false so that the VM boots)");
    if (vm_.vbs)
      Error("vbs-conflicts-with-nesting",
            "expose_virtualization_extensions cannot be on while virtualization-based security is on; turn VBS "
            "off first (Set-VMSecurity -VirtualizationBasedSecurityOptOut $true) or "
            "Set-VMProcessor -ExposeVirtualizationExtensions $false");
    if (preview() && vm_.host_device_guard)
      Error("device-guard-host",
            "its host runs Device Guard, and under compatibility preview-10565 a host with Device Guard cannot "
            "expose virtualization extensions to a guest; turn Device Guard off on the host or use "
            "compatibility: v8 (configuration version 8.0 runs nesting on hosts with VBS)");
    if (auto [rule, message] = ProcessorRefusal(vm_.vendor, profile_, vm_.version, vm_.processor_source); rule)
      Error(rule, message);
    if (vm_.dynamic_memory) {
      if (preview())
        Error("dynamic-memory-off-for-nesting",
              "expose_virtualization_extensions needs dynamic memory off under compatibility preview-10565 (the VM "
              "does not start otherwise); Set-VMMemory -DynamicMemoryEnabled $false");
      else if (at_start)
        Warn("dynamic-memory-static-while-hypervisor-runs",
             "dynamic memory is on, but once a hypervisor runs inside the VM its memory will not fluctuate "
             "(it behaves as static memory; Set-VMMemory -DynamicMemoryEnabled $false says so)");
    }
  }

  void Start() {
    switch (vm_.state) {
      case State::kRunning:
        Effect("already running");
        return;
      case State::kSaved:
        if (preview() && vm_.expose_virtualization_extensions) {
          Error("preview-no-save-restore",
                "cannot restore a saved VM with expose_virtualization_extensions on under compatibility "
                "preview-10565 (build 10565 cannot save or restore it); Stop-VM (discards the saved state), then "
                "Start-VM, or use compatibility: v8");
          return;
        }
        Effect("the saved state is restored");
        verdict_.next = State::kRunning;
        return;
      case State::kOff:
        if (vm_.expose_virtualization_extensions) NestingPrerequisites(true);
        verdict_.next = State::kRunning;
        return;
    }
  }

  void Stop() {
    switch (vm_.state) {
      case State::kOff:
        Effect("already off");
        return;
      case State::kSaved:
        Effect("the saved state is discarded (Remove-VMSavedState)");
        break;
      case State::kRunning:
        if (hypervisor()) Effect("the VMs running inside it are turned off first");
        break;
    }
    verdict_.next = State::kOff;
  }

  void Save() {
    switch (vm_.state) {
      case State::kOff:
        Error("save-needs-running", "Save-VM needs a running VM, and it is off (Start-VM first)");
        return;
      case State::kSaved:
        Effect("already saved");
        return;
      case State::kRunning:
        if (preview() && vm_.expose_virtualization_extensions) {
          Error("preview-no-save-restore",
                "cannot be saved while expose_virtualization_extensions is on under compatibility preview-10565 "
                "(build 10565 cannot save or restore it); Stop-VM instead, or use compatibility: v8 "
                "(configuration version 8.0 saves and starts VMs with nesting)");
          return;
        }
        verdict_.next = State::kSaved;
        return;
    }
  }

  void PreviewCheckpoints(const char* cmdlet) {
    if (preview() && vm_.expose_virtualization_extensions)
      Error("preview-no-checkpoints",
            std::string(cmdlet) + " is not available while expose_virtualization_extensions is on under "
            "compatibility preview-10565 (build 10565 has no checkpoints for VMs with nesting); "
            "Set-VMProcessor -ExposeVirtualizationExtensions $false, or use compatibility: v8 (configuration "
            "version 8.0 creates and applies checkpoints with nesting)");
  }

  void CreateCheckpoint() { PreviewCheckpoints("Checkpoint-VM"); }

  void ApplyCheckpoint() {
    PreviewCheckpoints("Restore-VMCheckpoint");
    if (vm_.state != State::kOff)
      Error("apply-checkpoint-needs-off", std::string("Restore-VMCheckpoint needs the VM off, and it is ") +
                                              ToString(vm_.state) +
                                              " (Stop-VM, then Restore-VMCheckpoint, then Start-VM)");
    if (verdict_.allowed()) verdict_.next = State::kOff;
  }

  void LiveMigrate() {
    if (vm_.state != State::kRunning) {
      Effect(std::string("the VM is ") + ToString(vm_.state) + ": it moves without a live migration");
      return;
    }
    if (hypervisor())
      Error("live-migration-refused",
            "cannot be live-migrated while a hypervisor runs inside it (expose_virtualization_extensions on, "
            "nested VMs running); Stop-VM, then Move-VM, then Start-VM");
    else if (preview() && vm_.expose_virtualization_extensions)
      Error("live-migration-refused",
            "cannot be live-migrated while expose_virtualization_extensions is on under compatibility "
            "preview-10565 (build 10565 has no live migration for VMs with nesting); Stop-VM, then Move-VM, "
            "then Start-VM");
  }

  void ResizeMemory() {
    switch (vm_.state) {
      case State::kOff:
        return;
      case State::kSaved:
        Error("resize-saved-vm", "memory cannot change while the VM is saved (Start-VM, or Stop-VM which discards "
                                 "the saved state, then Set-VMMemory -StartupBytes)");
        return;
      case State::kRunning:
        break;
    }
    if (hypervisor()) {
      Error("runtime-resize-refused-while-hypervisor-runs",
            "memory cannot be resized while a hypervisor runs inside the VM; turn it off to adjust its memory "
            "(Stop-VM, then Set-VMMemory -StartupBytes, then Start-VM)");
    } else if (preview() && vm_.expose_virtualization_extensions) {
      Error("preview-no-memory-changes",
            "memory cannot be resized at runtime while expose_virtualization_extensions is on under compatibility "
            "preview-10565 (Stop-VM, then Set-VMMemory -StartupBytes, then Start-VM)");
    } else if (vm_.expose_virtualization_extensions) {
      Effect("nesting is enabled but no hypervisor runs inside, so the memory can be resized");
    }
  }

  void SetNesting(bool expose) {
    if (vm_.state != State::kOff) {
      const char* v = expose ? "$true" : "$false";
      std::string how = vm_.state == State::kSaved ? " (Stop-VM, which discards the saved state, then "
                                                   : " (Stop-VM, then ";
      Error(expose ? "nesting-only-while-off" : "nesting-disable-while-off",
            std::string("expose_virtualization_extensions can only change while the VM is off") +
                (vm_.state == State::kSaved ? ", and it is saved" : "") + how +
                "Set-VMProcessor -ExposeVirtualizationExtensions " + v + ", then Start-VM)");
      return;
    }
    if (expose && !vm_.expose_virtualization_extensions) NestingPrerequisites(false);
  }

  void SetDynamicMemory(bool on) {
    if (vm_.state != State::kOff) {
      Error("dynamic-memory-only-while-off",
            std::string("dynamic memory can only be turned ") + (on ? "on" : "off") + " while the VM is off, and it is " +
                ToString(vm_.state) + " (Stop-VM, then Set-VMMemory -DynamicMemoryEnabled " +
                (on ? "$true" : "$false") + ", then Start-VM)");
      return;
    }
    if (!on || !vm_.expose_virtualization_extensions) return;
    if (preview())
      Error("dynamic-memory-off-for-nesting",
            "dynamic memory cannot be turned on while expose_virtualization_extensions is on under compatibility "
            "preview-10565; keep Set-VMMemory -DynamicMemoryEnabled $false");
    else
      Warn("dynamic-memory-static-while-hypervisor-runs",
           "dynamic memory will not fluctuate while a hypervisor runs inside the VM (it behaves as static "
           "memory); keep Set-VMMemory -DynamicMemoryEnabled $false to say so");
  }

  void UpdateVersion() {
    if (vm_.state == State::kRunning)
      Error("update-version-needs-off",
            "Update-VMVersion needs the VM shut down without saved state, and it is running (Stop-VM, then "
            "Update-VMVersion)");
    else if (vm_.state == State::kSaved)
      Error("update-version-needs-off",
            "Update-VMVersion needs the VM shut down without saved state, and it is saved (Stop-VM discards the "
            "saved state, or Remove-VMSavedState; then Update-VMVersion)");
    else if (VersionMajor(vm_.version) < VersionMajor(kLatestVersion))
      Effect(std::string("the configuration version becomes ") + kLatestVersion);
  }

 private:
  const VmFacts& vm_;
  Profile profile_;
  Verdict& verdict_;
};

}  // namespace

const char* ToString(Profile p) {
  switch (p) {
    case Profile::kV8: return "v8";
    case Profile::kPreview10565: return "preview-10565";
    case Profile::kWs2022: return "ws2022";
  }
  return "?";
}

std::optional<Profile> ParseProfile(std::string_view name) {
  if (name == "v8") return Profile::kV8;
  if (name == "preview-10565") return Profile::kPreview10565;
  if (name == "ws2022") return Profile::kWs2022;
  return std::nullopt;
}

std::vector<std::string> ProfileNames() { return {"v8", "preview-10565", "ws2022"}; }

const char* ToString(State s) {
  switch (s) {
    case State::kOff: return "off";
    case State::kRunning: return "running";
    case State::kSaved: return "saved";
  }
  return "?";
}

const char* ToString(Operation op) {
  switch (op) {
    case Operation::kStart: return "Start-VM";
    case Operation::kStop: return "Stop-VM";
    case Operation::kSave: return "Save-VM";
    case Operation::kCreateCheckpoint: return "Checkpoint-VM";
    case Operation::kApplyCheckpoint: return "Restore-VMCheckpoint";
    case Operation::kLiveMigrate: return "Move-VM";
    case Operation::kResizeMemory: return "Set-VMMemory -StartupBytes";
    case Operation::kExposeVirtualizationExtensions: return "Set-VMProcessor -ExposeVirtualizationExtensions $true";
    case Operation::kHideVirtualizationExtensions: return "Set-VMProcessor -ExposeVirtualizationExtensions $false";
    case Operation::kEnableDynamicMemory: return "Set-VMMemory -DynamicMemoryEnabled $true";
    case Operation::kDisableDynamicMemory: return "Set-VMMemory -DynamicMemoryEnabled $false";
    case Operation::kUpdateVersion: return "Update-VMVersion";
  }
  return "?";
}

bool Verdict::allowed() const {
  return std::none_of(violations.begin(), violations.end(),
                      [](const Violation& v) { return v.severity == Severity::kError; });
}

Status Verdict::ToStatus() const {
  std::string out;
  for (const auto& v : violations) {
    if (v.severity != Severity::kError) continue;
    out += (out.empty() ? "" : "; ") + v.message + " [" + v.rule + "]";
  }
  return out.empty() ? Status::Ok() : Status::Error(out);
}

Verdict CheckTransition(const VmFacts& vm, Operation op, Profile profile) {
  Verdict verdict;
  verdict.next = vm.state;
  Check c(vm, profile, verdict);
  switch (op) {
    case Operation::kStart: c.Start(); break;
    case Operation::kStop: c.Stop(); break;
    case Operation::kSave: c.Save(); break;
    case Operation::kCreateCheckpoint: c.CreateCheckpoint(); break;
    case Operation::kApplyCheckpoint: c.ApplyCheckpoint(); break;
    case Operation::kLiveMigrate: c.LiveMigrate(); break;
    case Operation::kResizeMemory: c.ResizeMemory(); break;
    case Operation::kExposeVirtualizationExtensions: c.SetNesting(true); break;
    case Operation::kHideVirtualizationExtensions: c.SetNesting(false); break;
    case Operation::kEnableDynamicMemory: c.SetDynamicMemory(true); break;
    case Operation::kDisableDynamicMemory: c.SetDynamicMemory(false); break;
    case Operation::kUpdateVersion: c.UpdateVersion(); break;
  }
  if (!verdict.allowed()) verdict.next = vm.state;
  return verdict;
}

bool MemoryFluctuates(const VmFacts& vm, Profile profile) {
  if (!vm.dynamic_memory) return false;
  if (!vm.expose_virtualization_extensions) return true;
  if (profile == Profile::kPreview10565) return false;
  return !(vm.hypervisor_running && vm.state == State::kRunning);
}

// ---- The lab's static rules ---------------------------------------------------------------------

const MachineFacts* LabFacts::Find(const std::string& name) const {
  for (const auto& m : machines)
    if (m.name == name) return &m;
  return nullptr;
}

const char* ToString(Accelerator a) { return a == Accelerator::kKvm ? "kvm" : "tcg"; }

ProcessorVendor QemuProcessor(Accelerator accel, ProcessorVendor underlying) {
  // TCG implements AMD's SVM (with NPT) and not Intel's VMX: an emulated processor that can
  // host a hypervisor is an AMD one, whatever the hardware under it.
  return accel == Accelerator::kTcg ? ProcessorVendor::kAmd : underlying;
}

namespace {

/// The first machine from `m` up (itself included) that gives its software a processor: a
/// host or a qemu VM; nullptr when the walk leaves the lab. Parents come before children, so
/// the walk ends.
const MachineFacts* ProcessorGiver(const LabFacts& lab, const MachineFacts* m) {
  for (size_t hops = 0; m && !m->is_host && !m->qemu && hops <= lab.machines.size(); ++hops) m = lab.Find(m->parent);
  return m && (m->is_host || m->qemu) ? m : nullptr;
}

/// Where qemu VM `q`'s QEMU runs: the accelerator, and the qemu VM whose guest it runs in
/// (nullptr: on the lab's machine itself).
std::pair<Accelerator, const MachineFacts*> QemuRunsOn(const LabFacts& lab, const MachineFacts& q) {
  const MachineFacts* parent = lab.Find(q.parent);
  const MachineFacts* outer = parent ? ProcessorGiver(lab, parent) : nullptr;
  if (!outer || outer->is_host) return {lab.accel, nullptr};
  // Inside a guest, /dev/kvm exists only where that guest's extensions are exposed.
  return {outer->expose_virtualization_extensions ? Accelerator::kKvm : Accelerator::kTcg, outer};
}

const char* VendorWords(ProcessorVendor v) {
  switch (v) {
    case ProcessorVendor::kIntel: return "an Intel processor";
    case ProcessorVendor::kAmd: return "an AMD processor";
    case ProcessorVendor::kOther: return "a processor neither Intel nor AMD";
    case ProcessorVendor::kNone: break;
  }
  return "an unknown processor";
}

}  // namespace

ProcessorVendor LabFacts::ProcessorOf(const MachineFacts& m) const {
  const MachineFacts* at = ProcessorGiver(*this, &m);
  // A qemu VM inside qemu VMs: each level's processor is the one its QEMU runs on (bounded by
  // the lab's depth, as each step goes up at least one machine).
  std::vector<const MachineFacts*> qemus;
  for (size_t hops = 0; at && at->qemu && hops <= machines.size(); ++hops) {
    qemus.push_back(at);
    auto [accel, outer] = QemuRunsOn(*this, *at);
    at = outer;
    if (!outer) break;
  }
  ProcessorVendor v = vendor;
  if (qemus.empty()) {
    if (at && at->is_host && at->vendor != ProcessorVendor::kNone) v = at->vendor;
    return v;
  }
  // From the outermost qemu VM (whose QEMU runs on this machine's real processor) inwards.
  v = cpu;
  for (auto it = qemus.rbegin(); it != qemus.rend(); ++it) v = QemuProcessor(QemuRunsOn(*this, **it).first, v);
  return v;
}

ProcessorVendor LabFacts::VendorOf(const MachineFacts& m) const { return ProcessorOf(m); }

std::string LabFacts::ProcessorSourceOf(const MachineFacts& m) const {
  const MachineFacts* q = ProcessorGiver(*this, &m);
  if (!q || !q->qemu) return "";
  auto [accel, outer] = QemuRunsOn(*this, *q);
  std::string why = accel == Accelerator::kTcg ? "QEMU's software emulation (TCG) offers only AMD SVM, not Intel VT-x"
                    : outer ? "KVM inside qemu VM " + Q(outer->name) + " passes its processor through"
                            : std::string("KVM passes this machine's processor through");
  std::string gets = VendorWords(ProcessorOf(*q));
  if (q == &m) return "as a qemu VM it gets " + gets + ": " + why;
  return "it runs inside qemu VM " + Q(q->name) + ", which gets " + gets + ": " + why;
}

namespace {

const char* kExposeFix = "(Set-VMProcessor -ExposeVirtualizationExtensions $true)";

class LabCheck {
 public:
  explicit LabCheck(const LabFacts& lab) : lab_(lab) {}

  std::vector<Violation> Run() {
    for (const auto& m : lab_.machines) {
      machine_ = m.name;
      if (!m.is_host) Nesting(m);
      Switches(m);
    }
    return std::move(out_);
  }

 private:
  /// An error about the machine being checked (and the switch being checked, if any).
  void Error(const char* rule, std::string message, const std::string& interface = "") {
    out_.push_back(Violation{rule, Severity::kError, std::move(message), machine_, interface, switch_});
  }
  void Warn(const char* rule, std::string message, const std::string& interface = "") {
    out_.push_back(Violation{rule, Severity::kWarning, std::move(message), machine_, interface, switch_});
  }

  /// A hypervisor will run inside `vm`: it holds VMs or switches (Hyper-V is installed there).
  bool RunsHypervisor(const MachineFacts& vm) const {
    if (!vm.switches.empty()) return true;
    return std::any_of(lab_.machines.begin(), lab_.machines.end(),
                       [&vm](const MachineFacts& m) { return !m.is_host && m.parent == vm.name; });
  }

  void Nesting(const MachineFacts& vm) {
    const MachineFacts* parent = lab_.Find(vm.parent);
    if (parent && !parent->is_host && !parent->expose_virtualization_extensions)
      Error("nested-needs-exposed-parent",
            Vm(vm.name) + "it is nested under " + Q(parent->name) +
                ", whose virtualization extensions are not exposed; set expose_virtualization_extensions on " +
                Q(parent->name) + " " + kExposeFix);
    if (!vm.expose_virtualization_extensions) {
      for (const auto& sw : vm.switches) {
        switch_ = sw.name;
        Error("switch-needs-nesting", Vm(vm.name) + "switch " + Q(sw.name) +
                                          " needs Hyper-V inside the VM, and its virtualization extensions are not "
                                          "exposed; " + kExposeFix);
      }
      switch_.clear();
      return;
    }
    std::string what = Vm(vm.name) + "expose_virtualization_extensions ";
    if (vm.dynamic_memory) {
      // The seeds: "simply enabling nested virtualization will have no effect on dynamic memory";
      // only the 10565 preview refuses it as soon as nesting is on.
      if (lab_.profile == Profile::kPreview10565)
        Error("dynamic-memory-off-for-nesting",
              what + "needs static memory under compatibility preview-10565 (Set-VMMemory -DynamicMemoryEnabled $false)");
      else if (RunsHypervisor(vm))
        Error("dynamic-memory-off-for-nesting",
              what + "with nested VMs or switches inside needs static memory: a hypervisor runs there "
                     "(Set-VMMemory -DynamicMemoryEnabled $false)");
      else
        Warn("dynamic-memory-static-while-hypervisor-runs",
             Vm(vm.name) + "dynamic memory with exposed virtualization extensions works while no hypervisor runs "
                           "inside; once one does, its memory will not fluctuate (it behaves as static memory)");
    }
    if (lab_.profile != Profile::kPreview10565 && VersionMajor(vm.version) < 8)
      Error("version-8-for-nesting", what + "needs configuration version 8.0 or later, and this VM has " +
                                         vm.version + " (Update-VMVersion)");
    if (vm.vbs)
      Error("vbs-conflicts-with-nesting",
            what + "cannot be on while virtualization-based security is on "
                   "(Set-VMSecurity -VirtualizationBasedSecurityOptOut $true)");
    bool host_guard = parent && (parent->is_host ? lab_.host_device_guard : parent->vbs);
    if (lab_.profile == Profile::kPreview10565 && host_guard)
      Error("device-guard-host", what + "is refused under compatibility preview-10565: " + Q(vm.parent) +
                                     " runs Device Guard; turn it off there or use compatibility: v8");
    if (auto [rule, message] = ProcessorRefusal(lab_.VendorOf(vm), lab_.profile, vm.version, lab_.ProcessorSourceOf(vm));
        rule)
      Error(rule, Vm(vm.name) + message);
  }

  void Switches(const MachineFacts& m) {
    std::string owner = (m.is_host ? "host " : "VM ") + Q(m.name);
    for (const auto& sw : m.switches) {
      switch_ = sw.name;
      std::string what = "switch " + Q(sw.name) + " on " + Q(m.name) + ": ";
      bool external = sw.kind == SwitchKind::kExternal;
      if (sw.lacp)
        Error("set-switch-independent", what + "SET (Switch Embedded Teaming) is switch independent only; LACP "
                                               "is not supported");
      if (sw.embedded_teaming && !external)
        Error("set-needs-external", what + "embedded_teaming (SET) needs an external switch "
                                           "(New-VMSwitch -NetAdapterName A,B -EnableEmbeddedTeaming $true)");
      if (external && sw.binds.size() > 1 && !sw.embedded_teaming)
        Error("set-instead-of-lbfo", what + "binds " + std::to_string(sw.binds.size()) +
                                         " NICs; several NICs need SET (New-VMSwitch -EnableEmbeddedTeaming $true)");
      if (sw.kind == SwitchKind::kPrivate && sw.ip)
        Error("private-switch-isolates-owner",
              what + "a private switch gives " + owner + " no port, so it cannot have an address; use type: internal");
      if (sw.nat_prefix) {
        if (sw.kind != SwitchKind::kInternal)
          Error("nat-needs-internal-switch", what + "a NAT needs an internal switch (New-VMSwitch -SwitchType Internal)");
        else if (!sw.ip || !sw.nat_prefix->Contains(sw.ip->addr))
          Error("nat-adapter-address", what + "a NAT needs vEthernet (" + sw.name + ") to have an address inside " +
                                           sw.nat_prefix->ToString() + " (New-NetIPAddress)");
      }
      if (external && !sw.allow_management_os) {
        for (const auto& bound : sw.binds)
          for (const auto& i : m.interfaces)
            if (i.name == bound && i.ip)
              Error("management-os-takes-address",
                    owner + " interface " + Q(i.name) + ": address " + i.ip->ToString() + " is lost, because external switch " +
                        Q(sw.name) + " takes it with allow_management_os: false (New-VMSwitch -AllowManagementOS $true)",
                    i.name);
      }
    }
    switch_.clear();
  }

  const LabFacts& lab_;
  std::vector<Violation> out_;
  std::string machine_;  // the machine being checked
  std::string switch_;   // the switch being checked, "" between switches
};

const SwitchFacts* FindSwitch(const MachineFacts& owner, const std::string& name) {
  for (const auto& sw : owner.switches)
    if (sw.name == name) return &sw;
  return nullptr;
}

const InterfaceFacts* FindInterface(const MachineFacts& m, const std::string& name) {
  for (const auto& i : m.interfaces)
    if (i.name == name) return &i;
  return nullptr;
}

}  // namespace

std::vector<Violation> CheckNetworking(const LabFacts& lab) {
  std::vector<Violation> out;
  for (const auto& vm : lab.machines) {
    if (vm.is_host) continue;
    const MachineFacts* middle = lab.Find(vm.parent);
    if (!middle || middle->is_host) continue;  // only nested VMs cross two virtual switches
    for (const auto& a : vm.interfaces) {
      const SwitchFacts* sw = FindSwitch(*middle, a.switch_name);
      if (!sw) continue;
      std::string who = "VM " + Q(vm.name) + " adapter " + Q(a.name) + ": ";
      if (sw->kind == SwitchKind::kExternal) {
        for (const auto& bound : sw->binds) {
          const InterfaceFacts* up = FindInterface(*middle, bound);
          if (!up || up->mac_address_spoofing) continue;
          out.push_back(Violation{
              "mac-spoofing-for-nested-traffic", Severity::kWarning,
              who + "frames of nested VMs will be dropped: they leave through " + Q(middle->name) + "'s adapter " +
                  Q(up->name) + " (via switch " + Q(sw->name) + ") with their own MAC, and MAC spoofing is off there; "
                  "Set-VMNetworkAdapter -VMName " + PsArg(middle->name) + " -MacAddressSpoofing On, or use NAT (an internal "
                  "switch in " + Q(middle->name) + " with New-NetNat)",
              vm.name, a.name});
        }
      } else if (sw->kind == SwitchKind::kInternal && sw->nat_prefix && sw->ip) {
        std::string gw = sw->ip->addr.ToString();
        if (!a.ip || !a.gateway || *a.gateway != sw->ip->addr)
          out.push_back(Violation{
              "nat-gateway-for-nested-vms", Severity::kWarning,
              who + "a nested VM behind NAT needs an address in " + sw->nat_prefix->ToString() +
                  " and the NAT adapter vEthernet (" + sw->name + ") " + gw + " as its gateway" +
                  (a.gateway ? ", not " + a.gateway->ToString() : std::string()) +
                  " (New-NetIPAddress -DefaultGateway " + gw + ")",
              vm.name, a.name});
      }
    }
  }
  return out;
}

std::vector<Violation> CheckLab(const LabFacts& lab) {
  std::vector<Violation> out = LabCheck(lab).Run();
  auto net = CheckNetworking(lab);
  out.insert(out.end(), net.begin(), net.end());
  return out;
}

VmFacts VmFactsOf(const LabFacts& lab, const MachineFacts& vm, State state, bool children_running) {
  VmFacts f;
  f.name = vm.name;
  f.state = state;
  f.expose_virtualization_extensions = vm.expose_virtualization_extensions;
  f.dynamic_memory = vm.dynamic_memory;
  f.version = vm.version;
  f.vbs = vm.vbs;
  f.hypervisor_running = state == State::kRunning && vm.expose_virtualization_extensions && children_running;
  const MachineFacts* parent = lab.Find(vm.parent);
  f.host_device_guard = parent && (parent->is_host ? lab.host_device_guard : parent->vbs);
  f.vendor = lab.VendorOf(vm);
  f.processor_source = lab.ProcessorSourceOf(vm);
  return f;
}

// ---- Changing settings ----------------------------------------------------------------------------

bool ChangePlan::allowed() const {
  return std::none_of(violations.begin(), violations.end(),
                      [](const Violation& v) { return v.severity == Severity::kError; });
}

namespace {

/// Rules that a Stop before and a Start after the change satisfy.
bool NeedsOff(const std::string& rule) {
  static const std::set<std::string> kRules = {
      "nesting-only-while-off", "nesting-disable-while-off", "dynamic-memory-only-while-off",
      "runtime-resize-refused-while-hypervisor-runs", "preview-no-memory-changes", "resize-saved-vm",
      "update-version-needs-off"};
  return kRules.count(rule) != 0;
}

const char* SettingOf(Operation op) {
  switch (op) {
    case Operation::kExposeVirtualizationExtensions:
    case Operation::kHideVirtualizationExtensions: return "expose_virtualization_extensions";
    case Operation::kEnableDynamicMemory:
    case Operation::kDisableDynamicMemory: return "memory.dynamic";
    case Operation::kResizeMemory: return "memory.startup";
    case Operation::kUpdateVersion: return "version";
    default: return "the VM";
  }
}

void Apply(VmFacts& vm, Operation op, State next) {
  vm.state = next;
  if (next != State::kRunning) vm.hypervisor_running = false;
  switch (op) {
    case Operation::kStart: vm.hypervisor_running = false; break;  // its VMs start after it
    case Operation::kExposeVirtualizationExtensions: vm.expose_virtualization_extensions = true; break;
    case Operation::kHideVirtualizationExtensions: vm.expose_virtualization_extensions = false; break;
    case Operation::kEnableDynamicMemory: vm.dynamic_memory = true; break;
    case Operation::kDisableDynamicMemory: vm.dynamic_memory = false; break;
    case Operation::kUpdateVersion:
      if (VersionMajor(vm.version) < VersionMajor(kLatestVersion)) vm.version = kLatestVersion;
      break;
    default: break;
  }
}

}  // namespace

ChangePlan PlanChange(const VmFacts& vm, const VmChange& change, Profile profile) {
  std::vector<Operation> ops;
  // Memory settings first, so that exposing the extensions is checked against the new memory.
  if (change.dynamic_memory && *change.dynamic_memory != vm.dynamic_memory)
    ops.push_back(*change.dynamic_memory ? Operation::kEnableDynamicMemory : Operation::kDisableDynamicMemory);
  if (change.resize_memory) ops.push_back(Operation::kResizeMemory);
  if (change.update_version) ops.push_back(Operation::kUpdateVersion);
  if (change.expose_virtualization_extensions &&
      *change.expose_virtualization_extensions != vm.expose_virtualization_extensions)
    ops.push_back(*change.expose_virtualization_extensions ? Operation::kExposeVirtualizationExtensions
                                                           : Operation::kHideVirtualizationExtensions);
  ChangePlan plan;
  // Which change forces a restart: the first one refused only because the VM is not off.
  std::string why_off;
  if (vm.state != State::kOff) {
    VmFacts sim = vm;
    for (Operation op : ops) {
      Verdict v = CheckTransition(sim, op, profile);
      for (const auto& x : v.violations)
        if (x.severity == Severity::kError && NeedsOff(x.rule) && why_off.empty())
          why_off = std::string(SettingOf(op)) + " can only change while the VM is off" +
                    (x.rule == "runtime-resize-refused-while-hypervisor-runs" ? " (a hypervisor runs inside)" : "") +
                    (vm.state == State::kSaved ? ": stop (discarding the saved state), set, start" : ": stop, set, start");
      if (v.allowed()) Apply(sim, op, v.next);
    }
  }
  if (!why_off.empty()) {
    plan.steps.push_back(Operation::kStop);
    plan.steps.insert(plan.steps.end(), ops.begin(), ops.end());
    plan.steps.push_back(Operation::kStart);
    plan.reason = why_off;
  } else {
    plan.steps = ops;
    plan.reason = ops.empty() ? "no change" : "changes in place";
  }
  VmFacts sim = vm;
  for (Operation op : plan.steps) {
    Verdict v = CheckTransition(sim, op, profile);
    plan.violations.insert(plan.violations.end(), v.violations.begin(), v.violations.end());
    if (!v.allowed()) break;
    Apply(sim, op, v.next);
  }
  return plan;
}

// ---- The catalogue ----------------------------------------------------------------------------------

namespace {

constexpr const char* kKo = "000_27cc78b3564fc2a0.txt";    // Microsoft's guide (Korean): build 10565 and 14361
constexpr const char* kBlog = "001_769cac705a18cd78.txt";  // Korean blog post on the 10565 preview
constexpr const char* kSw = "002_c195945427e8df41.txt";    // Korean field guide: switches, nesting
constexpr const char* kJa = "003_98aec1d9efb93e79.txt";    // Microsoft's guide (Japanese): version 8.0
constexpr const char* kEs = "004_d1f751948464ca92.txt";    // Microsoft's guide (Spanish/English): version 8.0

}  // namespace

const std::vector<Rule>& Rules() {
  static const std::vector<Rule> kRules = {
      // Nesting: switching it, and what it needs.
      {"nesting-only-while-off", kJa, "仮想マシンがオフ状態のときに、次のコマンドを物理的 Hyper-V ホスト上で実行します。",
       "While the virtual machine is off, run the following command (Set-VMProcessor -ExposeVirtualizationExtensions $true) on the physical host.",
       "both", Enforcement::kModel, "CheckTransition(kExposeVirtualizationExtensions) refuses unless Off; PlanChange stops, sets, starts"},
      {"nesting-disable-while-off", kEs, "You can disable nested virtualization for a stopped virtual machine using the following PowerShell command",
       "(English in the seed)", "both", Enforcement::kModel, "CheckTransition(kHideVirtualizationExtensions) refuses unless Off"},
      {"nested-needs-exposed-parent", kEs, "With nesting enabled, a guest virtual machine can install its own hypervisor and run its own guest VMs.",
       "(English in the seed)", "both", Enforcement::kSchema,
       "schema refuses a VM under a VM without exposed extensions; CheckLab agrees; the kernel refuses namespaces (seccomp)"},
      {"switch-needs-nesting", kBlog, "Level 2 Root : Hyper-V가 설치된 VM",
       "Level 2 root: a VM with Hyper-V installed (a virtual switch inside a VM needs Hyper-V there).", "both",
       Enforcement::kSchema, "schema refuses a switch inside a VM without exposed extensions; CheckLab agrees"},
      {"dynamic-memory-off-for-nesting", kKo, "중첩된 Hyper-V 호스트를 실행할 때는 가상 컴퓨터에서 동적 메모리를 사용하지 않도록 설정해야 합니다.",
       "When running a nested Hyper-V host, dynamic memory must be disabled on the virtual machine.", "both",
       Enforcement::kSchema,
       "schema and CheckLab refuse dynamic memory on a VM that runs a nested hypervisor (it holds VMs or "
       "switches) in every profile, and on any VM with exposed extensions under preview-10565, where "
       "CheckTransition also refuses Start, expose and enabling dynamic memory"},
      {"dynamic-memory-static-while-hypervisor-runs", kEs,
       "This means that even if dynamic memory is enabled, the amount of memory will not fluctuate.", "(English in the seed)",
       "v8, ws2022", Enforcement::kModel,
       "warning from CheckLab on an exposed VM with dynamic memory and nothing nested inside, and from "
       "CheckTransition; MemoryFluctuates() is false while a hypervisor runs"},
      {"runtime-resize-refused-while-hypervisor-runs", kEs,
       "When Hyper-V is running inside a virtual machine, the virtual machine must be turned off to adjust its memory.",
       "(English in the seed)", "both", Enforcement::kModel, "CheckTransition(kResizeMemory) refuses while a hypervisor runs"},
      {"nesting-alone-has-no-effect", kEs,
       "Note that simply enabling nested virtualization will have no effect on dynamic memory or runtime memory resize.",
       "(English in the seed)", "v8, ws2022", Enforcement::kModel,
       "v8: resize and dynamic memory are refused only while a hypervisor runs (hypervisor_running), not merely when exposed"},
      {"preview-no-memory-changes", kKo,
       "중첩된 가상화가 가상 컴퓨터에서 활성화되면 다음과 같은 기능을 해당 VM과 더 이상 호환할 수 없습니다.",
       "Once nested virtualization is enabled on a VM, these features are no longer compatible with it: (the list "
       "names) runtime memory resize and dynamic memory.",
       "preview-10565", Enforcement::kModel, "CheckTransition(kResizeMemory) refuses once exposed"},
      {"preview-no-checkpoints", kBlog, "Nested Virtualization이 적용된 VM에서 검사점(Checkpoint)를 구성할 수 없습니다.",
       "Checkpoints cannot be made on a VM with nested virtualization.", "preview-10565", Enforcement::kModel,
       "CheckTransition(kCreateCheckpoint/kApplyCheckpoint) refuses once exposed; v8 allows them"},
      {"v8-checkpoints-work", kKo, "검사점 생성 및 적용이 이제 중첩된 가상화를 사용하는 VM에 대해 작동합니다.",
       "Creating and applying checkpoints now works for VMs that use nested virtualization.", "v8, ws2022", Enforcement::kModel,
       "CheckTransition allows checkpoints of a VM with nesting under v8"},
      {"preview-no-save-restore", kBlog, "VM 운영 중 저장/복원이 불가능합니다.",
       "A running VM cannot be saved/restored.", "preview-10565", Enforcement::kModel,
       "CheckTransition(kSave, kStart from Saved) refuses once exposed"},
      {"v8-save-start-works", kKo, "이제 중첩이 설정된 VM을 저장 및 시작할 수 있습니다.",
       "VMs with nesting enabled can now be saved and started.", "v8, ws2022", Enforcement::kModel,
       "CheckTransition allows Save and Start from Saved under v8"},
      {"live-migration-refused", kKo, "Hyper-V를 사용하도록 설정한 가상 컴퓨터를 실시간 마이그레이션할 수 없습니다.",
       "A virtual machine with Hyper-V enabled cannot be live-migrated.", "both", Enforcement::kModel,
       "CheckTransition(kLiveMigrate) refuses while a hypervisor runs; preview-10565 also once exposed"},
      {"version-8-for-nesting", kKo, "빌드 14361부터 버전 8.0에서는 VM에 중첩된 가상화를 사용해야 합니다.",
       "From build 14361, nested virtualization needs VM version 8.0.", "v8, ws2022", Enforcement::kSchema,
       "schema refuses (v8 only) and CheckLab agrees; CheckTransition refuses Start and expose"},
      {"update-version-needs-off", kKo, "중첩된 가상화를 계속 사용하면 VM 버전을 8.0으로 업데이트해야 합니다. 즉 저장된 상태를 제거하고 VM을 종료해야 합니다.",
       "To keep using nested virtualization the VM version must be updated to 8.0; that is, its saved state must be "
       "removed and the VM shut down.",
       "both", Enforcement::kModel, "CheckTransition(kUpdateVersion) refuses unless Off"},
      {"vbs-conflicts-with-nesting", kKo,
       "VBS(가상화 기반 보안)를 사용하도록 설정한 가상 컴퓨터에서 동시에 중첩된 가상화를 사용하도록 설정할 수 없습니다.",
       "Nested virtualization cannot be enabled on a VM that has virtualization-based security (VBS) enabled.", "both",
       Enforcement::kSchema, "schema and CheckLab refuse; CheckTransition refuses Start and expose"},
      {"device-guard-host", kKo, "장치 가드가 활성화된 호스트는 가상화 확장을 게스트에 공개할 수 없습니다.",
       "A host with Device Guard enabled cannot expose virtualization extensions to guests.", "preview-10565",
       Enforcement::kModel,
       "CheckLab and CheckTransition refuse under preview-10565 (v8 lifts it: nesting VMs run on hosts with VBS)"},
      {"intel-only", kEs, "An Intel processor with VT-x and EPT technology -- nesting is currently Intel-only.",
       "(English in the seed)", "v8, preview-10565", Enforcement::kSchema,
       "the lab file's host processor: {vendor: amd} (or a hardware driver reporting kAmd/kOther) with exposed "
       "extensions is refused by schema, CheckLab and CheckTransition; a qemu VM is judged by the processor QEMU "
       "offers (AMD under TCG, this machine's under KVM: QemuProcessor); ws2022 lifts it for AMD EPYC/Ryzen"},
      // Current Hyper-V (compatibility: ws2022), from Microsoft's current guide.
      {"ws2022-amd-version-10", kMicrosoftGuide, "VM configuration version 10.0 or greater",
       "(English in the guide, under \"AMD EPYC/Ryzen processor or later\": the host must be Windows Server 2022 / "
       "Windows 11 or greater, the VM configuration version 10.0 or greater; an earlier revision said 9.3)",
       "ws2022", Enforcement::kSchema,
       "schema and CheckLab refuse exposed extensions on an AMD host's VM below version 10.0; CheckTransition "
       "refuses Start and expose"},
      {"ws2022-intel-or-amd", kMicrosoftGuide, "AMD EPYC/Ryzen processor or later",
       "(English in the guide, beside \"Intel processor with VT-x and EPT technology\": nesting runs on those two)",
       "ws2022", Enforcement::kModel,
       "CheckLab and CheckTransition refuse a processor that is neither (kOther: only a hardware driver reports it; "
       "the lab file's vendor is intel or amd)"},
      {"ws2022-intel-version-8", kMicrosoftGuide, "VM configuration version 8.0 or greater",
       "(English in the guide, under \"Intel processor with VT-x and EPT technology\")", "ws2022",
       Enforcement::kSchema, "the rule version-8-for-nesting, which holds under v8 and ws2022"},
      {"ws2022-host-os", kMicrosoftGuide, "The Hyper-V host must be Windows Server 2022/Windows 11 or greater",
       "(English in the guide, for AMD; for Intel: Windows Server 2016/Windows 10 or greater)", "ws2022",
       Enforcement::kNotApplicable, "no Windows builds here: the profile itself stands for such a host"},
      {"same-build", kKo, "두 하이퍼바이저(부모 및 자식)가 모두 동일한 Windows 빌드(10565 이상)를 실행하고 있어야 합니다.",
       "Both hypervisors (parent and child) must run the same Windows build (10565 or later).", "preview-10565",
       Enforcement::kNotApplicable,
       "met by construction: the hypervisor inside a middle VM is this same lab binary (its worker)"},
      {"host-guest-os-version", kJa,
       "Hyper-V ホストとゲストの両方が Windows Server 2016/Windows 10 Anniversary Update 以降であること。",
       "Both the Hyper-V host and the guest must be Windows Server 2016 / Windows 10 Anniversary Update or later.",
       "both", Enforcement::kNotApplicable, "no Windows builds here; every partition runs this hypervisor's own init"},
      {"third-party-hypervisors", kJa,
       "Hyper-V 以外の仮想化アプリケーションは Hyper-V 仮想マシンではサポートされず、ほとんどの場合は実行に失敗します。",
       "Virtualization applications other than Hyper-V are not supported in Hyper-V VMs and most likely fail.",
       "both", Enforcement::kNotApplicable,
       "nested VMs are made only by lab's own worker; partitions get no hardware virtualization to offer others"},
      // Networking of nested VMs.
      {"mac-spoofing-for-nested-traffic", kEs,
       "In order for network packets to be routed through two virtual switches, MAC address spoofing must be enabled "
       "on the first (L1) level of virtual switch.",
       "(English in the seed)", "both", Enforcement::kModel,
       "CheckNetworking warns; the bridge filter drops the frames (kernel)"},
      {"mac-spoofing-default-off", kSw,
       "Hyper-v는 기본적으로 VM의 MAC주소와 일치하지 않는 다른 MAC 주소의 트래픽이 아웃바운드할 경우 스푸핑에 위험이 있다고 판단하여 기본적으로 차단되어 있습니다.",
       "By default Hyper-V blocks outbound traffic whose MAC differs from the VM's, as spoofing.", "both",
       Enforcement::kRealization, "mac_address_spoofing defaults to false; the bridge filter drops other source MACs"},
      {"nat-needs-internal-switch", kEs,
       "First, a virtual NAT switch must be created in the host virtual machine (the \"middle\" VM).",
       "(English in the seed; New-VMSwitch -SwitchType Internal, then New-NetNat)", "both", Enforcement::kSchema,
       "schema refuses nat on a non-internal switch; CheckLab agrees"},
      {"nat-adapter-address", kEs, "Next, assign an IP address to the net adapter",
       "(English in the seed; vEthernet (VmNat) gets an address inside the NAT prefix)", "both", Enforcement::kSchema,
       "schema refuses a NAT switch without an address inside the prefix; CheckLab agrees"},
      {"nat-gateway-for-nested-vms", kEs,
       "Each nested virtual machine must have an IP address and gateway assigned to it.",
       "(English in the seed; it goes on: the gateway IP must point to the NAT adapter from the previous step)", "both", Enforcement::kModel, "CheckNetworking warns"},
      // Switches (the field guide).
      {"management-os-takes-address", kSw, "Hyper-V를 사용하기 전 기존 이더넷에는 IPv4가 비활성화 됩니다.",
       "Once Hyper-V uses it, the existing Ethernet's IPv4 is disabled (the host talks through vEthernet).", "both",
       Enforcement::kSchema,
       "schema refuses an address on a NIC an external switch takes with allow_management_os: false; CheckLab agrees"},
      {"allow-management-os-default", kSw, "Hyper-v 호스트 OS도 해당 스위치로 통신 가능 여부(기본 값은 true입니다.)",
       "(-AllowManagementOS:) whether the host OS also talks through the switch (default true).", "both", Enforcement::kSchema,
       "allow_management_os defaults to true"},
      {"internal-switch-reaches-owner", kSw, "Host 서버가 VM 네트워크 내부와 통신해야 할 경우에 주로 사용합니다.",
       "(Internal network:) used when the host must talk with the VMs' network.", "both", Enforcement::kRealization,
       "the owner gets vEthernet (NAME), a port on the bridge"},
      {"private-switch-isolates-owner", kSw, "Host 서버가 VM 네트워크에 접속하지 못하도록 해야할 경우에 주로 사용합니다.",
       "(Private network:) used when the host must not reach the VMs' network.", "both", Enforcement::kSchema,
       "no owner port (realization); schema refuses an address on a private switch; CheckLab agrees"},
      {"set-instead-of-lbfo", kSw, "Hyper-v에서는 기존에 사용하던 LBFO Teaming을 사용하지 못 합니다.",
       "Hyper-V cannot use the old LBFO teaming (use SET).", "both", Enforcement::kSchema,
       "schema refuses an external switch on several NICs without embedded_teaming; CheckLab agrees"},
      {"set-needs-external", kSw, "SET 사용 여부(해당 옵션을 통하여 SET로 생성합니다.)",
       "(-EnableEmbeddedTeaming $true:) whether to use SET (this option creates the switch as a SET over -NetAdapterName NICs).", "both", Enforcement::kSchema,
       "schema refuses embedded_teaming on a non-external switch; CheckLab agrees"},
      {"set-switch-independent", kSw, "참고할 점은 SET는 `Switch Independent 모델`로 `LACP와 같은 스위치 프로토콜을 사용하지 못 합니다.`",
       "Note that SET is switch independent and cannot use switch protocols like LACP.", "both",
       Enforcement::kSchema, "schema refuses teaming_mode: lacp; CheckLab agrees"},
      {"expose-default-off", kSw, "Hyper-V VM 내부에서 가상화를 허용할 수 있게 변경합니다. (_기본값은 false 입니다._)",
       "Lets a VM run virtualization inside (the default is false).", "both", Enforcement::kSchema,
       "expose_virtualization_extensions defaults to false"},
      // The state machine (DESIGN.md: lifecycle Off -> Running <-> Saved).
      {"save-needs-running", "DESIGN.md", "lifecycle Off → Running ↔ Saved", "(English)", "both", Enforcement::kModel,
       "CheckTransition(kSave) refuses an off VM"},
      {"apply-checkpoint-needs-off", "DESIGN.md", "lifecycle Off → Running ↔ Saved, checkpoints", "(English)", "both",
       Enforcement::kModel, "CheckTransition(kApplyCheckpoint) refuses unless Off (the engine stops and starts around it)"},
      {"resize-saved-vm", "DESIGN.md", "lifecycle Off → Running ↔ Saved", "(English)", "both", Enforcement::kModel,
       "CheckTransition(kResizeMemory) refuses a saved VM"},
      {"dynamic-memory-only-while-off", kJa,
       "Hyper-V が仮想マシンの中で実行されているときに、仮想マシンのメモリを調整するには、仮想マシンをオフにする必要があります。",
       "When Hyper-V runs inside a VM, the VM must be off to adjust its memory (and switching dynamic memory is a "
       "memory setting Hyper-V changes only on an off VM).",
       "both", Enforcement::kModel, "CheckTransition(kEnable/kDisableDynamicMemory) refuses unless Off"},
  };
  return kRules;
}

const Rule* FindRule(std::string_view id) {
  for (const auto& r : Rules())
    if (id == r.id) return &r;
  return nullptr;
}

}  // namespace lab::hv::model
