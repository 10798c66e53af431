// End to end: the real `lab` binary, as a user runs it, on every lab file in labs/.
//
// Each lab is validated, brought up, checked, re-applied ("No changes."), taken down, and then
// the machine is searched for anything of it: processes, mounts (namespace handles, roots),
// cgroups, runtime and disk directories, interfaces or nft tables in the machine's own
// namespace. Root only; traffic stays inside the lab's own namespaces.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::testing::Src;

namespace {

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together
};

/// A private state and run directory, so tests never meet the machine's own labs.
struct Sandbox {
  std::string dir = lab::testing::TempDir("lab-e2e");
  std::string state = dir + "/state";
  std::string run = dir + "/run";

  Run Lab(const std::string& args, const std::string& env = "") const {
    std::string cmd = env + " LAB_STATE_DIR=" + state + " LAB_RUN_DIR=" + run + " " + LAB_BINARY_DIR +
                      "/lab --no-color " + args + " 2>&1";
    Run r;
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    size_t n;
    while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
  }
};

std::vector<int> InitPids(const Sandbox& sb, const std::string& lab) {
  Run st = sb.Lab("status " + lab + " --json");
  std::vector<int> pids;
  auto j = nlohmann::json::parse(st.out, nullptr, false);
  if (j.is_discarded()) return pids;
  for (const auto& m : j["machines"]) pids.push_back(m.value("pid", 0));
  return pids;
}

bool ProcessGone(int pid) {
  // A zombie waiting for its reaper is gone too: it holds no namespace and runs nothing.
  auto stat = lab::ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  auto close = stat->rfind(')');
  return close != std::string::npos && stat->size() > close + 2 && (*stat)[close + 2] == 'Z';
}

/// Everything of the lab that could be left on the machine, one line per object.
std::vector<std::string> Leftovers(const Sandbox& sb, const std::vector<int>& pids) {
  std::vector<std::string> left;
  for (int pid : pids)
    if (pid > 0 && !ProcessGone(pid)) left.push_back("process " + std::to_string(pid));
  auto mounts = lab::ReadFile("/proc/self/mountinfo").value_or("");
  for (const auto& line : lab::Split(mounts, '\n')) {
    auto fields = lab::Split(line, ' ');
    if (fields.size() < 5) continue;
    const std::string& where = fields[4];
    for (const auto& dir : {sb.run, sb.state})
      if (where == dir || where.rfind(dir + "/", 0) == 0) left.push_back("mount " + where);
  }
  for (const auto& [ctrl, root] : lab::hv::kernel::Cgroups().v1) {
    std::error_code ec;
    if (fs::exists(root + "/lab", ec))
      for (const auto& e : fs::directory_iterator(root + "/lab", ec))
        if (e.is_directory()) left.push_back("cgroup " + e.path().string());
  }
  if (lab::hv::kernel::Cgroups().v2) {
    std::error_code ec;
    std::string root = lab::hv::kernel::Cgroups().v2_root + "/lab";
    if (fs::exists(root, ec))
      for (const auto& e : fs::directory_iterator(root, ec))
        if (e.is_directory()) left.push_back("cgroup " + e.path().string());
  }
  for (const std::string& d : {sb.run, sb.state + "/disks"}) {
    std::error_code ec;
    if (fs::exists(d, ec))
      for (const auto& e : fs::directory_iterator(d, ec)) left.push_back("file " + e.path().string());
  }
  // The machine's own namespace: no interface or nft table of any lab may ever be here.
  auto self = lab::hv::kernel::NetNs::Open("/proc/self/ns/net");
  REQUIRE(self.ok());
  auto nl = lab::hv::kernel::Netlink::In(*self);
  REQUIRE(nl.ok());
  auto links = nl->Links();
  REQUIRE(links.ok());
  for (const auto& l : *links)
    for (const auto& alt : l.altnames)
      if (alt.rfind("lab.", 0) == 0) left.push_back("link " + l.name + " (" + alt + ")");
  auto tables = lab::hv::kernel::NftListTables(*self);
  if (tables.ok())
    for (const auto& t : *tables)
      if (t.find("lab_") != std::string::npos) left.push_back("nft table " + t);
  return left;
}

std::string LabNameOf(const std::string& file) {
  auto text = lab::ReadFile(file).value_or("");
  std::smatch m;
  std::regex re("(^|\n)lab:\\s*([a-z0-9-]+)");
  return std::regex_search(text, m, re) ? m[2].str() : "";
}

}  // namespace

