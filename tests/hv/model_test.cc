// The rules model (hv/model.h): the state machine, every rule of the seeds in both compatibility
// profiles, the lab's static rules and networking, and the catalogue behind docs/rules.md.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/text.h"
#include "hv/model.h"
#include "tests/support.h"

using namespace lab::hv::model;

namespace {

constexpr Profile kV8 = Profile::kV8;
constexpr Profile kPreview = Profile::kPreview10565;
constexpr Profile kWs2022 = Profile::kWs2022;
const std::vector<Profile> kBoth = {Profile::kV8, Profile::kPreview10565};
const std::vector<Profile> kAll = {Profile::kV8, Profile::kPreview10565, Profile::kWs2022};
const std::vector<State> kStates = {State::kOff, State::kRunning, State::kSaved};
const std::vector<Operation> kOperations = {
    Operation::kStart, Operation::kStop, Operation::kSave, Operation::kCreateCheckpoint, Operation::kApplyCheckpoint,
    Operation::kLiveMigrate, Operation::kResizeMemory, Operation::kExposeVirtualizationExtensions,
    Operation::kHideVirtualizationExtensions, Operation::kEnableDynamicMemory, Operation::kDisableDynamicMemory,
    Operation::kUpdateVersion};

VmFacts Plain(State s = State::kOff) {
  VmFacts vm;
  vm.name = "vm1";
  vm.state = s;
  return vm;
}

/// The seeds' middle VM: extensions exposed, static memory, version 9.0.
VmFacts Middle(State s = State::kOff, bool hypervisor_running = false) {
  VmFacts vm;
  vm.name = "middle";
  vm.state = s;
  vm.expose_virtualization_extensions = true;
  vm.hypervisor_running = hypervisor_running;
  return vm;
}

std::set<std::string> Errors(const std::vector<Violation>& vs) {
  std::set<std::string> out;
  for (const auto& v : vs)
    if (v.severity == Severity::kError) out.insert(v.rule);
  return out;
}
std::set<std::string> Warnings(const std::vector<Violation>& vs) {
  std::set<std::string> out;
  for (const auto& v : vs)
    if (v.severity == Severity::kWarning) out.insert(v.rule);
  return out;
}
std::set<std::string> Errors(const Verdict& v) { return Errors(v.violations); }

bool Refused(const VmFacts& vm, Operation op, Profile p, const std::string& rule) {
  Verdict v = CheckTransition(vm, op, p);
  return !v.allowed() && Errors(v).count(rule) == 1 && v.next == vm.state;
}

bool Allowed(const VmFacts& vm, Operation op, Profile p) { return CheckTransition(vm, op, p).allowed(); }

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- Lab facts --------------------------------------------------------------------------------

MachineFacts Host(const std::string& name) {
  MachineFacts m;
  m.name = name;
  m.is_host = true;
  m.interfaces.push_back(InterfaceFacts{"Ethernet", "", false, lab::Cidr::Parse("10.10.0.11/24"), std::nullopt});
  SwitchFacts ext;
  ext.name = "External";
  ext.kind = SwitchKind::kExternal;
  ext.binds = {"Ethernet"};
  m.switches.push_back(ext);
  return m;
}

MachineFacts VmOn(const std::string& name, const std::string& parent, const std::string& sw,
                  const std::string& ip, const std::string& gateway) {
  MachineFacts m;
  m.name = name;
  m.parent = parent;
  m.interfaces.push_back(InterfaceFacts{"Ethernet", sw, false, lab::Cidr::Parse(ip), lab::Ipv4::Parse(gateway)});
  return m;
}

/// labs/nested-nat.yaml as facts: hv1 / middle (exposed, NAT switch VmNAT) / nested1, nested2.
LabFacts NestedNat() {
  LabFacts lab;
  lab.machines.push_back(Host("hv1"));
  MachineFacts middle = VmOn("middle", "hv1", "External", "10.10.0.10/24", "10.10.0.1");
  middle.expose_virtualization_extensions = true;
  SwitchFacts nat;
  nat.name = "VmNAT";
  nat.kind = SwitchKind::kInternal;
  nat.ip = lab::Cidr::Parse("192.168.100.1/24");
  nat.nat_prefix = lab::Cidr::Parse("192.168.100.0/24");
  middle.switches.push_back(nat);
  lab.machines.push_back(middle);
  lab.machines.push_back(VmOn("nested1", "middle", "VmNAT", "192.168.100.2/24", "192.168.100.1"));
  lab.machines.push_back(VmOn("nested2", "middle", "VmNAT", "192.168.100.3/24", "192.168.100.1"));
  return lab;
}

/// The seeds' MAC spoofing option: an external switch inside middle bound to its adapter.
LabFacts Spoofing(bool spoof) {
  LabFacts lab;
  lab.machines.push_back(Host("hv1"));
  MachineFacts middle = VmOn("middle", "hv1", "External", "10.10.0.10/24", "10.10.0.1");
  middle.expose_virtualization_extensions = true;
  middle.interfaces[0].mac_address_spoofing = spoof;
  SwitchFacts ext;
  ext.name = "Inner";
  ext.kind = SwitchKind::kExternal;
  ext.binds = {"Ethernet"};
  middle.switches.push_back(ext);
  lab.machines.push_back(middle);
  lab.machines.push_back(VmOn("nested1", "middle", "Inner", "10.10.0.20/24", "10.10.0.1"));
  return lab;
}

MachineFacts& Machine(LabFacts& lab, const std::string& name) {
  for (auto& m : lab.machines)
    if (m.name == name) return m;
  FAIL("no machine " << name);
  return lab.machines.front();
}

}  // namespace

