// The command line as a user meets it without privileges: validate, plan output, graph, exit codes.
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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
  CHECK(RunLab("graph --format jpeg " + Src("labs/nested-nat.yaml")).first == 2);
}

TEST_CASE("-j/--jobs below 1 or not a number is a usage error naming the flag", "[cli]") {
  for (const std::string& bad : {"-j -5", "-j 0", "--jobs=abc", "-j 2x"}) {
    INFO(bad);
    auto [code, out] = RunLab("up " + bad + " " + Src("labs/nested-nat.yaml"));
    CHECK(code == 2);
    CHECK(out.find("at least 1") != std::string::npos);
  }
  auto [code, out] = RunLab("down -j -1 nested-nat");
  CHECK(code == 2);
  CHECK(out.find("at least 1") != std::string::npos);
}

TEST_CASE("Global flags are accepted after the subcommand and its arguments", "[cli]") {
  auto [code, out] = RunLab("validate " + Src("labs/nested-nat.yaml") + " -q");
  INFO(out);
  CHECK(code == 0);
  CHECK(out.find("is valid") != std::string::npos);
  // --state-dir after the subcommand is the one used: a state there that is not a database is named.
  std::string dir = lab::testing::TempDir("lab-cli-late");
  std::filesystem::create_directory(dir + "/late");
  { std::ofstream(dir + "/late/state.db") << "not a database, long enough to be read as a header by sqlite\n"; }
  auto [pcode, pout] = RunLab("plan " + Src("labs/nested-nat.yaml") + " --state-dir " + dir + "/late");
  INFO(pout);
  CHECK(pcode == 1);
  CHECK(pout.find(dir + "/late/state.db") != std::string::npos);
  std::filesystem::remove_all(dir);
}

