// The lab's topology as text: an indented tree, Graphviz dot, or Mermaid.
#pragma once

#include <string>

#include "schema/lab.h"

namespace lab::engine {

enum class GraphFormat { kTree, kDot, kMermaid };

std::string RenderGraph(const schema::Lab& lab, GraphFormat format);

}  // namespace lab::engine