// ---- Profiles ----------------------------------------------------------------------------------

TEST_CASE("Profiles are named as in the lab file, v8 first as the default", "[hv]") {
  CHECK(ProfileNames() == std::vector<std::string>{"v8", "preview-10565", "ws2022"});
  for (Profile p : kAll) CHECK(ParseProfile(ToString(p)) == p);
  CHECK_FALSE(ParseProfile("v9").has_value());
  CHECK_FALSE(ParseProfile("").has_value());
}

// ---- The state machine -------------------------------------------------------------------------

TEST_CASE("The state machine allows Start, Stop and Save between off, running and saved", "[hv]") {
  for (Profile p : kBoth) {
    INFO(ToString(p));
    auto next = [&](State s, Operation op) { return CheckTransition(Plain(s), op, p).next; };
    CHECK(next(State::kOff, Operation::kStart) == State::kRunning);
    CHECK(next(State::kSaved, Operation::kStart) == State::kRunning);
    CHECK(next(State::kRunning, Operation::kStop) == State::kOff);
    CHECK(next(State::kSaved, Operation::kStop) == State::kOff);
    CHECK(next(State::kRunning, Operation::kSave) == State::kSaved);
    // Asking for the state a VM is already in is no error.
    CHECK(Allowed(Plain(State::kRunning), Operation::kStart, p));
    CHECK(Allowed(Plain(State::kOff), Operation::kStop, p));
    CHECK(Allowed(Plain(State::kSaved), Operation::kSave, p));
    CHECK(next(State::kRunning, Operation::kStart) == State::kRunning);
  }
}

TEST_CASE("Stopping a saved VM discards its saved state", "[hv]") {
  Verdict v = CheckTransition(Plain(State::kSaved), Operation::kStop, kV8);
  CHECK(v.allowed());
  CHECK(v.next == State::kOff);
  REQUIRE(v.effects.size() == 1);
  CHECK(Has(v.effects[0], "saved state is discarded"));
}

TEST_CASE("The state machine refuses what needs another state, naming the cmdlets to run first", "[hv]") {
  for (Profile p : kBoth) {
    INFO(ToString(p));
    CHECK(Refused(Plain(State::kOff), Operation::kSave, p, "save-needs-running"));
    CHECK(Refused(Plain(State::kRunning), Operation::kApplyCheckpoint, p, "apply-checkpoint-needs-off"));
    CHECK(Refused(Plain(State::kSaved), Operation::kApplyCheckpoint, p, "apply-checkpoint-needs-off"));
    CHECK(Refused(Plain(State::kSaved), Operation::kResizeMemory, p, "resize-saved-vm"));
    CHECK(Refused(Plain(State::kRunning), Operation::kEnableDynamicMemory, p, "dynamic-memory-only-while-off"));
    CHECK(Refused(Plain(State::kSaved), Operation::kDisableDynamicMemory, p, "dynamic-memory-only-while-off"));
  }
  CHECK(CheckTransition(Plain(State::kOff), Operation::kSave, kV8).ToStatus().message() ==
        "VM 'vm1': Save-VM needs a running VM, and it is off (Start-VM first) [save-needs-running]");
  CHECK(CheckTransition(Plain(State::kOff), Operation::kApplyCheckpoint, kV8).next == State::kOff);
}

TEST_CASE("A VM without nesting may do everything its state allows in both profiles", "[hv]") {
  // The full table for a plain VM: only state rules refuse.
  for (Profile p : kBoth)
    for (State s : kStates)
      for (Operation op : kOperations) {
        Verdict v = CheckTransition(Plain(s), op, p);
        INFO(ToString(p) << " " << ToString(s) << " " << ToString(op));
        for (const auto& x : v.violations) {
          REQUIRE(FindRule(x.rule));
          CHECK((x.rule == "save-needs-running" || x.rule == "apply-checkpoint-needs-off" ||
                 x.rule == "resize-saved-vm" || x.rule == "dynamic-memory-only-while-off" ||
                 x.rule == "nesting-only-while-off" || x.rule == "nesting-disable-while-off" ||
                 x.rule == "update-version-needs-off"));
        }
        if (!v.allowed()) CHECK(v.next == s);
      }
}

// ---- Nesting can only be switched while the VM is off ------------------------------------------

TEST_CASE("Exposing virtualization extensions on a running VM is refused with Stop-VM, set, Start-VM", "[hv]") {
  VmFacts vm = Plain(State::kRunning);
  vm.name = "middle";
  for (Profile p : kBoth) {
    Verdict v = CheckTransition(vm, Operation::kExposeVirtualizationExtensions, p);
    REQUIRE_FALSE(v.allowed());
    CHECK(v.next == State::kRunning);
    REQUIRE(v.violations.size() == 1);
    CHECK(v.violations[0].rule == "nesting-only-while-off");
    CHECK(v.violations[0].message ==
          "VM 'middle': expose_virtualization_extensions can only change while the VM is off (Stop-VM, then "
          "Set-VMProcessor -ExposeVirtualizationExtensions $true, then Start-VM)");
  }
  vm.state = State::kSaved;
  CHECK(Refused(vm, Operation::kExposeVirtualizationExtensions, kV8, "nesting-only-while-off"));
  CHECK(Has(CheckTransition(vm, Operation::kExposeVirtualizationExtensions, kV8).ToStatus().message(),
            "discards the saved state"));
  CHECK(Allowed(Plain(State::kOff), Operation::kExposeVirtualizationExtensions, kV8));
}

