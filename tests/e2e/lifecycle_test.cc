// The lifecycle of one VM, through the real binary: save/resume, stop/start, checkpoint/restore.
#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <filesystem>
#include <fstream>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;

TEST_CASE("A VM is saved and resumed, stopped and started with its disk, and restored to a checkpoint",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo before > /root/kept'").code == 0);
  Run cp = sb.Lab("checkpoint nested-nat middle c1");
  INFO(cp.out);
  REQUIRE(cp.code == 0);
  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo after > /root/later'").code == 0);

  // Save: frozen; the VMs inside with it; exec is refused instead of hanging.
  REQUIRE(sb.Lab("save nested-nat middle").code == 0);
  Run st = sb.Lab("status nested-nat");
  CHECK(st.out.find("saved") != std::string::npos);
  Run frozen = sb.Lab("exec nested-nat middle -- true");
  CHECK(frozen.code == 1);
  CHECK(frozen.out.find("is saved; resume it first") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 1);
  REQUIRE(sb.Lab("resume nested-nat middle").code == 0);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Stop takes the nested VMs down with it; start brings all of them back, disk kept.
  Run stop = sb.Lab("stop nested-nat middle");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  CHECK(stop.out.find("stop VM 'nested1'") < stop.out.find("stop VM 'middle'"));
  CHECK(sb.Lab("status nested-nat").out.find("off") != std::string::npos);
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/later").out.find("after") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Restore: what was written after the checkpoint is gone, what was before is there.
  Run restore = sb.Lab("restore nested-nat middle c1");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/kept").out.find("before") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat middle -- test -e /root/later").code == 1);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Hosts are physical machines; unknown machines are named.
  CHECK(sb.Lab("stop nested-nat hv1").out.find("is a host") != std::string::npos);
  CHECK(sb.Lab("stop nested-nat nosuch").code == 1);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}

TEST_CASE("A VM started while its last run's switch port lingers takes the port back only when it carries the adapter's mark",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  namespace k = lab::hv::kernel;
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  auto uid = [&] {
    auto status = nlohmann::json::parse(sb.Lab("status nested-nat --json").out, nullptr, false);
    REQUIRE_FALSE(status.is_discarded());
    return status.value("uid", std::string());
  };
  // middle's adapter is the one port of hv1's switch that is not the host's own NIC.
  Run brif = sb.Lab("exec nested-nat hv1 -- ls /sys/class/net/External/brif");
  REQUIRE(brif.code == 0);
  std::string port;
  for (const auto& p : lab::Split(lab::Trim(brif.out), '\n'))
    if (p != "Ethernet") port = p;
  REQUIRE(!port.empty());

  auto host_ns = k::NetNs::Open(k::NsPath(MachineRun(sb, "nested-nat", "hv1"), "net"));
  REQUIRE(host_ns.ok());
  auto nl = k::Netlink::In(*host_ns);
  REQUIRE(nl.ok());
  // The kernel frees a stopped VM's namespace in the background, so its port may outlive it a
  // moment; here it stays, made by hand, as long as the test wants.
  auto stop_and_plant = [&](const std::optional<std::string>& mark) {
    REQUIRE(sb.Lab("stop nested-nat middle").code == 0);
    for (int i = 0; i < 200 && (*nl->FindLink(port)).has_value(); ++i) ::usleep(10000);
    REQUIRE_FALSE((*nl->FindLink(port)).has_value());
    REQUIRE(nl->CreateVeth(port, nullptr, "lingering", nullptr).ok());
    if (mark) REQUIRE(nl->AddAltName(port, *mark).ok());
  };

  // Not marked: not ours, so left alone, and the start says why it cannot go on.
  stop_and_plant(std::nullopt);
  Run refused = sb.Lab("start nested-nat middle");
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("Object exists") != std::string::npos);
  CHECK((*nl->FindLink(port)).has_value());
  REQUIRE(nl->DeleteLink(port).ok());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  REQUIRE(sb.Lab("up " + file).code == 0);
  host_ns = k::NetNs::Open(k::NsPath(MachineRun(sb, "nested-nat", "hv1"), "net"));
  REQUIRE(host_ns.ok());
  nl = k::Netlink::In(*host_ns);
  REQUIRE(nl.ok());
  auto later = InitPids(sb, "nested-nat");
  pids.insert(pids.end(), later.begin(), later.end());

  // Marked as this very adapter's port: the leftover of its last run, taken back.
  stop_and_plant("lab." + uid() + ".port.middle.Ethernet");
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK((*nl->FindLink("lingering")) == std::nullopt);
  CHECK(sb.Lab("check nested-nat").code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}

