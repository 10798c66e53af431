#include "engine/graph.h"

#include <cctype>
#include <functional>

#include "base/text.h"

namespace lab::engine {
namespace {

using schema::Lab;
using schema::Machine;

std::string AddressOf(const std::optional<Cidr>& ip) { return ip ? " " + ip->ToString() : ""; }

/// Draws an indented tree with box-drawing branches, like `tree(1)`.
class TreeWriter {
 public:
  explicit TreeWriter(std::string& out) : out_(out) {}
  /// Writes `items`, calling `children(i)` after item i to write what hangs below it.
  void Items(const std::vector<std::string>& items, const std::function<void(size_t)>& children) {
    for (size_t i = 0; i < items.size(); ++i) {
      bool last = i + 1 == items.size();
      out_ += prefix_ + (last ? "└─ " : "├─ ") + items[i] + "\n";
      std::string saved = prefix_;
      prefix_ += last ? "   " : "│  ";
      children(i);
      prefix_ = saved;
    }
  }

 private:
  std::string& out_;
  std::string prefix_;
};

std::string MachineLine(const Machine& m) {
  if (m.kind == schema::MachineKind::kHost) return "host " + m.name;
  return "vm " + m.name + " (" + std::to_string(m.processor.count) + " vCPU, " + FormatSize(m.memory.startup) +
         (m.memory.dynamic ? " dynamic" : "") + ", v" + m.version +
         (m.processor.expose_virtualization_extensions ? ", nested virtualization" : "") + ")";
}

std::string Tree(const Lab& lab) {
  std::string out = "lab " + lab.name + "\n";
  TreeWriter w(out);
  std::vector<std::string> top;
  std::vector<const Machine*> top_machines;
  for (const auto& n : lab.networks) {
    top.push_back("network " + n.name + " " + n.subnet.ToString() +
                  (n.gateway ? " (stand-in at " + n.gateway->ToString() + ")" : ""));
    top_machines.push_back(nullptr);
  }
  for (const auto& m : lab.machines)
    if (m.parent.empty()) {
      top.push_back(MachineLine(m));
      top_machines.push_back(&m);
    }
  std::function<void(const Machine&)> below = [&](const Machine& m) {
    std::vector<std::string> items;
    std::vector<const Machine*> sub;
    for (const auto& nic : m.nics) items.push_back("nic " + nic.name + " -> network " + nic.network + AddressOf(nic.ip));
    for (const auto& a : m.adapters)
      items.push_back("adapter " + a.name + " -> switch " + a.switch_name + AddressOf(a.ip) +
                      (a.mac_address_spoofing ? " (MAC spoofing on)" : ""));
    for (const auto& s : m.switches) {
      std::string line = "switch " + s.name + " [" + schema::ToString(s.type) + "]";
      if (!s.nics.empty()) line += " on " + Join(s.nics, ", ");
      if (s.ip) line += ", vEthernet (" + s.name + ")" + AddressOf(s.ip);
      if (s.nat) line += ", NAT " + s.nat->name + " " + s.nat->prefix.ToString();
      items.push_back(line);
    }
    sub.resize(items.size(), nullptr);
    for (const auto& child : m.vms)
      if (const Machine* c = lab.FindMachine(child)) {
        items.push_back(MachineLine(*c));
        sub.push_back(c);
      }
    w.Items(items, [&](size_t i) {
      if (sub[i]) below(*sub[i]);
    });
  };
  w.Items(top, [&](size_t i) {
    if (top_machines[i]) below(*top_machines[i]);
  });
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