TEST_CASE("Nested virtualization is disabled only on a stopped VM", "[hv]") {
  for (Profile p : kBoth) {
    CHECK(Refused(Middle(State::kRunning), Operation::kHideVirtualizationExtensions, p, "nesting-disable-while-off"));
    CHECK(Refused(Middle(State::kSaved), Operation::kHideVirtualizationExtensions, p, "nesting-disable-while-off"));
    CHECK(Allowed(Middle(State::kOff), Operation::kHideVirtualizationExtensions, p));
  }
  CHECK(Has(CheckTransition(Middle(State::kRunning), Operation::kHideVirtualizationExtensions, kV8).ToStatus().message(),
            "Set-VMProcessor -ExposeVirtualizationExtensions $false"));
}

// ---- Memory --------------------------------------------------------------------------------------

TEST_CASE("Runtime memory resize fails while a hypervisor runs inside the VM, in both profiles", "[hv]") {
  for (Profile p : kBoth) {
    Verdict v = CheckTransition(Middle(State::kRunning, true), Operation::kResizeMemory, p);
    CHECK(Errors(v) == std::set<std::string>{"runtime-resize-refused-while-hypervisor-runs"});
    CHECK(Has(v.ToStatus().message(), "Stop-VM, then Set-VMMemory -StartupBytes, then Start-VM"));
    CHECK(Allowed(Middle(State::kOff), Operation::kResizeMemory, p));  // turned off, memory can be adjusted
  }
}

TEST_CASE("Simply enabling nesting has no effect on runtime resize or dynamic memory in v8", "[hv]") {
  CHECK(Allowed(Middle(State::kRunning, false), Operation::kResizeMemory, kV8));
  VmFacts dyn = Middle(State::kRunning, false);
  dyn.dynamic_memory = true;
  CHECK(MemoryFluctuates(dyn, kV8));
  dyn.hypervisor_running = true;
  CHECK_FALSE(MemoryFluctuates(dyn, kV8));
  // hypervisor_running means nothing unless the VM runs with its extensions exposed.
  VmFacts off = Middle(State::kOff, true);
  CHECK(Allowed(off, Operation::kResizeMemory, kV8));
}

TEST_CASE("The 10565 preview refuses runtime resize and dynamic memory as soon as nesting is enabled", "[hv]") {
  CHECK(Refused(Middle(State::kRunning, false), Operation::kResizeMemory, kPreview, "preview-no-memory-changes"));
  CHECK(Refused(Middle(State::kOff), Operation::kEnableDynamicMemory, kPreview, "dynamic-memory-off-for-nesting"));
  VmFacts dyn = Middle(State::kOff);
  dyn.dynamic_memory = true;
  CHECK(Refused(dyn, Operation::kStart, kPreview, "dynamic-memory-off-for-nesting"));
  CHECK_FALSE(MemoryFluctuates(dyn, kPreview));
  VmFacts plain = Plain();
  plain.dynamic_memory = true;
  CHECK(Refused(plain, Operation::kExposeVirtualizationExtensions, kPreview, "dynamic-memory-off-for-nesting"));
  CHECK(Has(CheckTransition(plain, Operation::kExposeVirtualizationExtensions, kPreview).ToStatus().message(),
            "Set-VMMemory -DynamicMemoryEnabled $false"));
}

TEST_CASE("A dynamic-memory VM running a hypervisor behaves as static in v8, with a warning", "[hv]") {
  VmFacts dyn = Middle(State::kOff);
  dyn.dynamic_memory = true;
  Verdict v = CheckTransition(dyn, Operation::kStart, kV8);
  CHECK(v.allowed());
  CHECK(v.next == State::kRunning);
  CHECK(Warnings(v.violations) == std::set<std::string>{"dynamic-memory-static-while-hypervisor-runs"});
  Verdict on = CheckTransition(Middle(State::kOff), Operation::kEnableDynamicMemory, kV8);
  CHECK(on.allowed());
  CHECK(Warnings(on.violations) == std::set<std::string>{"dynamic-memory-static-while-hypervisor-runs"});
  CHECK(Has(on.violations[0].message, "will not fluctuate"));
}

// ---- Checkpoints, save/restore, live migration -------------------------------------------------------

TEST_CASE("Checkpoints of a VM with nesting are refused by the 10565 preview and work in v8", "[hv]") {
  for (State s : kStates) {
    CHECK(Refused(Middle(s), Operation::kCreateCheckpoint, kPreview, "preview-no-checkpoints"));
    CHECK(Allowed(Middle(s), Operation::kCreateCheckpoint, kV8));
  }
  CHECK(Refused(Middle(State::kOff), Operation::kApplyCheckpoint, kPreview, "preview-no-checkpoints"));
  CHECK(Allowed(Middle(State::kOff), Operation::kApplyCheckpoint, kV8));
  CHECK(Allowed(Middle(State::kRunning, true), Operation::kCreateCheckpoint, kV8));
  CHECK(Has(CheckTransition(Middle(State::kOff), Operation::kCreateCheckpoint, kPreview).ToStatus().message(),
            "compatibility: v8"));
}

