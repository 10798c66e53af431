// `lab graph` as a user meets it: every checked-in lab drawn as dot that Graphviz renders, its
// clusters nested as the lab nests its machines; images through Graphviz; a running lab by name,
// drawn where its VMs run after `lab move`.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/text.h"
#include "schema/lab.h"
#include "tests/e2e/e2e_support.h"
#include "tests/support.h"

using lab::testing::Src;
using namespace lab::testing::e2e;

namespace {

/// Runs a command line through the shell; its exit code and what it printed (stdout and stderr).
std::pair<int, std::string> Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// The clusters of a dot text and the cluster each is written in ("" at the top): read from the
/// text's own braces, so it is the nesting Graphviz draws.
std::map<std::string, std::string> ClusterParents(const std::string& dot) {
  std::map<std::string, std::string> parents;
  std::vector<std::string> open;  // one entry per '{' seen: the cluster's name or "" for others
  std::string token;              // the last quoted string read
  size_t token_from = 0, token_to = 0;  // where it starts (its opening quote) and ends (after its closing one)
  for (size_t i = 0; i < dot.size(); ++i) {
    char c = dot[i];
    if (c == '"') {
      token.clear();
      token_from = i;
      for (++i; i < dot.size() && dot[i] != '"'; ++i) {
        if (dot[i] == '\\' && i + 1 < dot.size()) ++i;
        token += dot[i];
      }
      token_to = i + 1;
    } else if (c == '{') {
      // `subgraph "cluster:NAME" {`: the quoted string just before the brace names it.
      bool adjacent = token_to > 0 && dot.find_first_not_of(' ', token_to) == i;
      bool cluster = adjacent && token.rfind("cluster:", 0) == 0 && token_from >= 9 &&
                     dot.compare(token_from - 9, 9, "subgraph ") == 0;
      std::string name = cluster ? token.substr(8) : "";
      if (cluster) {
        std::string parent;
        for (auto it = open.rbegin(); it != open.rend(); ++it)
          if (!it->empty()) {
            parent = *it;
            break;
          }
        parents[name] = parent;
      }
      open.push_back(name);
    } else if (c == '}') {
      if (!open.empty()) open.pop_back();
    }
  }
  return parents;
}

/// Text as Graphviz writes it in SVG: XML-escaped, and '-' as &#45;.
std::string SvgText(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '-') out += "&#45;";
    else out += c;
  }
  return out;
}

bool HaveDot() { return Shell("command -v dot").first == 0; }

}  // namespace

TEST_CASE("lab graph --format dot of every lab in labs/ renders with Graphviz and nests as the lab does", "[cli]") {
  const bool have_dot = HaveDot();
  if (!have_dot) std::printf("SKIP (in part): Graphviz's dot is not installed; the dot text is checked, not rendered\n");
  std::string tmp = lab::testing::TempDir("lab-graph");
  size_t labs = 0;
  for (const auto& e : std::filesystem::directory_iterator(Src("labs"))) {
    if (e.path().extension() != ".yaml") continue;
    ++labs;
    std::string file = e.path().string();
    INFO(file);
    auto loaded = lab::schema::LoadFile(file);
    REQUIRE(loaded.ok());
    auto [code, dot] = Shell(std::string(LAB_BINARY_DIR) + "/lab --no-color graph --format dot " + file);
    INFO(dot);
    REQUIRE(code == 0);
    // Every machine is a cluster inside its parent's: a nested VM inside its middle VM's.
    auto parents = ClusterParents(dot);
    CHECK(parents.size() == loaded.lab->machines.size());
    for (const auto& m : loaded.lab->machines) {
      INFO(m.name);
      REQUIRE(parents.count(m.name));
      CHECK(parents[m.name] == m.parent);
    }
    if (!have_dot) continue;
    std::string in = tmp + "/" + e.path().stem().string() + ".dot";
    REQUIRE(lab::WriteFileAtomic(in, dot));
    auto [rendered, errors] = Shell("dot -Tsvg " + in + " -o " + in + ".svg");
    INFO(errors);
    CHECK(rendered == 0);
    CHECK(errors.empty());  // no warning either: the text is what dot expects
    auto svg = lab::ReadFile(in + ".svg");
    REQUIRE(svg);
    // Graphviz draws each cluster as a group titled with the cluster's name.
    for (const auto& m : loaded.lab->machines) CHECK(svg->find("<title>cluster:" + SvgText(m.name) + "</title>") != std::string::npos);
  }
  CHECK(labs >= 8);
  std::filesystem::remove_all(tmp);
}