namespace {

/// Ports of `host`'s switch 'External': the host's NIC and one per VM adapter on it.
size_t PortsOf(const Sandbox& sb, const std::string& host) {
  Run r = sb.Lab("exec two-hosts " + host + " -- ls /sys/class/net/External/brif");
  INFO(r.out);
  REQUIRE(r.code == 0);
  return lab::Split(lab::Trim(r.out), '\n').size();
}

std::string ParentOf(const Sandbox& sb, const std::string& machine, std::string* state) {
  auto j = nlohmann::json::parse(sb.Lab("status two-hosts --json").out, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  for (const auto& m : j["machines"])
    if (m.value("name", "") == machine) {
      *state = m.value("state", "");
      return m.value("parent", "");
    }
  FAIL("no machine " << machine);
  return "";
}

}  // namespace

TEST_CASE("A VM moves to another host with its disk, its adapter re-plumbed; not while a hypervisor runs in it",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  // two-hosts with a plain VM 'web' on hv1's external switch, reachable by name from n11.
  auto text = lab::ReadFile(lab::testing::Src("labs/two-hosts.yaml"));
  REQUIRE(text);
  text->replace(text->find("  hv2:\n"), 0,
                "      web:\n        memory: {startup: 256MiB}\n        adapters:\n"
                "          - {switch: External, ip: 10.20.0.30/24, gateway: 10.20.0.1, dns: [10.20.0.1]}\n");
  text->replace(text->find("checks:\n") + 8, 0,
                "  - {from: web, http: \"http://www.example.test/\", expect_source: 10.20.0.30}\n"
                "  - {from: n11, ping: web}\n");
  std::string file = sb.dir + "/two-hosts.yaml";
  REQUIRE(lab::WriteFileAtomic(file, *text));
  REQUIRE(sb.Lab("up " + file).code == 0);
  REQUIRE(sb.Lab("exec two-hosts web -- sh -c 'echo kept > /root/f'").code == 0);
  CHECK(PortsOf(sb, "hv1") == 3);  // Ethernet, mid1, web
  CHECK(PortsOf(sb, "hv2") == 2);  // Ethernet, mid2
  std::string state;

  // mid1 runs n11 and n12: no live migration while a hypervisor runs in it.
  Run refused = sb.Lab("move two-hosts mid1 --to hv2");
  CHECK(refused.code == 1);
  CHECK(refused.out.find("cannot be live-migrated while a hypervisor runs inside it") != std::string::npos);
  CHECK(ParentOf(sb, "mid1", &state) == "hv1");
  CHECK(state == "running");
  CHECK(sb.Lab("move two-hosts n11 --to hv2").out.find("moves with it; move 'mid1' instead") != std::string::npos);
  CHECK(sb.Lab("move two-hosts web --to nosuch").code == 1);

  // web runs no hypervisor: it moves, with its disk; its adapter is now a port of hv2's switch.
  Run moved = sb.Lab("move two-hosts web --to hv2");
  INFO(moved.out);
  REQUIRE(moved.code == 0);
  CHECK(ParentOf(sb, "web", &state) == "hv2");
  CHECK(state == "running");
  CHECK(sb.Lab("exec two-hosts web -- cat /root/f").out.find("kept") != std::string::npos);
  CHECK(PortsOf(sb, "hv1") == 2);
  CHECK(PortsOf(sb, "hv2") == 3);
  Run check = sb.Lab("check two-hosts");
  INFO(check.out);
  CHECK(check.code == 0);
  // The move holds: up keeps web where it was moved.
  CHECK(sb.Lab("up " + file).out.find("No changes.") != std::string::npos);

  // Stopped, mid1 moves with its nested VMs and stays off until started on hv2.
  REQUIRE(sb.Lab("stop two-hosts mid1").code == 0);
  REQUIRE(sb.Lab("move two-hosts mid1 --to hv2").code == 0);
  CHECK(ParentOf(sb, "mid1", &state) == "hv2");
  CHECK(state == "off");
  REQUIRE(sb.Lab("start two-hosts mid1").code == 0);
  CHECK(ParentOf(sb, "n11", &state) == "mid1");
  CHECK(state == "running");
  CHECK(PortsOf(sb, "hv1") == 1);
  CHECK(PortsOf(sb, "hv2") == 4);
  check = sb.Lab("check two-hosts");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "two-hosts");
  REQUIRE(sb.Lab("down two-hosts").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}

TEST_CASE("lab down takes down a lab with saved VMs, a nested one saved inside a running one", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + lab::testing::Src("labs/nested-nat.yaml")).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  // nested1's cgroup is frozen by itself, below middle's, which is not: thawing middle alone
  // would leave it frozen, and a frozen process does not die of SIGKILL.
  REQUIRE(sb.Lab("save nested-nat nested1").code == 0);
  REQUIRE(sb.Lab("status nested-nat").out.find("saved") != std::string::npos);
  lab::testing::e2e::TakeDownLeavingNothing(sb, "nested-nat", pids);
}