TEST_CASE("Save and restore of a VM with nesting are refused by the 10565 preview and work in v8", "[hv]") {
  CHECK(Refused(Middle(State::kRunning, true), Operation::kSave, kPreview, "preview-no-save-restore"));
  CHECK(Refused(Middle(State::kSaved), Operation::kStart, kPreview, "preview-no-save-restore"));
  CHECK(Allowed(Middle(State::kSaved), Operation::kStop, kPreview));  // the way out: discard the saved state
  Verdict save = CheckTransition(Middle(State::kRunning, true), Operation::kSave, kV8);
  CHECK(save.allowed());
  CHECK(save.next == State::kSaved);
  Verdict start = CheckTransition(Middle(State::kSaved), Operation::kStart, kV8);
  CHECK(start.allowed());
  CHECK(start.next == State::kRunning);
}

TEST_CASE("Live migration of a VM running a hypervisor is refused in both profiles", "[hv]") {
  for (Profile p : kBoth) {
    CHECK(Refused(Middle(State::kRunning, true), Operation::kLiveMigrate, p, "live-migration-refused"));
    CHECK(Has(CheckTransition(Middle(State::kRunning, true), Operation::kLiveMigrate, p).ToStatus().message(),
              "Stop-VM, then Move-VM, then Start-VM"));
    CHECK(Allowed(Middle(State::kOff), Operation::kLiveMigrate, p));  // not live: moves with its disk
    CHECK(Allowed(Plain(State::kRunning), Operation::kLiveMigrate, p));
  }
  CHECK(Allowed(Middle(State::kRunning, false), Operation::kLiveMigrate, kV8));
  CHECK(Refused(Middle(State::kRunning, false), Operation::kLiveMigrate, kPreview, "live-migration-refused"));
}

// ---- Version, VBS, Device Guard, Intel -----------------------------------------------------------------

TEST_CASE("Nesting needs configuration version 8.0 in v8, fixed by Update-VMVersion on a shut-down VM", "[hv]") {
  VmFacts old = Middle(State::kOff);
  old.version = "7.1";
  CHECK(Refused(old, Operation::kStart, kV8, "version-8-for-nesting"));
  std::string msg = CheckTransition(old, Operation::kStart, kV8).ToStatus().message();
  CHECK(Has(msg, "Update-VMVersion"));
  CHECK(Has(msg, "Set-VMProcessor -ExposeVirtualizationExtensions $false"));
  VmFacts plain_old = Plain();
  plain_old.version = "7.1";
  CHECK(Refused(plain_old, Operation::kExposeVirtualizationExtensions, kV8, "version-8-for-nesting"));
  CHECK(Allowed(plain_old, Operation::kStart, kV8));  // without nesting an old VM boots
  CHECK(Allowed(old, Operation::kStart, kPreview));   // the 10565 preview predates version 8.0
  old.version = "8.0";
  CHECK(Allowed(old, Operation::kStart, kV8));
}

TEST_CASE("Updating the version needs the saved state removed and the VM shut down", "[hv]") {
  for (Profile p : kBoth) {
    CHECK(Refused(Middle(State::kRunning), Operation::kUpdateVersion, p, "update-version-needs-off"));
    CHECK(Refused(Middle(State::kSaved), Operation::kUpdateVersion, p, "update-version-needs-off"));
    CHECK(Allowed(Middle(State::kOff), Operation::kUpdateVersion, p));
  }
  CHECK(Has(CheckTransition(Middle(State::kSaved), Operation::kUpdateVersion, kV8).ToStatus().message(),
            "Remove-VMSavedState"));
}

TEST_CASE("Virtualization-based security conflicts with nesting in both profiles", "[hv]") {
  VmFacts vbs = Middle(State::kOff);
  vbs.vbs = true;
  for (Profile p : kBoth) {
    CHECK(Refused(vbs, Operation::kStart, p, "vbs-conflicts-with-nesting"));
    VmFacts plain = Plain();
    plain.vbs = true;
    CHECK(Refused(plain, Operation::kExposeVirtualizationExtensions, p, "vbs-conflicts-with-nesting"));
    CHECK(Allowed(plain, Operation::kStart, p));
  }
  CHECK(Has(CheckTransition(vbs, Operation::kStart, kV8).ToStatus().message(),
            "Set-VMSecurity -VirtualizationBasedSecurityOptOut $true"));
}

TEST_CASE("A host with Device Guard cannot expose extensions in the 10565 preview, but can in v8", "[hv]") {
  VmFacts vm = Middle(State::kOff);
  vm.host_device_guard = true;
  CHECK(Refused(vm, Operation::kStart, kPreview, "device-guard-host"));
  CHECK(Allowed(vm, Operation::kStart, kV8));
  VmFacts plain = Plain();
  plain.host_device_guard = true;
  CHECK(Refused(plain, Operation::kExposeVirtualizationExtensions, kPreview, "device-guard-host"));
  CHECK(Allowed(plain, Operation::kStart, kPreview));
}

