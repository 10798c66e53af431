// The rules model and qemu VMs: a qemu VM is judged by the processor QEMU really offers it (AMD
// under TCG whatever the hardware, the machine's own under KVM), partitions as before.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "hv/model.h"

using namespace lab::hv::model;

namespace {

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::set<std::string> Errors(const std::vector<Violation>& vs) {
  std::set<std::string> out;
  for (const auto& v : vs)
    if (v.severity == Severity::kError) out.insert(v.rule);
  return out;
}

MachineFacts Vm(const std::string& name, const std::string& parent, bool qemu, bool expose) {
  MachineFacts m;
  m.name = name;
  m.parent = parent;
  m.qemu = qemu;
  m.expose_virtualization_extensions = expose;
  return m;
}

/// hv1 (the lab file's Intel host) / middle (exposed, with a VM inside) / nested1; which are
/// qemu VMs, and what this machine offers QEMU, are the test's.
LabFacts Lab(Profile profile, bool middle_qemu, bool nested_qemu, Accelerator accel, ProcessorVendor cpu) {
  LabFacts lab;
  lab.profile = profile;
  lab.accel = accel;
  lab.cpu = cpu;
  MachineFacts host;
  host.name = "hv1";
  host.is_host = true;
  host.vendor = ProcessorVendor::kIntel;
  lab.machines.push_back(host);
  lab.machines.push_back(Vm("middle", "hv1", middle_qemu, true));
  lab.machines.push_back(Vm("nested1", "middle", nested_qemu, false));
  return lab;
}

const MachineFacts& At(const LabFacts& lab, const std::string& name) {
  const MachineFacts* m = lab.Find(name);
  REQUIRE(m);
  return *m;
}

}  // namespace

TEST_CASE("QEMU offers an AMD processor under TCG whatever the hardware, and the hardware's under KVM", "[hv]") {
  for (auto hw : {ProcessorVendor::kIntel, ProcessorVendor::kAmd, ProcessorVendor::kOther, ProcessorVendor::kNone})
    CHECK(QemuProcessor(Accelerator::kTcg, hw) == ProcessorVendor::kAmd);
  CHECK(QemuProcessor(Accelerator::kKvm, ProcessorVendor::kIntel) == ProcessorVendor::kIntel);
  CHECK(QemuProcessor(Accelerator::kKvm, ProcessorVendor::kAmd) == ProcessorVendor::kAmd);
  CHECK(QemuProcessor(Accelerator::kKvm, ProcessorVendor::kNone) == ProcessorVendor::kNone);
  CHECK(std::string(ToString(Accelerator::kTcg)) == "tcg");
  CHECK(std::string(ToString(Accelerator::kKvm)) == "kvm");
}

TEST_CASE("A qemu VM exposing its extensions under TCG is refused under the seeds' profiles with their sentence",
          "[hv]") {
  for (Profile p : {Profile::kV8, Profile::kPreview10565}) {
    INFO(ToString(p));
    // The lab file's host is Intel and this machine too: TCG still offers AMD SVM only.
    LabFacts lab = Lab(p, true, false, Accelerator::kTcg, ProcessorVendor::kIntel);
    CHECK(lab.VendorOf(At(lab, "middle")) == ProcessorVendor::kAmd);
    auto vs = CheckLab(lab);
    REQUIRE(Errors(vs) == std::set<std::string>{"intel-only"});
    CHECK(Has(vs[0].message, "VM 'middle': "));
    CHECK(Has(vs[0].message, "\"nesting is currently Intel-only\""));
    CHECK(Has(vs[0].message, "as a qemu VM it gets an AMD processor: QEMU's software emulation (TCG)"));
    CHECK(Has(vs[0].message, "compatibility: ws2022"));
    // Start-VM says the same.
    Verdict v = CheckTransition(VmFactsOf(lab, At(lab, "middle"), State::kOff, false), Operation::kStart, p);
    CHECK(Errors(v.violations) == std::set<std::string>{"intel-only"});
    CHECK(Has(v.violations[0].message, "as a qemu VM it gets an AMD processor"));
  }
}

