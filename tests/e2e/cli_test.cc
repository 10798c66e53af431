// The command line as a user meets it without privileges: validate, plan output, graph, exit codes.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>

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

TEST_CASE("lab validate prints the rules' notes and check-target doubts as warnings, and exits 0 for warnings only",
          "[cli]") {
  auto [code, out] = RunLab("validate " + Src("labs/nested-mac-spoofing.yaml"));
  INFO(out);
  CHECK(code == 0);
  // The MAC spoofing note of `lab plan`, at n2's adapter (whose frames middle's Ethernet2 drops).
  CHECK(out.find("labs/nested-mac-spoofing.yaml:53:17: warning: VM 'n2' adapter 'Ethernet': frames of nested VMs "
                 "will be dropped") != std::string::npos);
  CHECK(out.find("[mac-spoofing-for-nested-traffic]") != std::string::npos);
  CHECK(out.find("lab 'nested-mac-spoofing' is valid: 1 host, 4 VMs, 1 network, 8 checks, 1 warning") !=
        std::string::npos);

  auto [code2, out2] = RunLab("validate " + Src("tests/schema/golden/check-targets.yaml"));
  INFO(out2);
  CHECK(code2 == 0);
  CHECK(out2.find("check-targets.yaml:28:23: warning: check 7: ping target 'web1'") != std::string::npos);
  CHECK(out2.find(": error: ") == std::string::npos);
  CHECK(out2.find("is valid") != std::string::npos);
}

TEST_CASE("lab validate refuses overlapping subnets, naming both places", "[cli]") {
  // The issue's reproductions: two networks 10.9.0.0/24 and 10.9.0.0/23, and an internal switch
  // in the same subnet as its owner's own adapter.
  auto [code, out] = RunLab("validate " + Src("tests/schema/golden/overlaps.yaml"));
  INFO(out);
  CHECK(code == 1);
  CHECK(out.find("overlaps.yaml:11:13: error: network 'wide': subnet 10.9.0.0/23 overlaps network 'lan' "
                 "(10.9.0.0/24) at 8:13") != std::string::npos);
  CHECK(out.find("overlaps.yaml:59:42: error: VM 'deep': subnet 192.168.5.0/25 of switch 'Loop'") != std::string::npos);
  CHECK(out.find("is valid") == std::string::npos);
}

TEST_CASE("lab validate of a file it cannot read names the file without a position", "[cli]") {
  std::string dir = lab::testing::TempDir("lab-cli-missing");
  auto [code, out] = RunLab("validate " + dir + "/missing.yaml " + Src("labs/nested-nat.yaml"));
  INFO(out);
  CHECK(code == 1);
  CHECK(out.find(dir + "/missing.yaml: error: cannot read the lab file: No such file or directory") !=
        std::string::npos);
  CHECK(out.find(":0:0") == std::string::npos);
  CHECK(out.find("lab 'nested-nat' is valid") != std::string::npos);  // the next file is still checked
  auto [dir_code, dir_out] = RunLab("validate " + dir);
  INFO(dir_out);
  CHECK(dir_code == 1);
  CHECK(dir_out.rfind(dir + ": error: cannot read the lab file: ", 0) == 0);
  std::filesystem::remove_all(dir);
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