TEST_CASE("Intel-only applies to hardware processors, not to kernel isolation", "[hv]") {
  for (Profile p : kBoth) {
    VmFacts vm = Middle(State::kOff);
    CHECK(Allowed(vm, Operation::kStart, p));  // vendor kNone: no VT-x/AMD-V in use
    vm.vendor = ProcessorVendor::kIntel;
    CHECK(Allowed(vm, Operation::kStart, p));
    vm.vendor = ProcessorVendor::kAmd;
    CHECK(Refused(vm, Operation::kStart, p, "intel-only"));
    VmFacts plain = Plain();
    plain.vendor = ProcessorVendor::kAmd;
    CHECK(Allowed(plain, Operation::kStart, p));
    CHECK(Refused(plain, Operation::kExposeVirtualizationExtensions, p, "intel-only"));
  }
  const Rule* r = FindRule("intel-only");
  REQUIRE(r);
  CHECK(r->enforcement == Enforcement::kSchema);
  CHECK(std::string(r->profiles) == "v8, preview-10565");
}

TEST_CASE("AMD is refused under v8 and preview-10565 with the seeds' sentence", "[hv]") {
  for (Profile p : kBoth) {
    INFO(ToString(p));
    VmFacts vm = Middle(State::kOff);
    vm.vendor = ProcessorVendor::kAmd;
    vm.version = "10.0";  // no version makes AMD nest under the seeds' profiles
    Verdict v = CheckTransition(vm, Operation::kStart, p);
    REQUIRE(Errors(v) == std::set<std::string>{"intel-only"});
    CHECK(Has(v.violations[0].message, "\"nesting is currently Intel-only\""));
    CHECK(Has(v.violations[0].message, "compatibility: ws2022"));
    LabFacts lab = NestedNat();
    lab.profile = p;
    Machine(lab, "hv1").vendor = ProcessorVendor::kAmd;
    Machine(lab, "middle").version = "10.0";
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"intel-only"});
  }
}

TEST_CASE("Under ws2022 nesting runs on Intel from version 8.0 and on AMD from version 10.0", "[hv]") {
  VmFacts vm = Middle(State::kOff);
  vm.vendor = ProcessorVendor::kIntel;
  vm.version = "8.0";
  CHECK(Allowed(vm, Operation::kStart, kWs2022));
  vm.version = "7.1";
  CHECK(Refused(vm, Operation::kStart, kWs2022, "version-8-for-nesting"));

  vm.vendor = ProcessorVendor::kAmd;
  for (const char* old : {"8.0", "9.0", "9.3"}) {
    INFO(old);
    vm.version = old;
    CHECK(Refused(vm, Operation::kStart, kWs2022, "ws2022-amd-version-10"));
    VmFacts plain = Plain();
    plain.vendor = ProcessorVendor::kAmd;
    plain.version = old;
    CHECK(Refused(plain, Operation::kExposeVirtualizationExtensions, kWs2022, "ws2022-amd-version-10"));
  }
  vm.version = "10.0";
  CHECK(Allowed(vm, Operation::kStart, kWs2022));
  vm.version = "11.0";
  CHECK(Allowed(vm, Operation::kStart, kWs2022));

  LabFacts lab = NestedNat();
  lab.profile = kWs2022;
  Machine(lab, "hv1").vendor = ProcessorVendor::kAmd;
  Machine(lab, "middle").version = "9.0";
  std::vector<Violation> vs = CheckLab(lab);
  REQUIRE(Errors(vs) == std::set<std::string>{"ws2022-amd-version-10"});
  CHECK(Has(vs[0].message, "VM 'middle'"));
  CHECK(Has(vs[0].message, "Update-VMVersion"));
  Machine(lab, "middle").version = "10.0";
  CHECK(CheckLab(lab).empty());
  Machine(lab, "hv1").vendor = ProcessorVendor::kIntel;
  Machine(lab, "middle").version = "8.0";
  CHECK(CheckLab(lab).empty());
}

TEST_CASE("A processor neither Intel nor AMD cannot nest under any profile", "[hv]") {
  for (Profile p : kAll) {
    INFO(ToString(p));
    VmFacts vm = Middle(State::kOff);
    vm.vendor = ProcessorVendor::kOther;
    vm.version = "10.0";
    CHECK(Refused(vm, Operation::kStart, p, p == kWs2022 ? "ws2022-intel-or-amd" : "intel-only"));
  }
}

TEST_CASE("A VM's processor is that of the physical host it runs on, at any depth", "[hv]") {
  LabFacts lab = NestedNat();
  CHECK(lab.VendorOf(Machine(lab, "nested1")) == ProcessorVendor::kNone);
  Machine(lab, "hv1").vendor = ProcessorVendor::kAmd;
  CHECK(lab.VendorOf(Machine(lab, "middle")) == ProcessorVendor::kAmd);
  CHECK(lab.VendorOf(Machine(lab, "nested1")) == ProcessorVendor::kAmd);
  CHECK(VmFactsOf(lab, Machine(lab, "nested1"), State::kOff, false).vendor == ProcessorVendor::kAmd);
  Machine(lab, "hv1").vendor = ProcessorVendor::kNone;
  lab.vendor = ProcessorVendor::kIntel;  // where the host does not say, the lab's
  CHECK(lab.VendorOf(Machine(lab, "nested1")) == ProcessorVendor::kIntel);
}

