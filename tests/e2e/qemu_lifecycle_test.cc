// End to end: Hyper-V's lifecycle of a qemu VM on a machine image (issue 20). The VM boots from
// its own qcow2 over its image's read-only disk (an imported busybox image, made offline by the
// test), runs its image's software under the guest kernel, and keeps what it wrote across
// Stop-VM/Start-VM, resumes a saved state with its processes, and moves to another host live
// (Move-VM: its memory carried over to a QEMU there); `lab down` leaves no QEMU, tap or disk of
// the lab. Root only; SKIP without
// QEMU, busybox-static or the guest kernel (cached in /var/tmp/lab-test-kernels); traffic stays
// inside the lab's own namespaces.
#include <catch2/catch.hpp>

#include "hv/kernel/netlink.h"
#include "hv/kernel/probe.h"
#include "hv/qemu/command.h"
#include "hv/qemu/process.h"
#include "tests/e2e/e2e_support.h"
#include "tests/e2e/faults_support.h"
#include "tests/hv/qemu_support.h"
#include "tests/images/image_maker.h"

using namespace lab::testing::e2e;
namespace maker = lab::testing::images;

namespace {

const char* kLab = R"(lab: qlife
images:
  tiny: {oci: ./tiny-layout:1.0}
hosts:
  hv1:
    switches:
      Lab: {type: internal, ip: 10.61.0.1/24}
    vms:
      vm1:
        driver: qemu
        image: tiny
        memory: {startup: 256MiB}
        adapters: [{switch: Lab, ip: 10.61.0.10/24}]
)";

// Two hosts on one wire, each with an external switch of the same name; vm1 on hv1.
const char* kMoveLab = R"(lab: qmove
images:
  tiny: {oci: ./tiny-layout:1.0}
networks:
  lan: {subnet: 10.63.0.0/24, gateway: 10.63.0.1}
hosts:
  hv1:
    nics:
      Ethernet: {network: lan, ip: 10.63.0.11/24, gateway: 10.63.0.1}
    switches:
      External: {type: external, nics: [Ethernet], allow_management_os: true}
    vms:
      vm1:
        driver: qemu
        image: tiny
        memory: {startup: 256MiB}
        adapters: [{switch: External, ip: 10.63.0.30/24, gateway: 10.63.0.1}]
  hv2:
    nics:
      Ethernet: {network: lan, ip: 10.63.0.12/24, gateway: 10.63.0.1}
    switches:
      External: {type: external, nics: [Ethernet], allow_management_os: true}
)";

/// Everything a qemu e2e test needs here, or a SKIP said: QEMU, busybox for the image, the guest
/// kernel (linked into the sandbox's kernel cache, so nothing is downloaded).
bool QemuReady(const Sandbox& sb, std::string* release) {
  if (!lab::hv::qemu::QemuVersion().ok()) {
    WARN("SKIP: QEMU is not installed");
    return false;
  }
  if (maker::Busybox().empty()) {
    WARN("SKIP: busybox-static is not installed (scripts/deps.sh installs it)");
    return false;
  }
  auto kernel = lab::testing::TestKernel();
  if (!kernel) return false;
  fs::create_directories(sb.state + "/qemu/kernels");
  fs::create_symlink(kernel->dir, sb.state + "/qemu/kernels/" + fs::path(kernel->dir).filename().string());
  *release = kernel->release;
  return true;
}

std::string Out(const Sandbox& sb, const std::string& machine, const std::string& cmd,
                const std::string& lab = "qlife") {
  Run r = sb.Lab("exec " + lab + " " + machine + " -- " + cmd);
  INFO(machine << ": " << cmd << "\n" << r.out);
  CHECK(r.code == 0);
  return r.out;
}

/// The VM's own disks under the sandbox's state (its qcow2).
size_t VmDisks(const Sandbox& sb) {
  size_t n = 0;
  std::error_code ec;
  if (!fs::exists(sb.state + "/disks", ec)) return 0;
  for (auto it = fs::recursive_directory_iterator(sb.state + "/disks", ec); it != fs::recursive_directory_iterator();
       it.increment(ec))
    n += it->path().extension() == ".qcow2" ? 1 : 0;
  return n;
}

