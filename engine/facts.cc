#include "engine/facts.h"

#include <algorithm>

namespace lab::engine {

namespace model = hv::model;

model::Profile ProfileOf(const schema::Lab& lab) {
  return model::ParseProfile(lab.compatibility).value_or(model::Profile::kV8);
}

bool HasQemu(const schema::Lab& lab) {
  return std::any_of(lab.machines.begin(), lab.machines.end(), [](const schema::Machine& m) { return m.IsQemu(); });
}

model::LabFacts LabFactsOf(const schema::Lab& lab, const hv::QemuHostFacts& qemu) {
  model::LabFacts f;
  f.profile = ProfileOf(lab);
  f.accel = qemu.accel;
  f.cpu = qemu.cpu;
  f.machines.reserve(lab.machines.size());
  for (const auto& m : lab.machines) {
    model::MachineFacts mf;
    mf.name = m.name;
    mf.parent = m.parent;
    mf.is_host = m.kind == schema::MachineKind::kHost;
    mf.expose_virtualization_extensions = m.processor.expose_virtualization_extensions;
    mf.dynamic_memory = m.memory.dynamic;
    mf.version = m.version;
    mf.vbs = m.virtualization_based_security;
    mf.qemu = m.IsQemu();
    if (mf.is_host)
      mf.vendor = m.processor.vendor == "intel" ? model::ProcessorVendor::kIntel
                  : m.processor.vendor == "amd" ? model::ProcessorVendor::kAmd
                                                : model::ProcessorVendor::kNone;
    for (const auto& n : m.nics) mf.interfaces.push_back(model::InterfaceFacts{n.name, "", false, n.ip, n.gateway});
    for (const auto& a : m.adapters)
      mf.interfaces.push_back(model::InterfaceFacts{a.name, a.switch_name, a.mac_address_spoofing, a.ip, a.gateway});
    for (const auto& s : m.switches) {
      model::SwitchFacts sf;
      sf.name = s.name;
      sf.kind = s.type == schema::SwitchType::kExternal   ? model::SwitchKind::kExternal
                : s.type == schema::SwitchType::kInternal ? model::SwitchKind::kInternal
                                                          : model::SwitchKind::kPrivate;
      sf.binds = s.nics;
      sf.allow_management_os = s.allow_management_os;
      sf.embedded_teaming = s.embedded_teaming;
      sf.lacp = s.teaming_mode == "lacp";
      sf.ip = s.ip;
      if (s.nat) sf.nat_prefix = s.nat->prefix;
      mf.switches.push_back(sf);
    }
    f.machines.push_back(std::move(mf));
  }
  return f;
}

namespace {

/// What this machine cannot give the lab's qemu VMs as asked, each at the setting: a processor
/// count above the machine's runs (QEMU makes the threads) but the vCPUs share processors.
struct QemuNote {
  const schema::Machine* vm;
  std::string message;
};
std::vector<QemuNote> QemuNotes(const schema::Lab& lab, const hv::QemuHostFacts& qemu) {
  std::vector<QemuNote> out;
  if (qemu.cpus <= 0) return out;
  for (const auto& m : lab.machines) {
    if (!m.IsQemu() || m.processor.count <= qemu.cpus) continue;
    out.push_back({&m, "VM '" + m.name + "': processor.count " + std::to_string(m.processor.count) +
                           " is more than this machine's " + std::to_string(qemu.cpus) +
                           " processors: the qemu VM gets its virtual processors, but they share the real ones "
                           "and run slower; set processor.count: " + std::to_string(qemu.cpus) +
                           " or less (Set-VMProcessor -Count)"});
  }
  return out;
}

}  // namespace

RuleReport CheckRules(const schema::Lab& lab, const hv::QemuHostFacts& qemu) {
  RuleReport out;
  for (const auto& v : model::CheckLab(LabFactsOf(lab, qemu))) {
    std::string line = v.message + " [" + v.rule + "]";
    (v.severity == model::Severity::kError ? out.errors : out.warnings).push_back(std::move(line));
  }
  for (auto& n : QemuNotes(lab, qemu)) out.warnings.push_back(std::move(n.message));
  return out;
}

namespace {

/// Where the object a violation is about is written: its interface or switch, else its machine.
schema::Loc LocOf(const schema::Lab& lab, const model::Violation& v) {
  const schema::Machine* m = lab.FindMachine(v.machine);
  if (!m) return schema::Loc{1, 1};
  if (!v.interface.empty()) {
    for (const auto& n : m->nics)
      if (n.name == v.interface) return n.loc;
    for (const auto& a : m->adapters)
      if (a.name == v.interface) return a.loc;
  }
  if (!v.switch_name.empty())
    if (const schema::Switch* sw = m->FindSwitch(v.switch_name)) return sw->loc;
  return m->loc;
}

}  // namespace

std::vector<schema::Diagnostic> RuleDiagnostics(const schema::Lab& lab, const hv::QemuHostFacts& qemu) {
  std::vector<schema::Diagnostic> out;
  for (auto& n : QemuNotes(lab, qemu))
    out.push_back(schema::Diagnostic{lab.file, n.vm->processor_count_loc, std::move(n.message),
                                     schema::Severity::kWarning});
  for (const auto& v : model::CheckLab(LabFactsOf(lab, qemu)))
    out.push_back(schema::Diagnostic{lab.file, LocOf(lab, v), v.message + " [" + v.rule + "]",
                                     v.severity == model::Severity::kError ? schema::Severity::kError
                                                                           : schema::Severity::kWarning});
  std::stable_sort(out.begin(), out.end(), [](const schema::Diagnostic& a, const schema::Diagnostic& b) {
    return std::pair{a.loc.line, a.loc.col} < std::pair{b.loc.line, b.loc.col};
  });
  return out;
}

}  // namespace lab::engine