TEST_CASE("Dynamic memory on an exposed VM without nested VMs is allowed with a note under v8 and ws2022", "[hv]") {
  for (Profile p : kAll) {
    INFO(ToString(p));
    LabFacts lab;
    lab.profile = p;
    lab.machines.push_back(Host("hv1"));
    MachineFacts vm = VmOn("builder", "hv1", "External", "10.10.0.10/24", "10.10.0.1");
    vm.expose_virtualization_extensions = true;
    vm.dynamic_memory = true;
    lab.machines.push_back(vm);
    std::vector<Violation> vs = CheckLab(lab);
    if (p == kPreview) {
      CHECK(Errors(vs) == std::set<std::string>{"dynamic-memory-off-for-nesting"});
      CHECK(Has(vs[0].message, "preview-10565"));
    } else {
      CHECK(Errors(vs).empty());
      REQUIRE(Warnings(vs) == std::set<std::string>{"dynamic-memory-static-while-hypervisor-runs"});
      CHECK(Has(vs[0].message, "will not fluctuate"));
      CHECK(Has(vs[0].message, "VM 'builder'"));
    }
  }
}

TEST_CASE("A VM that runs nested VMs or owns switches needs static memory in every profile", "[hv]") {
  for (Profile p : kAll) {
    INFO(ToString(p));
    LabFacts lab = NestedNat();  // middle holds nested1, nested2 and the switch VmNAT
    lab.profile = p;
    Machine(lab, "middle").dynamic_memory = true;
    std::vector<Violation> vs = CheckLab(lab);
    REQUIRE(Errors(vs) == std::set<std::string>{"dynamic-memory-off-for-nesting"});
    CHECK(Has(vs[0].message, "Set-VMMemory -DynamicMemoryEnabled $false"));
    // A switch alone means Hyper-V runs there too.
    lab.machines.erase(lab.machines.begin() + 2, lab.machines.end());
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"dynamic-memory-off-for-nesting"});
  }
}

// ---- Changing settings ---------------------------------------------------------------------------

TEST_CASE("Changing nesting on a running VM is planned as stop, set, start", "[hv]") {
  VmChange change;
  change.expose_virtualization_extensions = true;
  ChangePlan plan = PlanChange(Plain(State::kRunning), change, kV8);
  CHECK(plan.allowed());
  CHECK(plan.steps == std::vector<Operation>{Operation::kStop, Operation::kExposeVirtualizationExtensions,
                                             Operation::kStart});
  CHECK(plan.reason == "expose_virtualization_extensions can only change while the VM is off: stop, set, start");
  ChangePlan off = PlanChange(Plain(State::kOff), change, kV8);
  CHECK(off.steps == std::vector<Operation>{Operation::kExposeVirtualizationExtensions});
  CHECK(PlanChange(Plain(State::kOff), VmChange{}, kV8).steps.empty());
}

TEST_CASE("Resizing memory restarts the VM only while a hypervisor runs inside it", "[hv]") {
  VmChange change;
  change.resize_memory = true;
  CHECK(PlanChange(Middle(State::kRunning, false), change, kV8).steps ==
        std::vector<Operation>{Operation::kResizeMemory});
  ChangePlan busy = PlanChange(Middle(State::kRunning, true), change, kV8);
  CHECK(busy.allowed());
  CHECK(busy.steps == std::vector<Operation>{Operation::kStop, Operation::kResizeMemory, Operation::kStart});
  CHECK(Has(busy.reason, "a hypervisor runs inside"));
}

TEST_CASE("A change that breaks a rule is refused whatever the order of steps", "[hv]") {
  VmFacts vm = Plain(State::kRunning);
  vm.vbs = true;
  VmChange change;
  change.expose_virtualization_extensions = true;
  ChangePlan plan = PlanChange(vm, change, kV8);
  CHECK_FALSE(plan.allowed());
  CHECK(Errors(plan.violations) == std::set<std::string>{"vbs-conflicts-with-nesting"});
  VmChange upgrade;
  upgrade.update_version = true;
  upgrade.expose_virtualization_extensions = true;
  VmFacts old = Plain(State::kSaved);
  old.version = "5.0";
  ChangePlan fixed = PlanChange(old, upgrade, kV8);
  CHECK(fixed.allowed());
  CHECK(fixed.steps == std::vector<Operation>{Operation::kStop, Operation::kUpdateVersion,
                                              Operation::kExposeVirtualizationExtensions, Operation::kStart});
  CHECK(Has(fixed.reason, "discarding the saved state"));
}

// ---- A lab's static rules ----------------------------------------------------------------------------

TEST_CASE("The seeds' NAT lab breaks no rule in either profile", "[hv]") {
  for (Profile p : kBoth) {
    LabFacts lab = NestedNat();
    lab.profile = p;
    CHECK(CheckLab(lab).empty());
  }
}

