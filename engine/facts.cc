#include "engine/facts.h"

#include <algorithm>

namespace lab::engine {

namespace model = hv::model;

model::Profile ProfileOf(const schema::Lab& lab) {
  return model::ParseProfile(lab.compatibility).value_or(model::Profile::kV8);
}

model::LabFacts LabFactsOf(const schema::Lab& lab) {
  model::LabFacts f;
  f.profile = ProfileOf(lab);
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

RuleReport CheckRules(const schema::Lab& lab) {
  RuleReport out;
  for (const auto& v : model::CheckLab(LabFactsOf(lab))) {
    std::string line = v.message + " [" + v.rule + "]";
    (v.severity == model::Severity::kError ? out.errors : out.warnings).push_back(std::move(line));
  }
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

std::vector<schema::Diagnostic> RuleDiagnostics(const schema::Lab& lab) {
  std::vector<schema::Diagnostic> out;
  for (const auto& v : model::CheckLab(LabFactsOf(lab)))
    out.push_back(schema::Diagnostic{lab.file, LocOf(lab, v), v.message + " [" + v.rule + "]",
                                     v.severity == model::Severity::kError ? schema::Severity::kError
                                                                           : schema::Severity::kWarning});
  std::stable_sort(out.begin(), out.end(), [](const schema::Diagnostic& a, const schema::Diagnostic& b) {
    return std::pair{a.loc.line, a.loc.col} < std::pair{b.loc.line, b.loc.col};
  });
  return out;
}

}  // namespace lab::engine
