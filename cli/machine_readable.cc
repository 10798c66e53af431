// The JSON the verbs print with --json (validate, plan, status; check's is in check.cc). Every
// field is described in docs/json.md, and tests/e2e/json_test.cc keeps the two in step.
#include <nlohmann/json.hpp>

#include "base/net.h"
#include "cli/cli.h"

namespace lab::cli {

std::pair<std::string, std::string> SplitFix(const std::string& message) {
  int depth = 0;
  bool quoted = false;
  size_t at = std::string::npos;
  for (size_t i = 0; i + 1 < message.size(); ++i) {
    const char c = message[i];
    if (c == '"') quoted = !quoted;
    else if (quoted) continue;
    else if (c == '(') ++depth;
    else if (c == ')' && depth > 0) --depth;
    else if (c == ';' && message[i + 1] == ' ' && depth == 0) at = i;
  }
  if (at == std::string::npos) return {message, ""};
  return {message.substr(0, at), message.substr(at + 2)};
}

nlohmann::json DiagnosticsJson(const std::vector<schema::Diagnostic>& diagnostics) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& d : diagnostics) {
    auto [message, fix] = SplitFix(d.message);
    // No position (the file could not be read): null, never a made-up line 0.
    const bool placed = d.loc.line > 0;
    rows.push_back({{"file", d.file},
                    {"line", placed ? nlohmann::json(d.loc.line) : nlohmann::json()},
                    {"col", placed ? nlohmann::json(std::max(d.loc.col, 1)) : nlohmann::json()},
                    {"severity", d.severity == schema::Severity::kWarning ? "warning" : "error"},
                    {"message", message},
                    {"fix", fix}});
  }
  return nlohmann::json{{"diagnostics", rows}};
}

namespace {

/// {"interface","address","prefix"} of "10.10.0.10/24" on `interface`.
nlohmann::json AddressJson(const std::string& interface, const std::string& cidr) {
  if (auto c = Cidr::Parse(cidr))
    return {{"interface", interface}, {"address", c->addr.ToString()}, {"prefix", c->prefix}};
  return {{"interface", interface}, {"address", cidr}, {"prefix", nullptr}};
}

nlohmann::json OrNull(const std::string& s) { return s.empty() ? nlohmann::json() : nlohmann::json(s); }

}  // namespace

nlohmann::json StatusJson(const engine::LabStatus& st) {
  nlohmann::json machines = nlohmann::json::array();
  for (const auto& m : st.machines) {
    nlohmann::json interfaces = nlohmann::json::array();
    nlohmann::json addresses = nlohmann::json::array();
    for (const auto& i : m.interfaces) {
      nlohmann::json row{{"name", i.name},
                         {"key", i.key},
                         {"mac", OrNull(i.mac)},
                         {"switch", OrNull(i.switch_name)},
                         {"network", OrNull(i.network)},
                         {"recorded", i.recorded},
                         {"observed", i.observed},
                         // Looked at: "up" or "down"; not looked at (its machine is off): null.
                         {"link", i.observed ? nlohmann::json(i.up ? "up" : "down") : nlohmann::json()},
                         {"differs", i.differs}};
      if (i.observed) {
        row["up"] = i.up;
        row["addresses"] = i.addresses;
      }
      interfaces.push_back(row);
      // As found where the machine was looked into, as recorded where it was not.
      if (i.observed)
        for (const auto& a : i.addresses) addresses.push_back(AddressJson(i.name, a));
      else if (!i.recorded.empty())
        addresses.push_back(AddressJson(i.name, i.recorded));
    }
    // A network's stand-in answers at its gateway.
    if (m.kind == "network")
      for (const auto& a : m.addresses)
        if (a.rfind("stand-in ", 0) == 0)
          addresses.push_back({{"interface", "stand-in"},
                               {"address", a.substr(9)},
                               {"prefix", m.network_prefix > 0 ? nlohmann::json(m.network_prefix) : nlohmann::json()}});
    nlohmann::json row{{"name", m.name},
                       {"kind", m.kind},
                       {"parent", OrNull(m.parent)},
                       {"driver", OrNull(m.driver)},
                       {"state", m.state},
                       {"pid", m.pid},
                       {"addresses", addresses},
                       {"interfaces", interfaces},
                       {"gateways", m.gateways},
                       {"dns", m.dns},
                       {"drift", m.drift}};
    if (m.state == "running" && m.kind != "network") row["default_routes"] = m.default_routes;
    if (m.dns_found) row["dns_found"] = *m.dns_found;
    if (m.kind == "vm") row["checkpoints"] = m.checkpoints;
    machines.push_back(row);
  }
  nlohmann::json teams = nlohmann::json::array();
  for (const auto& t : st.teams) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : t.members)
      members.push_back({{"name", m.name}, {"link_up", m.link_up}, {"primary", m.primary}, {"ports", m.ports}});
    teams.push_back({{"switch", t.switch_name}, {"owner", t.owner}, {"members", members}});
  }
  return nlohmann::json{{"lab", st.lab},           {"uid", st.uid},     {"file", st.file},
                        {"resources", st.resources}, {"machines", machines}, {"teams", teams},
                        {"drift", st.drift}};
}

}  // namespace lab::cli