TEST_CASE("The lab rules reject what lab file validation rejects", "[hv]") {
  // The same mistakes as tests/schema/golden/nesting.yaml and switches.yaml.
  for (Profile p : kBoth) {
    INFO(ToString(p));
    LabFacts lab = NestedNat();
    lab.profile = p;
    Machine(lab, "middle").expose_virtualization_extensions = false;
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"nested-needs-exposed-parent", "switch-needs-nesting"});

    lab = NestedNat();
    lab.profile = p;
    Machine(lab, "middle").dynamic_memory = true;
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"dynamic-memory-off-for-nesting"});

    lab = NestedNat();
    lab.profile = p;
    Machine(lab, "middle").vbs = true;
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"vbs-conflicts-with-nesting"});

    lab = NestedNat();
    lab.profile = p;
    Machine(lab, "middle").version = "7.1";
    CHECK(Errors(CheckLab(lab)) == (p == kV8 ? std::set<std::string>{"version-8-for-nesting"} : std::set<std::string>{}));

    lab = NestedNat();
    lab.profile = p;
    auto& ext = Machine(lab, "hv1").switches[0];
    ext.lacp = true;
    ext.binds = {"Ethernet", "Ethernet2"};
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"set-switch-independent", "set-instead-of-lbfo"});
    ext.embedded_teaming = true;
    ext.lacp = false;
    CHECK(Errors(CheckLab(lab)).empty());

    lab = NestedNat();
    lab.profile = p;
    auto& nat = Machine(lab, "middle").switches[0];
    nat.kind = SwitchKind::kPrivate;
    nat.embedded_teaming = true;
    CHECK(Errors(CheckLab(lab)) ==
          std::set<std::string>{"private-switch-isolates-owner", "nat-needs-internal-switch", "set-needs-external"});

    lab = NestedNat();
    lab.profile = p;
    Machine(lab, "middle").switches[0].ip = lab::Cidr::Parse("192.168.60.1/24");
    CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"nat-adapter-address"});

    lab = NestedNat();
    lab.profile = p;
    Machine(lab, "hv1").switches[0].allow_management_os = false;
    std::vector<Violation> vs = CheckLab(lab);
    CHECK(Errors(vs) == std::set<std::string>{"management-os-takes-address"});
    CHECK(Has(vs[0].message, "New-VMSwitch -AllowManagementOS $true"));
  }
}

TEST_CASE("Device Guard on the machine running a middle VM is refused only by the 10565 preview", "[hv]") {
  LabFacts lab = NestedNat();
  lab.host_device_guard = true;
  CHECK(CheckLab(lab).empty());
  lab.profile = kPreview;
  CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"device-guard-host"});
}

TEST_CASE("A lab with nesting on a non-Intel hardware processor is refused; kernel isolation is exempt", "[hv]") {
  LabFacts lab = NestedNat();
  lab.vendor = ProcessorVendor::kAmd;
  CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"intel-only"});
  lab.vendor = ProcessorVendor::kNone;
  CHECK(CheckLab(lab).empty());
}

// ---- Networking ------------------------------------------------------------------------------------

TEST_CASE("Frames of nested VMs are dropped without MAC spoofing on the middle VM's adapter", "[hv]") {
  for (Profile p : kBoth) {
    LabFacts lab = Spoofing(false);
    lab.profile = p;
    std::vector<Violation> vs = CheckNetworking(lab);
    REQUIRE(vs.size() == 1);
    CHECK(vs[0].rule == "mac-spoofing-for-nested-traffic");
    CHECK(vs[0].severity == Severity::kWarning);
    CHECK(Has(vs[0].message, "VM 'nested1' adapter 'Ethernet': frames of nested VMs will be dropped"));
    CHECK(Has(vs[0].message, "Set-VMNetworkAdapter -VMName middle -MacAddressSpoofing On"));
    CHECK(Has(vs[0].message, "use NAT"));
    CHECK(Warnings(CheckLab(lab)) == std::set<std::string>{"mac-spoofing-for-nested-traffic"});
    lab = Spoofing(true);
    lab.profile = p;
    CHECK(CheckNetworking(lab).empty());
  }
}

TEST_CASE("A middle VM's own frames need no MAC spoofing; only nested VMs' frames do", "[hv]") {
  LabFacts lab = Spoofing(false);
  lab.machines.pop_back();  // no nested VM on the inner switch
  CHECK(CheckNetworking(lab).empty());
}

TEST_CASE("Nested VMs behind NAT need an address and the NAT adapter as gateway", "[hv]") {
  LabFacts lab = NestedNat();
  Machine(lab, "nested1").interfaces[0].gateway = std::nullopt;
  Machine(lab, "nested2").interfaces[0].gateway = lab::Ipv4::Parse("192.168.100.254");
  std::vector<Violation> vs = CheckNetworking(lab);
  REQUIRE(vs.size() == 2);
  for (const auto& v : vs) {
    CHECK(v.rule == "nat-gateway-for-nested-vms");
    CHECK(v.severity == Severity::kWarning);
    CHECK(Has(v.message, "New-NetIPAddress -DefaultGateway 192.168.100.1"));
  }
  CHECK(Has(vs[1].message, "not 192.168.100.254"));
}

