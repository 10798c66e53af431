// The command line as a user meets it without privileges: validate, plan output, graph, exit codes.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "tests/support.h"

using lab::testing::Src;

namespace {

std::pair<int, std::string> RunLab(const std::string& args) {
  std::string dir = lab::testing::TempDir("lab-cli");
  std::string cmd = "LAB_STATE_DIR=" + dir + "/state LAB_RUN_DIR=" + dir + "/run " + LAB_BINARY_DIR +
                    "/lab --no-color " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  std::string rm = "rm -rf " + dir;
  (void)::system(rm.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST_CASE("lab validate accepts every lab file and reports each mistake of a bad one with its position", "[cli]") {
  auto [ok, out] = RunLab("validate " + Src("labs/nested-nat.yaml") + " " + Src("labs/two-hosts.yaml"));
  INFO(out);
  CHECK(ok == 0);
  CHECK(out.find("lab 'nested-nat' is valid") != std::string::npos);

  auto [bad, errs] = RunLab("validate " + Src("tests/schema/golden/many-mistakes.yaml"));
  INFO(errs);
  CHECK(bad == 1);
  size_t lines = 0;
  for (size_t pos = 0; (pos = errs.find(": error: ", pos)) != std::string::npos; ++pos) ++lines;
  CHECK(lines >= 5);
  CHECK(errs.find("many-mistakes.yaml:") != std::string::npos);
}

TEST_CASE("lab plan of a new lab lists every object and ends with the summary line", "[cli]") {
  auto [code, out] = RunLab("plan " + Src("labs/nested-nat.yaml"));
  INFO(out);
  CHECK(code == 0);
  CHECK(out.find("+    VM 'middle' (on hv1)") != std::string::npos);
  CHECK(out.find("NAT 'LocalNAT' 192.168.100.0/24 on 'middle'") != std::string::npos);
  CHECK(out.find("Plan: 17 to add, 0 to change, 0 to destroy.") != std::string::npos);
}

TEST_CASE("lab plan --json is machine readable", "[cli]") {
  auto [code, out] = RunLab("plan --json " + Src("labs/nested-nat.yaml"));
  CHECK(code == 0);
  CHECK(out.find("\"summary\": \"Plan: 17 to add, 0 to change, 0 to destroy.\"") != std::string::npos);
}

TEST_CASE("lab graph draws the topology as a tree, dot and mermaid", "[cli]") {
  auto [c1, tree] = RunLab("graph " + Src("labs/nested-nat.yaml"));
  CHECK(c1 == 0);
  CHECK(tree.find("nested1") != std::string::npos);
  auto [c2, dot] = RunLab("graph --format dot " + Src("labs/nested-nat.yaml"));
  CHECK(c2 == 0);
  CHECK(dot.rfind("digraph", 0) == 0);
  auto [c3, mm] = RunLab("graph --format mermaid " + Src("labs/nested-nat.yaml"));
  CHECK(c3 == 0);
  CHECK(mm.rfind("graph LR", 0) == 0);
}

TEST_CASE("Usage errors exit 2", "[cli]") {
  CHECK(RunLab("").first == 2);
  CHECK(RunLab("frobnicate").first == 2);
  CHECK(RunLab("graph --format png " + Src("labs/nested-nat.yaml")).first == 2);
}