TEST_CASE("lab graph --format svg and png draw with Graphviz, or say how to install it", "[cli]") {
  const std::string lab = std::string(LAB_BINARY_DIR) + "/lab --no-color graph ";
  const std::string file = Src("labs/nested-nat.yaml");
  if (HaveDot()) {
    auto [code, svg] = Shell(lab + "--format svg " + file);
    CHECK(code == 0);
    CHECK(svg.find("<svg") != std::string::npos);
    CHECK(svg.find("cluster:nested1") != std::string::npos);
    auto [pcode, png] = Shell(lab + "--format png " + file);
    CHECK(pcode == 0);
    CHECK(png.rfind("\x89PNG", 0) == 0);
  } else {
    std::printf("SKIP (in part): Graphviz's dot is not installed\n");
  }
  // Without dot on the PATH: one line naming the package.
  auto [code, out] = Shell("PATH=/nonexistent " + lab + "--format svg " + file);
  CHECK(code == 1);
  CHECK(out == "lab graph: --format svg draws the graph with Graphviz's dot, which is not installed; apt-get install "
               "graphviz (or use --format dot and render it elsewhere)\n");
}

TEST_CASE("lab graph LAB draws the running lab as it is placed: a moved VM inside its new host", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = sb.dir + "/graph-move.yaml";
  REQUIRE(lab::WriteFileAtomic(file,
                               "lab: graph-move\n"
                               "networks:\n"
                               "  lan: {subnet: 10.73.0.0/24}\n"
                               "hosts:\n"
                               "  hv1:\n"
                               "    nics: {Ethernet: {network: lan, ip: 10.73.0.11/24}}\n"
                               "    switches: {External: {type: external, nics: [Ethernet]}}\n"
                               "    vms:\n"
                               "      web:\n"
                               "        memory: {startup: 256MiB}\n"
                               "        adapters: [{switch: External, ip: 10.73.0.30/24}]\n"
                               "  hv2:\n"
                               "    nics: {Ethernet: {network: lan, ip: 10.73.0.12/24}}\n"
                               "    switches: {External: {type: external, nics: [Ethernet]}}\n"));
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  Run before = sb.Lab("graph --format dot graph-move");
  INFO(before.out);
  REQUIRE(before.code == 0);
  CHECK(ClusterParents(before.out)["web"] == "hv1");
  CHECK(before.out.find("\"adapter:web/Ethernet\" -> \"switch:hv1/External\"") != std::string::npos);

  Run moved = sb.Lab("move graph-move web --to hv2");
  INFO(moved.out);
  REQUIRE(moved.code == 0);
  Run after = sb.Lab("graph --format dot graph-move");
  INFO(after.out);
  REQUIRE(after.code == 0);
  CHECK(ClusterParents(after.out)["web"] == "hv2");
  CHECK(after.out.find("\"adapter:web/Ethernet\" -> \"switch:hv2/External\"") != std::string::npos);
  // The file still says hv1: drawn from the file, web is where the file puts it.
  Run from_file = sb.Lab("graph --format dot " + file);
  CHECK(ClusterParents(from_file.out)["web"] == "hv1");
  // Status shows the same nesting: web indented under hv2.
  Run status = sb.Lab("status graph-move");
  INFO(status.out);
  size_t hv2 = status.out.find("\nhv2 "), web = status.out.find("\n  web ");
  REQUIRE(hv2 != std::string::npos);
  REQUIRE(web != std::string::npos);
  CHECK(hv2 < web);
  // The tree shows the same nesting.
  Run tree = sb.Lab("graph graph-move");
  INFO(tree.out);
  CHECK(tree.out.find("└─ host hv2\n   ├─ nic Ethernet") != std::string::npos);
  CHECK(tree.out.find("\n   └─ vm web (") != std::string::npos);

  TakeDownLeavingNothing(sb, "graph-move", InitPids(sb, "graph-move"));
}