namespace {

/// A copy of labs/nested-nat.yaml at `path` (with `edit` applied: from -> to, each found once).
std::string WriteNestedNat(const std::string& path, const std::vector<std::pair<std::string, std::string>>& edit = {}) {
  auto text = lab::ReadFile(lab::testing::Src("labs/nested-nat.yaml"));
  REQUIRE(text);
  for (const auto& [from, to] : edit) {
    auto at = text->find(from);
    REQUIRE(at != std::string::npos);
    text->replace(at, from.size(), to);
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  REQUIRE(lab::WriteFileAtomic(path, *text));
  return path;
}

/// `lab status LAB --json`, parsed (warnings on stderr come before the JSON).
nlohmann::json StatusJson(const Sandbox& sb, const std::string& lab) {
  Run st = sb.Lab("status " + lab + " --json");
  auto brace = st.out.find('{');
  REQUIRE(brace != std::string::npos);
  auto j = nlohmann::json::parse(st.out.substr(brace), nullptr, false);
  INFO(st.out);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

/// machine -> state ("running", "off", "saved") from `lab status`.
std::map<std::string, std::string> States(const Sandbox& sb, const std::string& lab) {
  std::map<std::string, std::string> out;
  const nlohmann::json status = StatusJson(sb, lab);
  for (const auto& m : status["machines"]) out[m.value("name", "")] = m.value("state", "");
  return out;
}

}  // namespace

TEST_CASE("A lifecycle verb that cannot go through changes nothing, loses no VM and names the command to run first",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  // An unknown checkpoint: refused before the VM, or the VMs inside it, are stopped.
  REQUIRE(sb.Lab("checkpoint nested-nat middle c1").code == 0);
  Run restore = sb.Lab("restore nested-nat middle nosuch");
  INFO(restore.out);
  CHECK(restore.code == 1);
  CHECK(restore.out.find("VM 'middle' has no checkpoint 'nosuch' (it has: c1)") != std::string::npos);
  auto states = States(sb, "nested-nat");
  CHECK(states["middle"] == "running");
  CHECK(states["nested1"] == "running");
  CHECK(states["nested2"] == "running");
  CHECK(InitPids(sb, "nested-nat") == pids);  // not even restarted
  CHECK(sb.Lab("check nested-nat").code == 0);

  // A nested VM whose parent is off: refused, and it stays a machine of the lab.
  REQUIRE(sb.Lab("stop nested-nat middle").code == 0);
  Run start = sb.Lab("start nested-nat nested1");
  INFO(start.out);
  CHECK(start.code == 1);
  CHECK(start.out.find("VM 'nested1': its parent 'middle' is off; run `lab start nested-nat middle` first") !=
        std::string::npos);
  Run exec = sb.Lab("exec nested-nat nested1 -- true");
  CHECK(exec.code == 1);
  CHECK(exec.out.find("VM 'nested1' is off: 'middle', which it runs in, is off; start that first: lab start nested-nat middle") !=
        std::string::npos);
  Run status = sb.Lab("status nested-nat");
  INFO(status.out);
  CHECK(status.code == 0);  // off as the user set it: no drift
  CHECK(status.out.find("no drift") != std::string::npos);
  states = States(sb, "nested-nat");
  CHECK(states["nested1"] == "off");
  CHECK(states["middle"] == "off");

  // Its parent started, it runs again with it; nothing was lost on the way.
  Run started = sb.Lab("start nested-nat middle");
  INFO(started.out);
  REQUIRE(started.code == 0);
  states = States(sb, "nested-nat");
  CHECK(states["nested1"] == "running");
  CHECK(states["nested2"] == "running");
  Run check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("A VM the user stopped stays off when its parent restarts and on lab up, which says so", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  REQUIRE(sb.Lab("stop nested-nat nested1").code == 0);
  // middle stopped and started by the user: nested2 comes back with it, nested1 does not.
  REQUIRE(sb.Lab("stop nested-nat middle").code == 0);
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  auto states = States(sb, "nested-nat");
  CHECK(states["middle"] == "running");
  CHECK(states["nested2"] == "running");
  CHECK(states["nested1"] == "off");

  // lab up leaves it off and says so.
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("VM 'nested1' is off (lab stop); lab start nested-nat nested1 to run it") != std::string::npos);
  CHECK(up.out.find("No changes.") != std::string::npos);
  CHECK(States(sb, "nested-nat")["nested1"] == "off");

  // middle restarted by a plan (memory of a VM running a hypervisor needs it off): still off.
  WriteNestedNat(file, {{"startup: 2GiB", "startup: 3GiB"}});
  up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("-/+  restart VM 'middle'") != std::string::npos);
  states = States(sb, "nested-nat");
  CHECK(states["middle"] == "running");
  CHECK(states["nested2"] == "running");
  CHECK(states["nested1"] == "off");

  Run run = sb.Lab("start nested-nat nested1");
  INFO(run.out);
  REQUIRE(run.code == 0);
  CHECK(States(sb, "nested-nat")["nested1"] == "running");
  Run check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("Restoring a middle VM's checkpoint puts its nested VMs' disks back with it", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  REQUIRE(sb.Lab("exec nested-nat nested1 -- sh -c 'echo before > /root/kept'").code == 0);
  Run cp = sb.Lab("checkpoint nested-nat middle c1");
  INFO(cp.out);
  REQUIRE(cp.code == 0);
  REQUIRE(sb.Lab("exec nested-nat nested1 -- sh -c 'echo after > /root/later; echo after > /root/kept'").code == 0);
  Run restore = sb.Lab("restore nested-nat middle c1");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(sb.Lab("exec nested-nat nested1 -- cat /root/kept").out.find("before") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat nested1 -- test -e /root/later").code == 1);
  Run check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("A change that needs a saved VM off is a step that removes its saved state, never in place", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("save nested-nat nested1").code == 0);

  // Memory (resize-saved-vm), and expose_virtualization_extensions.
  for (const auto& edit : std::vector<std::pair<std::string, std::string>>{
           {"nested1:\n            memory: {startup: 512MiB}", "nested1:\n            memory: {startup: 1GiB}"},
           {"nested1:\n            memory: {startup: 512MiB}",
            "nested1:\n            memory: {startup: 512MiB}\n            processor: {expose_virtualization_extensions: true}"}}) {
    std::string changed = WriteNestedNat(sb.dir + "/changed.yaml", {edit});
    Run plan = sb.Lab("plan " + changed);
    INFO(plan.out);
    REQUIRE(plan.code == 0);
    CHECK(plan.out.find("-/+  restart VM 'nested1'") != std::string::npos);
    CHECK(plan.out.find("saved state removed: Remove-VMSavedState") != std::string::npos);
    CHECK(plan.out.find("in place, the VM keeps running") == std::string::npos);
  }
  CHECK(States(sb, "nested-nat")["nested1"] == "saved");  // plan changed nothing

  // Applied: the saved state goes, the VM runs with its new memory.
  WriteNestedNat(file, {{"nested1:\n            memory: {startup: 512MiB}", "nested1:\n            memory: {startup: 1GiB}"}});
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(States(sb, "nested-nat")["nested1"] == "running");
  Run check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("The lab file is recorded by its absolute path, and verbs by lab name work from the records when it moves",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  const std::string labs = sb.dir + "/labs";
  WriteNestedNat(labs + "/nat.yaml");
  Run up = sb.Lab("up nat.yaml", "cd " + labs + " &&");
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "nested-nat");
  CHECK(StatusJson(sb, "nested-nat").value("file", "") == labs + "/nat.yaml");
  Run check = sb.Lab("check nested-nat", "cd / &&");
  INFO(check.out);
  CHECK(check.code == 0);

  // The file moved: check, status and the lifecycle verbs go on from the records, warning.
  std::filesystem::rename(labs + "/nat.yaml", labs + "/moved.yaml");
  const std::string gone = "warning: the lab file " + labs + "/nat.yaml is gone";
  check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find(gone) != std::string::npos);
  Run stop = sb.Lab("stop nested-nat middle");
  INFO(stop.out);
  CHECK(stop.code == 0);
  CHECK(stop.out.find(gone) != std::string::npos);
  Run status = sb.Lab("status nested-nat");
  INFO(status.out);
  CHECK(status.out.find(gone) != std::string::npos);
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  CHECK(start.code == 0);
  CHECK(sb.Lab("exec nested-nat nested1 -- true").code == 0);

  // A file there that no longer parses: the same, with another warning.
  REQUIRE(lab::WriteFileAtomic(labs + "/nat.yaml", "lab: nested-nat\nhosts: [\n"));
  check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find("no longer loads") != std::string::npos);
  CHECK(sb.Lab("save nested-nat nested2").code == 0);
  CHECK(sb.Lab("resume nested-nat nested2").code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("lab up of another file naming a lab that is up is refused, naming the file it is up from, unless --force",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string first = WriteNestedNat(sb.dir + "/a/nested-nat.yaml");
  // Another file with the same `lab:` name and less in it: applied, it would remove nested2.
  std::string second = WriteNestedNat(sb.dir + "/b/nested-nat.yaml",
                                      {{"          nested2:\n            memory: {startup: 512MiB}\n            adapters:\n"
                                        "              - {switch: VmNAT, ip: 192.168.100.3/24, gateway: 192.168.100.1,\n"
                                        "                 dns: [10.10.0.1]}\n",
                                        ""},
                                       {"  - {from: nested1, ping: 192.168.100.3}                                          # nested2, same switch\n",
                                        ""}});
  REQUIRE(sb.Lab("up " + first).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  Run refused = sb.Lab("up " + second);
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("lab 'nested-nat' is up from another file, " + first) != std::string::npos);
  CHECK(refused.out.find("--force") != std::string::npos);
  CHECK(InitPids(sb, "nested-nat") == pids);  // nothing changed
  CHECK(StatusJson(sb, "nested-nat").value("file", "") == first);
  // The same file by a relative path is the same lab.
  Run same = sb.Lab("up nested-nat.yaml", "cd " + sb.dir + "/a &&");
  INFO(same.out);
  CHECK(same.code == 0);
  CHECK(same.out.find("No changes.") != std::string::npos);

  Run forced = sb.Lab("up " + second + " --force");
  INFO(forced.out);
  REQUIRE(forced.code == 0);
  CHECK(StatusJson(sb, "nested-nat").value("file", "") == second);
  CHECK(States(sb, "nested-nat").count("nested2") == 0);

  TakeDownLeavingNothing(sb, "nested-nat", pids);
}

TEST_CASE("A start that fails part way loses no VM, and the same start run again finishes it", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("stop nested-nat middle").code == 0);

  // nested1 cannot be made this time (as a kernel refusal would): it stays a machine of the lab.
  Run failed = sb.Lab("start nested-nat middle", "LAB_INJECT_FAILURE=+partition/nested1");
  INFO(failed.out);
  CHECK(failed.code == 1);
  auto states = States(sb, "nested-nat");
  CHECK(states["middle"] == "running");
  CHECK(states["nested2"] == "running");
  REQUIRE(states.count("nested1"));
  CHECK(states["nested1"] == "off");
  Run exec = sb.Lab("exec nested-nat nested1 -- true");
  CHECK(exec.out.find("VM 'nested1' is off; start it first") != std::string::npos);
  Run status = sb.Lab("status nested-nat");
  INFO(status.out);
  CHECK(status.out.find("partition/nested1: not running") != std::string::npos);  // drift, not silence

  Run again = sb.Lab("start nested-nat middle");
  INFO(again.out);
  REQUIRE(again.code == 0);
  CHECK(States(sb, "nested-nat")["nested1"] == "running");
  Run check = sb.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}

TEST_CASE("A checkpoint without a name gets Hyper-V's default name; checkpoints are listed and removed by name",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  InitPids(sb, "nested-nat");

  // No name: "middle - (MM/DD/YYYY - HH:MM:SS)", as Hyper-V names them.
  Run made = sb.Lab("checkpoint nested-nat middle");
  INFO(made.out);
  REQUIRE(made.code == 0);
  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'head -c 200000 /dev/zero > /root/big'").code == 0);
  Run spaced = sb.Lab("checkpoint nested-nat middle 'before upgrade'");
  INFO(spaced.out);
  REQUIRE(spaced.code == 0);

  Run list = sb.Lab("checkpoints nested-nat middle --json");
  INFO(list.out);
  REQUIRE(list.code == 0);
  auto all = nlohmann::json::parse(list.out);
  REQUIRE(all.size() == 2);
  const std::string dflt = all[0]["name"];
  CHECK(std::regex_match(dflt, std::regex(R"(middle - \(\d\d/\d\d/\d{4} - \d\d:\d\d:\d\d\))")));
  CHECK(all[1]["name"] == "before upgrade");
  CHECK(all[1]["bytes"].get<uint64_t>() >= all[0]["bytes"].get<uint64_t>() + 200000);
  CHECK(all[0]["taken"].get<int64_t>() > 0);
  Run text = sb.Lab("checkpoints nested-nat middle");
  CHECK(text.out.find("NAME") != std::string::npos);
  CHECK(text.out.find("before upgrade") != std::string::npos);
  CHECK(text.out.find(dflt) != std::string::npos);

  // Status shows them: a line per VM that has some, and each VM's list in --json.
  Run status = sb.Lab("status nested-nat");
  CHECK(status.out.find("checkpoints of middle: " + dflt + ", before upgrade") != std::string::npos);
  auto sj = nlohmann::json::parse(sb.Lab("status nested-nat --json").out);
  for (const auto& m : sj["machines"])
    if (m["name"] == "middle") CHECK(m["checkpoints"] == nlohmann::json::array({dflt, "before upgrade"}));

  // Restore by the default name: the file written after it is gone.
  Run restore = sb.Lab("restore nested-nat middle '" + dflt + "'");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- test -e /root/big").code == 1);

  // rm: an unknown name is refused and the ones it has listed; a known one goes.
  Run unknown = sb.Lab("checkpoint rm nested-nat middle nosuch");
  CHECK(unknown.code == 1);
  CHECK(unknown.out.find("has no checkpoint 'nosuch' (it has: " + dflt + ", before upgrade)") != std::string::npos);
  Run rm = sb.Lab("checkpoint rm nested-nat middle 'before upgrade'");
  INFO(rm.out);
  REQUIRE(rm.code == 0);
  auto left = nlohmann::json::parse(sb.Lab("checkpoints nested-nat middle --json").out);
  REQUIRE(left.size() == 1);
  CHECK(left[0]["name"] == dflt);
  CHECK(sb.Lab("check nested-nat").code == 0);
  REQUIRE(sb.Lab("down nested-nat").code == 0);
}

TEST_CASE("lab exec takes everything after the machine as the command, and no command is its login shell",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + lab::testing::Src("labs/nested-nat.yaml")).code == 0);
  InitPids(sb, "nested-nat");

