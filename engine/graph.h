// The lab's topology for people: an indented tree, Graphviz dot, or Mermaid, all drawn from one
// model (Topology) so that they show the same things.
//
// The model nests as the lab does: every machine is a cluster holding its NICs or adapters, the
// switches it owns and the clusters of the VMs it runs (a nested VM inside its middle VM's
// cluster, inside the host's). Edges follow a frame's way out: adapter -> switch; an external
// switch -> each NIC or adapter it binds (every member of a SET team); a NIC -> its network; a
// NAT switch -> its owner's interfaces that lead out (dashed: routed and translated, not
// bridged). So from any nested VM a path of edges leads to the network it reaches.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "schema/lab.h"

namespace lab::engine {

enum class GraphFormat { kTree, kDot, kMermaid };

struct TopologyNode {
  enum class Kind { kNetwork, kMachine, kNic, kAdapter, kSwitch };
  Kind kind = Kind::kMachine;
  std::string id;       // unique in the graph: "net:lan", "machine:middle", "sw:middle/VmNAT", ...
  std::string cluster;  // the machine whose cluster holds it; "" for networks
  std::vector<std::string> label;  // lines: the name first, then what it is and its marks (a
                                   // machine's node: its settings; the cluster's title names it)
};

struct TopologyEdge {
  std::string from, to;  // node ids
  std::string label;     // the address carried, "SET member", "NAT LocalNAT", or ""
  bool dashed = false;   // routed (NAT), not bridged
};

struct TopologyCluster {
  std::string machine;
  std::string parent;  // "" for a host
  std::string title;   // "host hv1", "VM middle"
};

struct Topology {
  std::string lab;
  /// Networks first, then each machine's nodes, machines in pre-order (parents before children).
  std::vector<TopologyNode> nodes;
  std::vector<TopologyEdge> edges;
  /// One per machine, in pre-order (parents first): the cluster nesting.
  std::vector<TopologyCluster> clusters;
};

/// The model of `lab` (as placed: pass the lab with its moves applied to draw it as it runs).
Topology BuildTopology(const schema::Lab& lab);

std::string RenderGraph(const schema::Lab& lab, GraphFormat format);

/// Renders dot text to `format` ("svg" or "png") with Graphviz's `dot`, run without a shell;
/// the image's bytes. Fails naming the fix ("apt-get install graphviz") when `dot` is not on the
/// PATH, or with dot's own message when it refuses the text.
Result<std::string> RenderWithGraphviz(const std::string& dot_text, const std::string& format);

}  // namespace lab::engine