TEST_CASE("A qemu VM on AMD is accepted under compatibility ws2022 from version 10.0", "[hv]") {
  LabFacts lab = Lab(Profile::kWs2022, true, false, Accelerator::kTcg, ProcessorVendor::kIntel);
  lab.machines[1].version = "9.0";
  CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"ws2022-amd-version-10"});
  lab.machines[1].version = "10.0";
  CHECK(CheckLab(lab).empty());
  CHECK(CheckTransition(VmFactsOf(lab, At(lab, "middle"), State::kOff, false), Operation::kStart, Profile::kWs2022)
            .allowed());
}

TEST_CASE("Under KVM a qemu VM gets this machine's processor: Intel nests under v8, AMD only under ws2022", "[hv]") {
  LabFacts intel = Lab(Profile::kV8, true, false, Accelerator::kKvm, ProcessorVendor::kIntel);
  CHECK(intel.VendorOf(At(intel, "middle")) == ProcessorVendor::kIntel);
  CHECK(CheckLab(intel).empty());

  LabFacts amd = Lab(Profile::kV8, true, false, Accelerator::kKvm, ProcessorVendor::kAmd);
  auto vs = CheckLab(amd);
  REQUIRE(Errors(vs) == std::set<std::string>{"intel-only"});
  CHECK(Has(vs[0].message, "KVM passes this machine's processor through"));
  amd.profile = Profile::kWs2022;
  amd.machines[1].version = "10.0";
  CHECK(CheckLab(amd).empty());
}

TEST_CASE("Partitions are judged by the lab file's host processor as before, whatever QEMU would offer", "[hv]") {
  // Everything a partition: TCG on this machine changes nothing.
  LabFacts lab = Lab(Profile::kV8, false, false, Accelerator::kTcg, ProcessorVendor::kAmd);
  CHECK(lab.VendorOf(At(lab, "middle")) == ProcessorVendor::kIntel);
  CHECK(lab.ProcessorSourceOf(At(lab, "middle")).empty());
  CHECK(CheckLab(lab).empty());
  lab.machines[0].vendor = ProcessorVendor::kAmd;
  auto vs = CheckLab(lab);
  REQUIRE(Errors(vs) == std::set<std::string>{"intel-only"});
  CHECK(Has(vs[0].message, "its host has an AMD processor"));
}

TEST_CASE("A partition inside a qemu VM runs on that VM's processor, a qemu VM inside one under KVM there", "[hv]") {
  // middle a partition exposing, nested1 a qemu VM exposing: QEMU on this machine (TCG) -> AMD.
  LabFacts lab = Lab(Profile::kV8, false, true, Accelerator::kTcg, ProcessorVendor::kIntel);
  lab.machines[2].expose_virtualization_extensions = true;
  CHECK(lab.VendorOf(At(lab, "nested1")) == ProcessorVendor::kAmd);
  CHECK(Errors(CheckLab(lab)) == std::set<std::string>{"intel-only"});

  // middle a qemu VM under KVM on Intel, exposing; nested1 a partition inside it (exposing):
  // Intel, as middle's processor.
  LabFacts kvm = Lab(Profile::kV8, true, false, Accelerator::kKvm, ProcessorVendor::kIntel);
  kvm.machines[2].expose_virtualization_extensions = true;
  CHECK(kvm.VendorOf(At(kvm, "nested1")) == ProcessorVendor::kIntel);
  CHECK(CheckLab(kvm).empty());

  // Both qemu VMs: nested1's QEMU runs in middle's guest, under KVM there (middle exposes), so
  // it gets middle's processor: AMD when middle is under TCG.
  LabFacts both = Lab(Profile::kV8, true, true, Accelerator::kTcg, ProcessorVendor::kIntel);
  both.machines[2].expose_virtualization_extensions = true;
  CHECK(both.VendorOf(At(both, "nested1")) == ProcessorVendor::kAmd);
  CHECK(Has(both.ProcessorSourceOf(At(both, "nested1")), "KVM inside qemu VM 'middle' passes its processor through"));
  LabFacts both_kvm = Lab(Profile::kV8, true, true, Accelerator::kKvm, ProcessorVendor::kIntel);
  both_kvm.machines[2].expose_virtualization_extensions = true;
  CHECK(both_kvm.VendorOf(At(both_kvm, "nested1")) == ProcessorVendor::kIntel);
  CHECK(CheckLab(both_kvm).empty());
}
