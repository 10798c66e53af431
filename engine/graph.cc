#include "engine/graph.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "base/text.h"

namespace lab::engine {
namespace {

using schema::Lab;
using schema::Machine;
using Kind = TopologyNode::Kind;

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

/// "2 vCPU, 1GiB static, v9.0, nested virtualization"; a qemu VM says so first: "qemu, 2 vCPU, ..."
std::string VmSettings(const Machine& m) {
  return std::string(m.IsQemu() ? "qemu, " : "") + std::to_string(m.processor.count) + " vCPU, " + FormatSize(m.memory.startup) +
         (m.memory.dynamic ? " dynamic" : "") + ", v" + m.version +
         (m.processor.expose_virtualization_extensions ? ", nested virtualization" : "");
}

std::string MachineLine(const Machine& m) {
  if (m.kind == schema::MachineKind::kHost) return "host " + m.name;
  return "vm " + m.name + " (" + VmSettings(m) + ")";
}

/// What a switch is, with its marks: "external, SET (switch independent)", "internal, NAT ...".
std::vector<std::string> SwitchMarks(const schema::Switch& s) {
  std::vector<std::string> marks{schema::ToString(s.type)};
  if (s.embedded_teaming) marks.push_back("SET (switch independent)");
  if (s.type == schema::SwitchType::kExternal && s.allow_management_os) marks.push_back("management OS shares it");
  if (s.ip) marks.push_back("vEthernet (" + s.name + ")" + AddressOf(s.ip));
  if (s.nat) marks.push_back("NAT " + s.nat->name + " " + s.nat->prefix.ToString());
  return marks;
}

std::string Tree(const Lab& lab) {
  std::string out = "lab " + lab.name + "\n";
  TreeWriter w(out);
  std::map<std::string, const Machine*> by_name;  // Lab::FindMachine is a scan: 10,000 VMs
  for (const auto& m : lab.machines) by_name.emplace(m.name, &m);
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
      auto marks = SwitchMarks(s);
      std::string line = "switch " + s.name + " [" + marks[0] + "]";
      if (!s.nics.empty()) line += " on " + Join(s.nics, ", ");
      if (marks.size() > 1) line += ", " + Join(std::vector<std::string>(marks.begin() + 1, marks.end()), ", ");
      items.push_back(line);
    }
    sub.resize(items.size(), nullptr);
    for (const auto& child : m.vms)
      if (auto c = by_name.find(child); c != by_name.end()) {
        items.push_back(MachineLine(*c->second));
        sub.push_back(c->second);
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

std::string MachineId(const std::string& m) { return "machine:" + m; }
std::string NicId(const std::string& m, const std::string& nic) { return "nic:" + m + "/" + nic; }
std::string AdapterId(const std::string& m, const std::string& a) { return "adapter:" + m + "/" + a; }
std::string SwitchId(const std::string& m, const std::string& s) { return "switch:" + m + "/" + s; }

/// The node id of `owner`'s NIC (a host) or adapter (a VM) called `name`, as written or
/// ignoring case (Hyper-V's names); "" when it has none.
std::string InterfaceId(const Machine& owner, const std::string& name) {
  for (const auto& n : owner.nics)
    if (schema::FoldCase(n.name) == schema::FoldCase(name)) return NicId(owner.name, n.name);
  for (const auto& a : owner.adapters)
    if (schema::FoldCase(a.name) == schema::FoldCase(name)) return AdapterId(owner.name, a.name);
  return "";
}

const schema::Switch* FindSwitchOf(const Machine* owner, const std::string& name) {
  if (!owner) return nullptr;
  for (const auto& s : owner->switches)
    if (schema::FoldCase(s.name) == schema::FoldCase(name)) return &s;
  return nullptr;
}

/// "a\"b" for dot; labels join their lines with \n.
std::string DotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string DotLabel(const std::vector<std::string>& lines) {
  std::string joined;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) joined += '\n';
    joined += lines[i];
  }
  std::string q = DotQuote(joined);
  std::string out;
  for (char c : q) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

const char* DotShape(Kind k) {
  switch (k) {
    case Kind::kNetwork: return "shape=ellipse,style=filled,fillcolor=\"#dbeafe\"";
    case Kind::kMachine: return "shape=note,fontsize=9";
    case Kind::kNic: return "shape=box,style=\"rounded,filled\",fillcolor=\"#fef3c7\"";
    case Kind::kAdapter: return "shape=box,style=rounded";
    case Kind::kSwitch: return "shape=box,style=filled,fillcolor=\"#e5e7eb\"";
  }
  return "shape=box";
}

/// Each cluster's nodes and child clusters, so that drawing a big lab (10,000 VMs) stays linear.
struct ClusterIndex {
  explicit ClusterIndex(const Topology& t) {
    for (const auto& n : t.nodes) nodes[n.cluster].push_back(&n);
    for (const auto& c : t.clusters) children[c.parent].push_back(&c);
  }
  std::map<std::string, std::vector<const TopologyNode*>> nodes;        // by cluster ("" = top)
  std::map<std::string, std::vector<const TopologyCluster*>> children;  // by parent ("" = hosts)
  template <typename T>
  static const std::vector<const T*>& Of(const std::map<std::string, std::vector<const T*>>& m, const std::string& k) {
    static const std::vector<const T*> kNone;
    auto it = m.find(k);
    return it == m.end() ? kNone : it->second;
  }
};

std::string Dot(const Topology& t) {
  std::string out = "digraph " + DotQuote(t.lab) + " {\n";
  out += "  graph [rankdir=LR,fontname=\"Helvetica\",label=" + DotQuote("lab " + t.lab) + ",labelloc=t];\n";
  out += "  node [fontname=\"Helvetica\",fontsize=10];\n  edge [fontname=\"Helvetica\",fontsize=9];\n";
  auto node_line = [](const TopologyNode& n, const std::string& indent) {
    return indent + DotQuote(n.id) + " [" + DotShape(n.kind) + ",label=" + DotLabel(n.label) + "];\n";
  };
  ClusterIndex index(t);
  for (const TopologyNode* n : ClusterIndex::Of(index.nodes, "")) out += node_line(*n, "  ");
  std::function<void(const TopologyCluster&, const std::string&)> cluster = [&](const TopologyCluster& m,
                                                                                const std::string& indent) {
    out += indent + "subgraph " + DotQuote("cluster:" + m.machine) + " {\n";
    out += indent + "  label=" + DotQuote(m.title) + ";\n";
    for (const TopologyNode* n : ClusterIndex::Of(index.nodes, m.machine)) out += node_line(*n, indent + "  ");
    for (const TopologyCluster* c : ClusterIndex::Of(index.children, m.machine)) cluster(*c, indent + "  ");
    out += indent + "}\n";
  };
  for (const TopologyCluster* c : ClusterIndex::Of(index.children, "")) cluster(*c, "  ");
  for (const auto& e : t.edges) {
    std::vector<std::string> attrs;
    if (!e.label.empty()) attrs.push_back("label=" + DotQuote(e.label));
    if (e.dashed) attrs.push_back("style=dashed");
    out += "  " + DotQuote(e.from) + " -> " + DotQuote(e.to) +
           (attrs.empty() ? std::string() : " [" + Join(attrs, ",") + "]") + ";\n";
  }
  return out + "}\n";
}

/// Mermaid ids are plain words: n1, n2, ... in node order; labels are quoted, '"' as #quot;.
std::string MermaidText(const std::vector<std::string>& lines) {
  std::string joined;
  for (size_t i = 0; i < lines.size(); ++i) joined += (i ? "<br/>" : "") + lines[i];
  std::string out = "\"";
  for (char c : joined) out += c == '"' ? std::string("#quot;") : std::string(1, c);
  return out + "\"";
}

std::string Mermaid(const Topology& t) {
  std::map<std::string, std::string> ids;
  for (const auto& n : t.nodes) ids[n.id] = "n" + std::to_string(ids.size() + 1);
  std::string out = "graph LR\n";
  auto node_line = [&](const TopologyNode& n, const std::string& indent) {
    std::string text = MermaidText(n.label);
    switch (n.kind) {
      case Kind::kNetwork: return indent + ids[n.id] + "((" + text + "))\n";
      case Kind::kSwitch: return indent + ids[n.id] + "{{" + text + "}}\n";
      case Kind::kNic: return indent + ids[n.id] + "[/" + text + "/]\n";
      case Kind::kAdapter: return indent + ids[n.id] + "(" + text + ")\n";
      case Kind::kMachine: return indent + ids[n.id] + "[" + text + "]\n";
    }
    return std::string();
  };
  ClusterIndex index(t);
  for (const TopologyNode* n : ClusterIndex::Of(index.nodes, "")) out += node_line(*n, "  ");
  size_t clusters = 0;
  std::function<void(const TopologyCluster&, const std::string&)> cluster = [&](const TopologyCluster& m,
                                                                                const std::string& indent) {
    out += indent + "subgraph c" + std::to_string(++clusters) + " [" + MermaidText({m.title}) + "]\n";
    for (const TopologyNode* n : ClusterIndex::Of(index.nodes, m.machine)) out += node_line(*n, indent + "  ");
    for (const TopologyCluster* c : ClusterIndex::Of(index.children, m.machine)) cluster(*c, indent + "  ");
    out += indent + "end\n";
  };
  for (const TopologyCluster* c : ClusterIndex::Of(index.children, "")) cluster(*c, "  ");
  for (const auto& e : t.edges) {
    std::string arrow = e.dashed ? " -.->" : " -->";
    out += "  " + ids[e.from] + arrow + (e.label.empty() ? std::string() : "|" + MermaidText({e.label}) + "|") + " " +
           ids[e.to] + "\n";
  }
  return out;
}

}  // namespace

Topology BuildTopology(const Lab& lab) {
  Topology t;
  t.lab = lab.name;
  std::map<std::string, const Machine*> by_name;  // Lab::FindMachine is a scan: 10,000 VMs
  for (const auto& m : lab.machines) by_name.emplace(m.name, &m);
  for (const auto& n : lab.networks) {
    std::vector<std::string> label{"network " + n.name, n.subnet.ToString()};
    if (n.gateway) label.push_back("stand-in " + n.gateway->ToString());
    t.nodes.push_back({Kind::kNetwork, "net:" + n.name, "", label});
  }
  for (const auto& m : lab.machines) {
    bool host = m.kind == schema::MachineKind::kHost;
    t.clusters.push_back({m.name, m.parent, (host ? "host " : "VM ") + m.name + (m.IsQemu() ? " (qemu)" : "")});
    // A VM's settings as a note in its box; a host has none, but an empty box is not drawn.
    if (!host)
      t.nodes.push_back({Kind::kMachine, MachineId(m.name), m.name, {VmSettings(m)}});
    else if (m.nics.empty() && m.switches.empty() && m.vms.empty())
      t.nodes.push_back({Kind::kMachine, MachineId(m.name), m.name, {"host " + m.name}});
    for (const auto& nic : m.nics) {
      t.nodes.push_back({Kind::kNic, NicId(m.name, nic.name), m.name, {"NIC " + nic.name}});
      t.edges.push_back({NicId(m.name, nic.name), "net:" + nic.network, nic.ip ? nic.ip->ToString() : ""});
    }
    auto found = by_name.find(m.parent);
    const Machine* parent = found == by_name.end() ? nullptr : found->second;
    for (const auto& a : m.adapters) {
      std::vector<std::string> alabel{"adapter " + a.name};
      if (a.mac_address_spoofing) alabel.push_back("MAC spoofing on");
      if (a.mac) alabel.push_back("MAC " + *a.mac);
      t.nodes.push_back({Kind::kAdapter, AdapterId(m.name, a.name), m.name, alabel});
      const schema::Switch* sw = FindSwitchOf(parent, a.switch_name);
      t.edges.push_back({AdapterId(m.name, a.name), SwitchId(m.parent, sw ? sw->name : a.switch_name),
                         a.ip ? a.ip->ToString() : ""});
    }
    for (const auto& s : m.switches) {
      std::vector<std::string> slabel{"switch " + s.name};
      for (const auto& mark : SwitchMarks(s)) slabel.push_back(mark);
      t.nodes.push_back({Kind::kSwitch, SwitchId(m.name, s.name), m.name, slabel});
      // An external switch's frames leave through the NICs (a VM's: adapters) it binds.
      if (s.type == schema::SwitchType::kExternal)
        for (const auto& nic : s.nics)
          if (auto id = InterfaceId(m, nic); !id.empty())
            t.edges.push_back({SwitchId(m.name, s.name), id, s.embedded_teaming ? "SET member" : "bound"});
      // A NAT's traffic is routed out of its owner, translated: through the interfaces with a
      // default gateway (all of them when none has one).
      if (s.nat) {
        std::vector<std::string> out;
        for (const auto& nic : m.nics)
          if (nic.gateway) out.push_back(NicId(m.name, nic.name));
        for (const auto& a : m.adapters)
          if (a.gateway) out.push_back(AdapterId(m.name, a.name));
        if (out.empty()) {
          for (const auto& nic : m.nics) out.push_back(NicId(m.name, nic.name));
          for (const auto& a : m.adapters) out.push_back(AdapterId(m.name, a.name));
        }
        for (const auto& id : out) t.edges.push_back({SwitchId(m.name, s.name), id, "NAT " + s.nat->name, true});
      }
    }
  }
  return t;
}

std::string RenderGraph(const Lab& lab, GraphFormat format) {
  switch (format) {
    case GraphFormat::kTree: return Tree(lab);
    case GraphFormat::kDot: return Dot(BuildTopology(lab));
    case GraphFormat::kMermaid: return Mermaid(BuildTopology(lab));
  }
  return "";
}

Result<std::string> RenderWithGraphviz(const std::string& dot_text, const std::string& format) {
  std::string dot;
  if (const char* path = std::getenv("PATH"))
    for (const auto& dir : Split(path, ':')) {
      std::string candidate = (dir.empty() ? std::string(".") : dir) + "/dot";
      if (::access(candidate.c_str(), X_OK) == 0) {
        dot = candidate;
        break;
      }
    }
  if (dot.empty())
    return Status::Error("--format " + format + " draws the graph with Graphviz's dot, which is not installed; "
                         "apt-get install graphviz (or use --format dot and render it elsewhere)");
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return ErrnoStatus("pipe");
  }
  std::string type = "-T" + format;
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus("fork");
  if (pid == 0) {
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    const char* argv[] = {dot.c_str(), type.c_str(), nullptr};
    ::execv(dot.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  // Feed dot and drain its output at once: a big image must not block it on a full pipe.
  std::string image, errors;
  size_t written = 0;
  int to = in[1];
  if (dot_text.empty()) {
    ::close(to);
    to = -1;
  }
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old);  // dot may exit before reading everything
  int open_reads = 2;
  while (open_reads > 0 || to >= 0) {
    pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {to, POLLOUT, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? image : errors).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        (i == 0 ? out[0] : err[0]) = -1;
        --open_reads;
      }
    }
    if (to >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(to, dot_text.data() + written, dot_text.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if ((n < 0 && errno != EINTR && errno != EAGAIN) || written == dot_text.size()) {
        ::close(to);
        to = -1;
      }
    }
  }
  ::sigaction(SIGPIPE, &old, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Status::Error("Graphviz's dot could not draw the graph as " + format + ": " +
                         (errors.empty() ? "it exited with status " + std::to_string(WEXITSTATUS(status)) : Trim(errors)));
  return image;
}

}  // namespace lab::engine