TEST_CASE("Every lab in labs/ comes up, passes its checks, re-applies as a no-op and leaves nothing when taken down",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(Src("labs")))
    if (e.path().extension() == ".yaml") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 2);
  for (const auto& file : files) {
    DYNAMIC_SECTION(fs::path(file).filename().string()) {
      Sandbox sb;
      std::string name = LabNameOf(file);
      REQUIRE_FALSE(name.empty());
      Run v = sb.Lab("validate " + file);
      INFO(v.out);
      REQUIRE(v.code == 0);

      Run up = sb.Lab("up " + file);
      INFO(up.out);
      REQUIRE(up.code == 0);
      CHECK(up.out.find("Apply complete") != std::string::npos);
      auto pids = InitPids(sb, name);
      CHECK(pids.size() >= 2);

      Run check = sb.Lab("check " + name);
      INFO(check.out);
      CHECK(check.code == 0);
      CHECK(check.out.find(" 0 failed") != std::string::npos);

      Run again = sb.Lab("up " + file);
      INFO(again.out);
      CHECK(again.code == 0);
      CHECK(again.out.find("No changes.") != std::string::npos);

      Run status = sb.Lab("status " + name);
      INFO(status.out);
      CHECK(status.code == 0);
      CHECK(status.out.find("no drift") != std::string::npos);

      Run down = sb.Lab("down " + name);
      INFO(down.out);
      CHECK(down.code == 0);
      auto left = Leftovers(sb, pids);
      INFO(lab::Join(left, "\n"));
      CHECK(left.empty());
      fs::remove_all(sb.dir);
    }
  }
}

TEST_CASE("lab exec shows the DNS servers of the lab file inside a nested VM and passes exit codes through",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  Run cat = sb.Lab("exec nested-nat nested1 -- cat /etc/resolv.conf");
  CHECK(cat.code == 0);
  CHECK(cat.out.find("nameserver 10.10.0.1") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat nested1 -- sh -c 'exit 7'").code == 7);
  Run host = sb.Lab("exec nested-nat nested1 -- cat /etc/hostname");
  CHECK(host.out.find("nested1") != std::string::npos);
  Run missing = sb.Lab("exec nested-nat nosuchvm -- true");
  CHECK(missing.code == 1);
  CHECK(missing.out.find("no machine 'nosuchvm'") != std::string::npos);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  CHECK(Leftovers(sb, pids).empty());
  fs::remove_all(sb.dir);
}

TEST_CASE("A failure in the middle of up is continued by the next up, and down after a failure leaves nothing",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = Src("labs/nested-nat.yaml");

  Run failed = sb.Lab("up " + file, "LAB_INJECT_FAILURE=adapter/nested1/Ethernet");
  INFO(failed.out);
  REQUIRE(failed.code == 1);
  CHECK(failed.out.find("injected failure") != std::string::npos);
  CHECK(failed.out.find("run the same command again to continue") != std::string::npos);

  // The next up does only what is missing: the failed adapter and what waits on it.
  Run plan = sb.Lab("plan " + file);
  INFO(plan.out);
  CHECK(plan.out.find("adapter 'Ethernet' of VM 'nested1'") != std::string::npos);
  CHECK(plan.out.find("VM 'middle'") == std::string::npos);
  CHECK(plan.out.find("Plan: 17 to add") == std::string::npos);

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(sb.Lab("check nested-nat").code == 0);
  auto pids = InitPids(sb, "nested-nat");

  // Fail again on the way down of a fresh attempt: the partial teardown is continued too.
  Run down_failed = sb.Lab("down nested-nat", "LAB_INJECT_FAILURE=partition/middle");
  INFO(down_failed.out);
  CHECK(down_failed.code == 1);
  Run down = sb.Lab("down nested-nat");
  INFO(down.out);
  CHECK(down.code == 0);
  auto left = Leftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());

  // A failed up followed directly by down leaves nothing either.
  REQUIRE(sb.Lab("up " + file, "LAB_INJECT_FAILURE=nat/middle/LocalNAT").code == 1);
  pids = InitPids(sb, "nested-nat");
  CHECK(sb.Lab("down " + file).code == 0);
  left = Leftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  fs::remove_all(sb.dir);
}

TEST_CASE("A lab file with mistakes is refused before anything is made", "[root][e2e]") {
  LAB_REQUIRE_ROOT("running lab up");
  Sandbox sb;
  std::string bad = sb.dir + "/bad.yaml";
  lab::WriteFileAtomic(bad, "lab: bad\nhosts:\n  hv1:\n    vms:\n      a: {memory: {startup: lots}}\n");
  Run up = sb.Lab("up " + bad);
  INFO(up.out);
  CHECK(up.code == 1);
  CHECK(up.out.find("bad.yaml:5:") != std::string::npos);
  CHECK_FALSE(fs::exists(sb.run));
  CHECK(Leftovers(sb, {}).empty());
  fs::remove_all(sb.dir);
}