TEST_CASE("Each lab violation names the machine and the adapter or switch it is about", "[hv]") {
  // `lab validate` points at them in the lab file.
  std::vector<Violation> vs = CheckLab(Spoofing(false));
  REQUIRE(vs.size() == 1);
  CHECK(vs[0].machine == "nested1");
  CHECK(vs[0].interface == "Ethernet");

  LabFacts lab = NestedNat();
  Machine(lab, "hv1").switches[0].allow_management_os = false;
  Machine(lab, "middle").expose_virtualization_extensions = false;
  std::map<std::string, Violation> by_rule;
  for (const auto& v : CheckLab(lab)) by_rule[v.rule] = v;
  REQUIRE(by_rule.count("management-os-takes-address"));
  CHECK(by_rule["management-os-takes-address"].machine == "hv1");
  CHECK(by_rule["management-os-takes-address"].interface == "Ethernet");
  CHECK(by_rule["management-os-takes-address"].switch_name == "External");
  REQUIRE(by_rule.count("switch-needs-nesting"));
  CHECK(by_rule["switch-needs-nesting"].machine == "middle");
  CHECK(by_rule["switch-needs-nesting"].switch_name == "VmNAT");
  REQUIRE(by_rule.count("nested-needs-exposed-parent"));
  std::string nested = by_rule["nested-needs-exposed-parent"].machine;
  CHECK((nested == "nested1" || nested == "nested2"));
  CHECK(by_rule["nested-needs-exposed-parent"].switch_name.empty());
  CHECK(by_rule["nested-needs-exposed-parent"].interface.empty());
}

TEST_CASE("VM facts of a lab machine say when a hypervisor runs inside it", "[hv]") {
  LabFacts lab = NestedNat();
  lab.host_device_guard = true;
  const MachineFacts* middle = lab.Find("middle");
  REQUIRE(middle);
  VmFacts f = VmFactsOf(lab, *middle, State::kRunning, true);
  CHECK(f.hypervisor_running);
  CHECK(f.host_device_guard);
  CHECK_FALSE(VmFactsOf(lab, *middle, State::kRunning, false).hypervisor_running);
  CHECK_FALSE(VmFactsOf(lab, *middle, State::kSaved, true).hypervisor_running);
  CHECK_FALSE(VmFactsOf(lab, *lab.Find("nested1"), State::kRunning, true).hypervisor_running);
  CHECK(Refused(f, Operation::kLiveMigrate, kV8, "live-migration-refused"));
}

// ---- The catalogue and its table ------------------------------------------------------------------

TEST_CASE("Every rule has a unique id, a seed sentence and a gloss", "[hv]") {
  std::set<std::string> ids;
  for (const auto& r : Rules()) {
    INFO(r.id);
    CHECK(ids.insert(r.id).second);
    CHECK(std::string(r.seed).size() > 0);
    CHECK(std::string(r.sentence).size() > 0);
    CHECK(std::string(r.gloss).size() > 0);
    CHECK(std::string(r.note).size() > 0);
    std::string profiles = r.profiles;
    CHECK((profiles == "both" || profiles == "v8" || profiles == "preview-10565" || profiles == "ws2022" ||
           profiles == "v8, ws2022" || profiles == "v8, preview-10565"));
    // The seeds' files, DESIGN.md, or Microsoft's current guide for the ws2022 rules.
    CHECK((std::string(r.seed).ends_with(".txt") || std::string(r.seed) == "DESIGN.md" ||
           std::string(r.seed) == kMicrosoftGuide));
    if (std::string(r.seed) == kMicrosoftGuide) CHECK(Has(profiles, "ws2022"));
  }
  CHECK(Rules().size() >= 30);
}

TEST_CASE("Every seed sentence of the catalogue is quoted from its seed", "[hv]") {
  for (const auto& r : Rules()) {
    std::string seed = r.seed;
    if (seed == "DESIGN.md" || seed == kMicrosoftGuide) continue;  // not a seed file
    auto text = lab::ReadFile(lab::testing::Src("../shared/seeds/" + seed));
    if (!text) {
      WARN("seeds not found next to the repository; skipping " << seed);
      return;
    }
    INFO(r.id << " in " << seed);
    CHECK(Has(*text, r.sentence));
  }
}

TEST_CASE("Every violation the model reports names a rule of the catalogue", "[hv]") {
  std::vector<VmFacts> facts;
  for (State s : kStates)
    for (bool hv : {false, true}) {
      VmFacts vm = Middle(s, hv);
      vm.vbs = true;
      vm.dynamic_memory = true;
      vm.version = "5.0";
      vm.host_device_guard = true;
      vm.vendor = ProcessorVendor::kOther;
      facts.push_back(vm);
      vm.vendor = ProcessorVendor::kAmd;
      facts.push_back(vm);
      facts.push_back(Plain(s));
    }
  for (const auto& vm : facts)
    for (Operation op : kOperations)
      for (Profile p : kAll)
        for (const auto& v : CheckTransition(vm, op, p).violations) {
          INFO(v.rule);
          CHECK(FindRule(v.rule));
          CHECK(Has(v.message, "VM '"));
        }
  for (Profile p : kAll) {
    LabFacts lab = Spoofing(false);
    lab.profile = p;
    lab.vendor = ProcessorVendor::kAmd;
    Machine(lab, "middle").dynamic_memory = true;
    for (const auto& v : CheckLab(lab)) CHECK(FindRule(v.rule));
  }
}

TEST_CASE("docs/rules.md lists every rule of the catalogue", "[hv]") {
  auto doc = lab::ReadFile(lab::testing::Src("docs/rules.md"));
  REQUIRE(doc);
  for (const auto& r : Rules()) {
    INFO(r.id);
    CHECK(Has(*doc, std::string("`") + r.id + "`"));
  }
}