  // The command's own options are its own: `ls -la` lists '.' and '..', plain `ls` does not.
  Run ls = sb.Lab("exec nested-nat middle ls -la /");
  INFO(ls.out);
  CHECK(ls.code == 0);
  CHECK(std::regex_search(ls.out, std::regex(R"(\s\.\.\n)")));
  Run code = sb.Lab("exec nested-nat middle sh -c 'exit 7'");
  CHECK(code.code == 7);
  Run dashed = sb.Lab("exec nested-nat middle -- sh -c 'echo dashed'");
  CHECK(dashed.out.find("dashed") != std::string::npos);
  // Global flags before the machine still count; after it they belong to the command.
  Run echoed = sb.Lab("exec -q nested-nat --quiet middle echo -q");
  CHECK(echoed.code == 0);
  CHECK(echoed.out.find("-q") != std::string::npos);

  // No command: a login shell (/bin/sh -l), reading its commands from stdin here.
  const std::string script = sb.dir + "/commands.sh";
  std::ofstream(script) << "echo from-the-shell $(hostname)\nexit 3\n";
  Run shell = sb.Lab("exec nested-nat middle < " + script);
  INFO(shell.out);
  CHECK(shell.code == 3);
  CHECK(shell.out.find("from-the-shell") != std::string::npos);
  REQUIRE(sb.Lab("down nested-nat").code == 0);
}

TEST_CASE("A lab stop killed before the VM went off is not reported as off, and running it again finishes it",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = WriteNestedNat(sb.dir + "/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  // What `lab stop` leaves when it is killed right after recording the user's intent: the VM is
  // marked stopped and still runs.
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((sb.state + "/state.db").c_str(), &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "INSERT INTO stopped(lab, machine) VALUES ('nested-nat', 'nested1')", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  REQUIRE(States(sb, "nested-nat")["nested1"] == "running");
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("VM 'nested1' is off") == std::string::npos);
  CHECK(up.out.find("VM 'nested1' still runs: a lab stop of it did not finish; lab stop nested-nat nested1") !=
        std::string::npos);

  Run stop = sb.Lab("stop nested-nat nested1");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  CHECK(States(sb, "nested-nat")["nested1"] == "off");
  up = sb.Lab("up " + file);
  INFO(up.out);
  CHECK(up.out.find("VM 'nested1' is off (lab stop)") != std::string::npos);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  TakeDownLeavingNothing(sb, "nested-nat", all);
}
