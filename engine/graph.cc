#include "engine/graph.h"

#include <cctype>
#include <functional>

#include "base/text.h"

namespace lab::engine {
namespace {

using schema::Lab;
using schema::Machine;

std::string AddressOf(const std::optional<Cidr>& ip) { return ip ? " " + ip->ToString() : ""; }

std::string Tree(const Lab& lab) {
  std::string out = "lab " + lab.name + "\n";
  for (const auto& n : lab.networks)
    out += "├─ network " + n.name + " " + n.subnet.ToString() +
           (n.gateway ? " (stand-in at " + n.gateway->ToString() + ")" : "") + "\n";
  std::function<void(const Machine&, const std::string&)> walk = [&](const Machine& m, const std::string& indent) {
    bool host = m.kind == schema::MachineKind::kHost;
    std::string line = indent + (host ? "host " : "vm ") + m.name;
    if (!host) {
      line += " (" + std::to_string(m.processor.count) + " vCPU, " + FormatSize(m.memory.startup) +
              (m.memory.dynamic ? " dynamic" : "") + ", v" + m.version +
              (m.processor.expose_virtualization_extensions ? ", nested virtualization" : "") + ")";
    }
    out += line + "\n";
    std::string in = indent + "   ";
    for (const auto& nic : m.nics) out += in + "nic " + nic.name + " -> network " + nic.network + AddressOf(nic.ip) + "\n";
    for (const auto& a : m.adapters)
      out += in + "adapter " + a.name + " -> switch " + a.switch_name + AddressOf(a.ip) +
             (a.mac_address_spoofing ? " (MAC spoofing on)" : "") + "\n";
    for (const auto& s : m.switches) {
      out += in + "switch " + s.name + " [" + schema::ToString(s.type) + "]";
      if (!s.nics.empty()) out += " on " + Join(s.nics, ", ");
      if (s.ip) out += " vEthernet (" + s.name + ")" + AddressOf(s.ip);
      if (s.nat) out += " NAT " + s.nat->name + " " + s.nat->prefix.ToString();
      out += "\n";
    }
    for (const auto& child : m.vms)
      if (const Machine* c = lab.FindMachine(child)) walk(*c, in);
  };
  for (const auto& m : lab.machines)
    if (m.parent.empty()) walk(m, "└─ ");
  return out;
}

std::string Id(const std::string& kind, const std::string& a, const std::string& b = "") {
  std::string s = kind + "_" + a + (b.empty() ? "" : "_" + b);
  for (auto& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

std::string Dot(const Lab& lab) {
  std::string out = "digraph \"" + lab.name + "\" {\n  rankdir=LR;\n";
  for (const auto& n : lab.networks)
    out += "  " + Id("net", n.name) + " [shape=ellipse,label=\"" + n.name + "\\n" + n.subnet.ToString() + "\"];\n";
  for (const auto& m : lab.machines) {
    out += "  subgraph cluster_" + Id("m", m.name) + " {\n    label=\"" + m.name + "\";\n";
    for (const auto& s : m.switches)
      out += "    " + Id("sw", m.name, s.name) + " [shape=box,label=\"" + s.name + " (" + schema::ToString(s.type) + ")\"];\n";
    out += "    " + Id("m", m.name) + " [shape=component,label=\"" + m.name + "\"];\n  }\n";
    if (!m.parent.empty()) out += "  " + Id("m", m.parent) + " -> " + Id("m", m.name) + " [style=dotted];\n";
    for (const auto& nic : m.nics) out += "  " + Id("m", m.name) + " -> " + Id("net", nic.network) + " [label=\"" + nic.name + "\"];\n";
    for (const auto& a : m.adapters)
      out += "  " + Id("m", m.name) + " -> " + Id("sw", m.parent, a.switch_name) + " [label=\"" + a.name + "\"];\n";
  }
  return out + "}\n";
}

std::string Mermaid(const Lab& lab) {
  std::string out = "graph LR\n";
  for (const auto& n : lab.networks) out += "  " + Id("net", n.name) + "((" + n.name + " " + n.subnet.ToString() + "))\n";
  for (const auto& m : lab.machines) {
    out += "  " + Id("m", m.name) + "[" + m.name + "]\n";
    for (const auto& s : m.switches) {
      out += "  " + Id("sw", m.name, s.name) + "{{" + s.name + " " + schema::ToString(s.type) + "}}\n";
      out += "  " + Id("m", m.name) + " --- " + Id("sw", m.name, s.name) + "\n";
    }
    for (const auto& nic : m.nics) out += "  " + Id("m", m.name) + " -->|" + nic.name + "| " + Id("net", nic.network) + "\n";
    for (const auto& a : m.adapters)
      out += "  " + Id("m", m.name) + " -->|" + a.name + "| " + Id("sw", m.parent, a.switch_name) + "\n";
  }
  return out;
}

}  // namespace

std::string RenderGraph(const Lab& lab, GraphFormat format) {
  switch (format) {
    case GraphFormat::kTree: return Tree(lab);
    case GraphFormat::kDot: return Dot(lab);
    case GraphFormat::kMermaid: return Mermaid(lab);
  }
  return "";
}

}  // namespace lab::engine