/// One ping from inside host `machine`'s network namespace, answered within `timeout_ms`.
bool PingFrom(const Sandbox& sb, const std::string& lab, const std::string& machine, const std::string& target,
              int timeout_ms) {
  namespace k = lab::hv::kernel;
  auto ns = k::NetNs::Open(MachineRun(sb, lab, machine) + "/ns/net");
  REQUIRE(ns.ok());
  k::ProbeResult r;
  REQUIRE(k::WithNetNs(*ns, [&] {
            r = k::ProbePing(target, timeout_ms);
            return lab::Status::Ok();
          }).ok());
  INFO(machine << " ping " << target << ": " << r.detail);
  return r.ok;
}

/// vm1 of `lab` in `lab status --json`: {"parent", "state", "pid"}.
nlohmann::json Vm1(const Sandbox& sb, const std::string& lab) {
  Run st = sb.Lab("status " + lab + " --json");
  auto j = nlohmann::json::parse(st.out, nullptr, false);
  INFO(st.out);
  REQUIRE(j.is_object());
  for (const auto& m : j["machines"])
    if (m.value("name", "") == "vm1") return m;
  FAIL("no vm1 in lab status");
  return {};
}

}  // namespace

TEST_CASE("A qemu VM on an image boots its image from its own disk and keeps what it wrote across stop and start",
          "[root][e2e][qemu]") {
  LAB_REQUIRE_ROOT("qemu VMs on images");
  Sandbox sb;
  std::string release;
  if (!QemuReady(sb, &release)) return;
  maker::WriteOciLayout(sb.dir + "/tiny-layout", "tiny", "1.0");
  std::string file = sb.dir + "/qlife.yaml";
  std::ofstream(file) << kLab;

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "qlife");

  // The image's software under the guest's own kernel, not the host's tree.
  CHECK(Out(sb, "vm1", "cat /etc/image-name") == "tiny\n");
  CHECK(Out(sb, "vm1", "/bin/busybox uname -r") == release + "\n");
  CHECK(sb.Lab("exec qlife vm1 -- test -e /etc/shadow").code != 0);
  CHECK(Out(sb, "vm1", "/bin/busybox ping -c 1 -W 5 10.61.0.1").find("1 packets received") != std::string::npos);
  CHECK(VmDisks(sb) == 1);

  // Stop-VM keeps the disk; Start-VM boots the same disk.
  CHECK(Out(sb, "vm1", "sh -c 'echo kept > /root/written && /bin/busybox sync'") == "");
  Run stop = sb.Lab("stop qlife vm1");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  CHECK(sb.Lab("exec qlife vm1 -- cat /root/written").code != 0);  // off
  CHECK(VmDisks(sb) == 1);
  Run start = sb.Lab("start qlife vm1");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK(Out(sb, "vm1", "cat /root/written") == "kept\n");

  pids = InitPids(sb, "qlife");
  TakeDownLeavingNothing(sb, "qlife", pids);
  CHECK(VmDisks(sb) == 0);
}