namespace {

/// Runs `lab ARGS` on a pseudo-terminal, with `env` (VAR=X ...) set for it and NO_COLOR unset
/// unless it sets it; what it printed.
std::string OnTerminal(const std::string& env, const std::string& args) {
  std::string dir = lab::testing::TempDir("lab-cli-tty");
  std::string cmd = "exec env -u NO_COLOR TERM=xterm " + env + " LAB_STATE_DIR=" + dir + "/state LAB_RUN_DIR=" + dir +
                    "/run " + LAB_BINARY_DIR + "/lab " + args;
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(master, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(master);
  int st = 0;
  ::waitpid(pid, &st, 0);
  std::filesystem::remove_all(dir);
  return out;
}

}  // namespace

TEST_CASE("Colour only on a terminal, and never with NO_COLOR, TERM=dumb or --no-color", "[cli]") {
  const std::string plan = "plan " + Src("labs/nested-nat.yaml");
  const std::string esc = "\033[";
  // The control: on a terminal, the plan has colour.
  CHECK(OnTerminal("", plan).find(esc) != std::string::npos);
  CHECK(OnTerminal("NO_COLOR=", plan).find(esc) != std::string::npos);  // set but empty: no-color.org says ignore it
  std::string no_color = OnTerminal("NO_COLOR=1", plan);
  CHECK(no_color.find("Plan:") != std::string::npos);
  CHECK(no_color.find(esc) == std::string::npos);
  std::string dumb = OnTerminal("TERM=dumb", plan);
  CHECK(dumb.find("Plan:") != std::string::npos);
  CHECK(dumb.find(esc) == std::string::npos);
  CHECK(OnTerminal("", "--no-color " + plan).find(esc) == std::string::npos);
  // Not a terminal: none.
  CHECK(RunLab(plan).second.find(esc) == std::string::npos);
}

namespace {

/// A lab on an AMD host: a middle VM with a nested VM, and a VM with exposed extensions and
/// dynamic memory but nothing inside.
std::string AmdLab(const std::string& compat, const std::string& middle_version) {
  std::string dir = lab::testing::TempDir("lab-cli-amd");
  std::string path = dir + "/amd.yaml";
  std::string text = "lab: amdlab\ncompatibility: " + compat +
                     "\nnetworks:\n  lan: {subnet: 10.70.0.0/24, gateway: 10.70.0.1}\n"
                     "hosts:\n  hv1:\n    processor: {vendor: amd}\n"
                     "    nics:\n      Ethernet: {network: lan, ip: 10.70.0.11/24}\n"
                     "    switches:\n      External: {type: external, nics: [Ethernet]}\n"
                     "    vms:\n      middle:\n        version: \"" + middle_version + "\"\n"
                     "        processor: {expose_virtualization_extensions: true}\n"
                     "        adapters: [{switch: External, ip: 10.70.0.10/24}]\n"
                     "        vms:\n          nested1: {}\n"
                     "      builder:\n        processor: {expose_virtualization_extensions: true}\n"
                     "        memory: {startup: 512MiB, dynamic: true}\n"
                     "        adapters: [{switch: External, ip: 10.70.0.12/24}]\n";
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return path;
}

}  // namespace

TEST_CASE("An AMD host's nesting is refused under v8 with the seeds' sentence, and runs under ws2022 from 10.0",
          "[cli]") {
  std::vector<std::string> made = {AmdLab("v8", "10.0"), AmdLab("ws2022", "9.3"), AmdLab("ws2022", "10.0")};
  auto [v8, v8_out] = RunLab("validate " + made[0]);
  INFO(v8_out);
  CHECK(v8 == 1);
  CHECK(v8_out.find("amd.yaml:15:55: error: VM 'middle': expose_virtualization_extensions needs an Intel processor "
                    "with VT-x and EPT (\"nesting is currently Intel-only\" under compatibility v8)") !=
        std::string::npos);

  auto [old, old_out] = RunLab("validate " + made[1]);
  INFO(old_out);
  CHECK(old == 1);
  CHECK(old_out.find("amd.yaml:14:18: error: VM 'middle': expose_virtualization_extensions on AMD host 'hv1' needs "
                     "configuration version 10.0 or later under compatibility ws2022, and this VM has 9.3") !=
        std::string::npos);
  CHECK(old_out.find("'builder'") == std::string::npos);  // without version: it has ws2022's default, 10.0

  // Dynamic memory on 'builder' (exposed, nothing inside) is allowed, with the seeds' note.
  auto [plan, plan_out] = RunLab("plan " + made[2]);
  INFO(plan_out);
  CHECK(plan == 0);
  CHECK(plan_out.find("VM 'builder': dynamic memory with exposed virtualization extensions works while no "
                      "hypervisor runs inside; once one does, its memory will not fluctuate") != std::string::npos);
  CHECK(plan_out.find("VM 'middle' (on hv1)") != std::string::npos);
  for (const auto& file : made) std::filesystem::remove_all(std::filesystem::path(file).parent_path());
}

namespace {

/// `lab ARGS` as user nobody (65534, no groups) with its state and run dirs under `dir`.
std::pair<int, std::string> RunLabAsNobody(const std::string& dir, const std::string& args) {
  std::string cmd = "setpriv --reuid=65534 --regid=65534 --clear-groups env LAB_STATE_DIR=" + dir +
                    "/state LAB_RUN_DIR=" + dir + "/run " + LAB_BINARY_DIR + "/lab --no-color " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST_CASE("validate, graph, export and plan work as any user; commands that need root say so in one line",
          "[root][cli]") {
  LAB_REQUIRE_ROOT("running lab as another user");
  std::string dir = lab::testing::TempDir("lab-cli-nobody");
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                        std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                        std::filesystem::perms::others_exec);
  const std::string file = Src("labs/nested-nat.yaml");
  // The control: nobody really is someone else here.
  CHECK(RunLabAsNobody(dir, "--version").first == 0);
  REQUIRE(::system(("setpriv --reuid=65534 --regid=65534 --clear-groups touch " + dir + "/x 2>/dev/null").c_str()) != 0);

  for (const std::string& args : {"validate " + file, "graph " + file, "export --format powershell " + file,
                                  "plan " + file, "plan --json " + file}) {
    auto [code, out] = RunLabAsNobody(dir, args);
    INFO(args << "\n" << out);
    CHECK(code == 0);
    CHECK(out.find("unable to open") == std::string::npos);
  }
  CHECK(RunLabAsNobody(dir, "plan " + file).second.find("Plan:") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/state"));  // planning created nothing

  // A state dir it may not enter (root's, 0700): planned as not up, and said so.
  std::filesystem::create_directory(dir + "/state");
  std::filesystem::permissions(dir + "/state", std::filesystem::perms::owner_all);
  auto [pcode, pout] = RunLabAsNobody(dir, "plan " + file);
  INFO(pout);
  CHECK(pcode == 0);
  CHECK(pout.find("cannot read the state in " + dir + "/state") != std::string::npos);

  // A state it may read (0755 dir, root's database in WAL mode, no -shm it could make): read.
  std::filesystem::permissions(dir + "/state", std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                                   std::filesystem::perms::group_exec |
                                                   std::filesystem::perms::others_read |
                                                   std::filesystem::perms::others_exec);
  REQUIRE(::system(("LAB_STATE_DIR=" + dir + "/state " + LAB_BINARY_DIR + "/lab status >/dev/null").c_str()) == 0);
  REQUIRE(std::filesystem::exists(dir + "/state/state.db"));
  auto [rcode, rout] = RunLabAsNobody(dir, "plan " + file);
  INFO(rout);
  CHECK(rcode == 0);
  CHECK(rout.find("Plan:") != std::string::npos);
  CHECK(rout.find("warning") == std::string::npos);

  // Commands that change the machine: one line saying root is needed, nothing tried.
  for (const std::string& verb : {"up " + file, std::string("down nested-nat"), std::string("exec nested-nat middle true"),
                                  std::string("stop nested-nat middle"), std::string("checkpoint nested-nat middle c1")}) {
    auto [code, out] = RunLabAsNobody(dir, verb);
    INFO(verb << "\n" << out);
    CHECK(code == 1);
    CHECK(out.find("needs root (") != std::string::npos);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  }
  auto [ucode, uout] = RunLabAsNobody(dir, "up " + file);
  CHECK(uout == "lab up: needs root (it makes network namespaces, bridges, cgroups and mounts)\n");
  std::filesystem::remove_all(dir);
}
