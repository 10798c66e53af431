#include "schema/lab.h"

#include <algorithm>

namespace lab::schema {

std::string FoldCase(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string ComputerNameOf(std::string_view name) {
  std::string out;
  bool gap = false;
  for (char c : name) {
    bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!keep) {
      gap = true;
      continue;
    }
    if (gap && !out.empty()) out.push_back('-');
    gap = false;
    out.push_back(c);
  }
  // Runs of '-' written in the name itself stay; only the replaced runs are single.
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  if (out.size() > 63) out.resize(63);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

std::string Diagnostic::ToString() const {
  std::string where = file;
  if (loc.line > 0) where += ":" + std::to_string(loc.line) + ":" + std::to_string(std::max(loc.col, 1));
  return where + (severity == Severity::kWarning ? ": warning: " : ": error: ") + message;
}

bool LoadResult::HasErrors() const {
  for (const auto& d : diagnostics)
    if (d.severity == Severity::kError) return true;
  return false;
}

const char* ToString(SwitchType t) {
  switch (t) {
    case SwitchType::kExternal: return "external";
    case SwitchType::kInternal: return "internal";
    case SwitchType::kPrivate: return "private";
  }
  return "?";
}

const char* ToString(CheckKind k) {
  switch (k) {
    case CheckKind::kPing: return "ping";
    case CheckKind::kResolve: return "resolve";
    case CheckKind::kTcp: return "tcp";
    case CheckKind::kHttp: return "http";
  }
  return "?";
}

const char* ToString(ImageKind k) {
  switch (k) {
    case ImageKind::kDebian: return "debian";
    case ImageKind::kFrom: return "from";
    case ImageKind::kRootfs: return "rootfs";
    case ImageKind::kOci: return "oci";
    case ImageKind::kDockerArchive: return "docker_archive";
  }
  return "?";
}

std::string Check::Describe() const {
  std::string s = from + " " + ToString(kind) + " " + target;
  if (expect_address) s += " = " + expect_address->ToString();
  if (expect_source) s += " (source " + expect_source->ToString() + ")";
  if (!expect_success) s += " (expect failure)";
  return s;
}

const Switch* Machine::FindSwitch(const std::string& switch_name) const {
  for (const auto& s : switches)
    if (s.name == switch_name) return &s;
  return nullptr;
}

const Machine* Lab::FindMachine(const std::string& machine) const {
  for (const auto& m : machines)
    if (m.name == machine) return &m;
  return nullptr;
}

const Network* Lab::FindNetwork(const std::string& network) const {
  for (const auto& n : networks)
    if (n.name == network) return &n;
  return nullptr;
}

const Image* Lab::FindImage(const std::string& image) const {
  for (const auto& i : images)
    if (i.name == image) return &i;
  return nullptr;
}

}  // namespace lab::schema