TEST_CASE("A saved qemu VM resumes with its processes; a restored checkpoint reverts its disk", "[root][e2e][qemu]") {
  LAB_REQUIRE_ROOT("qemu VMs saved and restored");
  Sandbox sb;
  std::string release;
  if (!QemuReady(sb, &release)) return;
  maker::WriteOciLayout(sb.dir + "/tiny-layout", "tiny", "1.0");
  std::string file = sb.dir + "/qlife.yaml";
  std::ofstream(file) << kLab;
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "qlife");

  // Save-VM, then Start-VM from the saved state: the process started before is still there.
  std::string sleeper = Out(sb, "vm1", "sh -c '/bin/busybox sleep 100000 </dev/null >/dev/null 2>&1 & echo $!'");
  REQUIRE(sleeper.size() > 1);
  sleeper.pop_back();
  Run save = sb.Lab("save qlife vm1");
  INFO(save.out);
  REQUIRE(save.code == 0);
  Run status = sb.Lab("status qlife");
  INFO(status.out);
  CHECK(std::regex_search(status.out, std::regex("vm1[^\n]*saved")));
  CHECK(sb.Lab("exec qlife vm1 -- true").out.find("is saved; resume it first") != std::string::npos);
  Run resume = sb.Lab("resume qlife vm1");
  INFO(resume.out);
  REQUIRE(resume.code == 0);
  CHECK(Out(sb, "vm1", "sh -c 'kill -0 " + sleeper + " && echo alive'") == "alive\n");
  // Its adapter is on a new tap, a port of the switch again.
  CHECK(Out(sb, "vm1", "/bin/busybox ping -c 1 -W 5 10.61.0.1").find("1 packets received") != std::string::npos);
  Run after = sb.Lab("status qlife");
  INFO(after.out);
  CHECK(std::regex_search(after.out, std::regex("vm1[^\n]*running")));

  // Checkpoint-VM, a write after it, Restore-VMCheckpoint: the write is gone, the earlier one stays.
  Out(sb, "vm1", "sh -c 'echo before > /root/before && /bin/busybox sync'");
  Run cp = sb.Lab("checkpoint qlife vm1 c1");
  INFO(cp.out);
  REQUIRE(cp.code == 0);
  Run list = sb.Lab("checkpoints qlife vm1");
  INFO(list.out);
  CHECK(list.out.find("c1") != std::string::npos);
  Out(sb, "vm1", "sh -c 'echo after > /root/after && /bin/busybox sync'");
  Run restore = sb.Lab("restore qlife vm1 c1");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(Out(sb, "vm1", "cat /root/before") == "before\n");
  CHECK(sb.Lab("exec qlife vm1 -- test -e /root/after").code != 0);
  Run rm = sb.Lab("checkpoint rm qlife vm1 c1");
  INFO(rm.out);
  CHECK(rm.code == 0);
  CHECK(sb.Lab("checkpoints qlife vm1").out.find("has no checkpoints") != std::string::npos);

  pids = InitPids(sb, "qlife");
  TakeDownLeavingNothing(sb, "qlife", pids);
  CHECK(VmDisks(sb) == 0);
}

TEST_CASE("A running qemu VM on an image moves to another host live: its processes go on and it answers there at once",
          "[root][e2e][qemu]") {
  LAB_REQUIRE_ROOT("qemu VMs moved live");
  Sandbox sb;
  std::string release;
  if (!QemuReady(sb, &release)) return;
  maker::WriteOciLayout(sb.dir + "/tiny-layout", "tiny", "1.0");
  std::string file = sb.dir + "/qmove.yaml";
  std::ofstream(file) << kMoveLab;
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "qmove");

  auto before = Vm1(sb, "qmove");
  CHECK(before.value("parent", "") == "hv1");
  const int old_qemu = before.value("pid", 0);
  REQUIRE(old_qemu > 0);
  // Both hosts know vm1 where it is (hv2 over the wire, through hv1's switch).
  REQUIRE(PingFrom(sb, "qmove", "hv2", "10.63.0.30", 5000));
  std::string sleeper =
      Out(sb, "vm1", "sh -c '/bin/busybox sleep 100000 </dev/null >/dev/null 2>&1 & echo $!'", "qmove");
  REQUIRE(sleeper.size() > 1);
  sleeper.pop_back();

  Run moved = sb.Lab("move qmove vm1 --to hv2");
  INFO(moved.out);
  REQUIRE(moved.code == 0);
  CHECK(std::regex_search(moved.out, std::regex("VM 'vm1' now runs on 'hv2' \\(was on 'hv1'\\): live migration in [0-9]+ ms "
                                                "\\(downtime [0-9]+ ms\\)")));
  // At once: one second, where the wire's bridges would send its frames to hv1 for 300 s.
  CHECK(PingFrom(sb, "qmove", "hv2", "10.63.0.30", 1000));
  CHECK(PingFrom(sb, "qmove", "hv1", "10.63.0.30", 1000));
  // Its memory came along: the process started before runs on, with the same pid.
  CHECK(Out(sb, "vm1", "sh -c 'kill -0 " + sleeper + " && echo alive'", "qmove") == "alive\n");

  auto after = Vm1(sb, "qmove");
  CHECK(after.value("parent", "") == "hv2");
  CHECK(after.value("state", "") == "running");
  const int new_qemu = after.value("pid", 0);
  CHECK(new_qemu > 0);
  CHECK(new_qemu != old_qemu);
  CHECK(ProcessGone(old_qemu));
  Run again = sb.Lab("up " + file);
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("No changes.") != std::string::npos);
  CHECK(Vm1(sb, "qmove").value("pid", 0) == new_qemu);

  pids.push_back(new_qemu);
  auto now = InitPids(sb, "qmove");
  pids.insert(pids.end(), now.begin(), now.end());
  TakeDownLeavingNothing(sb, "qmove", pids);
  CHECK(VmDisks(sb) == 0);
}

namespace {

const char* kTwinLab = R"(lab: qtwin
images:
  tiny: {oci: ./tiny-layout:1.0}
hosts:
  hv1:
    switches:
      Lab: {type: internal, ip: 10.62.0.1/24}
    vms:
      vm1:
        driver: qemu
        image: tiny
        memory: {startup: 256MiB}
        adapters: [{switch: Lab, ip: 10.62.0.10/24}]
      vm2:
        driver: qemu
        image: tiny
        memory: {startup: 256MiB}
        adapters: [{switch: Lab, ip: 10.62.0.11/24}]
)";

std::string TwinOut(const Sandbox& sb, const std::string& vm, const std::string& cmd) {
  Run r = sb.Lab("exec qtwin " + vm + " -- " + cmd);
  INFO(vm << ": " << cmd << "\n" << r.out);
  CHECK(r.code == 0);
  return r.out;
}

/// The template directories under the sandbox's state (complete ones: no temporaries).
std::vector<std::string> Templates(const Sandbox& sb) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sb.state + "/qemu/templates", ec))
    if (e.is_directory()) out.push_back(e.path().string());
  return out;
}

/// Seconds since QEMU of VM `vm` of lab mark `mark` started (its qemu.pid: "PID START_TIME",
/// START_TIME in clock ticks after boot, as /proc/PID/stat says), by this machine's uptime.
double QemuAge(const Sandbox& sb, const std::string& mark, const std::string& vm) {
  std::ifstream pidfile(sb.run + "/" + mark + "/q/" + vm + "/qemu.pid");
  long pid = 0;
  unsigned long long start = 0;
  pidfile >> pid >> start;
  double up = 0;
  std::ifstream("/proc/uptime") >> up;
  return start == 0 ? -1 : up - static_cast<double>(start) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST_CASE("Two qemu VMs of one image start from one saved template and each takes on its own identity; a VM whose "
          "template no longer loads boots instead",
          "[root][e2e][qemu]") {
  LAB_REQUIRE_ROOT("qemu VMs started from a template");
  Sandbox sb;
  std::string release;
  if (!QemuReady(sb, &release)) return;
  maker::WriteOciLayout(sb.dir + "/tiny-layout", "tiny", "1.0");
  std::string file = sb.dir + "/qtwin.yaml";
  std::ofstream(file) << kTwinLab;
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "qtwin");
  REQUIRE(sb.owned.size() == 1);
  const std::string mark = *sb.owned.begin();

  // One template, made once, is the backing file of both VMs' own disks.
  auto templates = Templates(sb);
  REQUIRE(templates.size() == 1);
  CHECK(fs::exists(templates[0] + "/state.vm"));
  for (const std::string& vm : std::vector<std::string>{"vm1", "vm2"}) {
    INFO(vm);
    std::string disk = sb.state + "/disks/" + mark + "/q/" + vm + "/disk.qcow2";
    auto info = lab::hv::qemu::RunCommand({"qemu-img", "info", "-U", "--output=json", disk}, 30000);
    REQUIRE(info.ok());
    INFO(info->output);
    auto j = nlohmann::json::parse(info->output, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j.value("backing-filename", "") == templates[0] + "/disk.qcow2");
    CHECK(j.value("backing-filename-format", "") == "qcow2");
  }

  // Each guest resumed a booted state: it has been up longer than its QEMU has been running.
  for (const std::string& vm : std::vector<std::string>{"vm1", "vm2"}) {
    std::string uptime = TwinOut(sb, vm, "cat /proc/uptime");
    double guest = std::atof(uptime.c_str());
    double age = QemuAge(sb, mark, vm);  // read after the guest's: only larger than at that moment
    INFO(vm << ": guest up " << guest << " s, its QEMU started " << age << " s ago");
    CHECK(age > 0);
    CHECK(guest > age);
  }

  // Yet each is itself: computer name, MAC, machine id; each reaches the other's address.
  std::string h1 = TwinOut(sb, "vm1", "hostname"), h2 = TwinOut(sb, "vm2", "hostname");
  CHECK(h1 != h2);
  std::string mac1 = TwinOut(sb, "vm1", "sh -c 'cat /sys/class/net/*/address'");
  std::string mac2 = TwinOut(sb, "vm2", "sh -c 'cat /sys/class/net/*/address'");
  CHECK(mac1 != mac2);
  std::string id1 = TwinOut(sb, "vm1", "cat /etc/machine-id"), id2 = TwinOut(sb, "vm2", "cat /etc/machine-id");
  CHECK(std::regex_match(id1, std::regex("[0-9a-f]{32}\n")));
  CHECK(std::regex_match(id2, std::regex("[0-9a-f]{32}\n")));
  CHECK(id1 != id2);
  CHECK(TwinOut(sb, "vm1", "/bin/busybox ping -c 1 -W 5 10.62.0.11").find("1 packets received") != std::string::npos);
  CHECK(TwinOut(sb, "vm2", "/bin/busybox ping -c 1 -W 5 10.62.0.10").find("1 packets received") != std::string::npos);

  // `lab down` removes the VMs' disks and keeps the template, a cache like the image's disk.
  TakeDownLeavingNothing(sb, "qtwin", pids);
  CHECK(VmDisks(sb) == 0);
  CHECK(Templates(sb) == templates);

  // A template whose state no longer loads: the next VM of it boots instead, and says why.
  fs::resize_file(templates[0] + "/state.vm", 4096);
  std::string solo = sb.dir + "/qsolo.yaml";
  std::ofstream(solo) << std::regex_replace(std::regex_replace(kTwinLab, std::regex("qtwin"), "qsolo"),
                                            std::regex("      vm2:[\\s\\S]*"), "");
  Run again = sb.Lab("up " + solo);
  INFO(again.out);
  REQUIRE(again.code == 0);
  auto solo_pids = InitPids(sb, "qsolo");
  std::string solo_mark;
  for (const auto& m : sb.owned)
    if (m.rfind("qsolo-", 0) == 0) solo_mark = m;
  REQUIRE(!solo_mark.empty());
  auto note = lab::ReadFile(sb.run + "/" + solo_mark + "/q/vm1/template.txt");
  REQUIRE(note.has_value());
  INFO(*note);
  CHECK(note->rfind("booted (not from a template): ", 0) == 0);
  Run up_solo = sb.Lab("exec qsolo vm1 -- cat /proc/uptime");
  INFO(up_solo.out);
  CHECK(std::atof(up_solo.out.c_str()) < QemuAge(sb, solo_mark, "vm1"));  // booted after its QEMU started
  auto info = lab::hv::qemu::RunCommand(
      {"qemu-img", "info", "-U", "--output=json", sb.state + "/disks/" + solo_mark + "/q/vm1/disk.qcow2"}, 30000);
  REQUIRE(info.ok());
  CHECK(nlohmann::json::parse(info->output, nullptr, false).value("backing-filename-format", "") == "raw");
  TakeDownLeavingNothing(sb, "qsolo", solo_pids);
}
