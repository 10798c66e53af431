// End to end: labs/qemu-nested.yaml, hardware VMs (driver: qemu) as a user runs them.
//
// One bring-up serves every assertion (a guest boots in seconds under software emulation): the
// checks pass (NAT made by partitions inside a real guest's kernel, a qemu VM inside a qemu VM),
// `lab exec` runs in the guest's own kernel, the exposed VM has svm/vmx and /dev/kvm and the hidden
// one has neither (judged from the guest's own /proc/cpuinfo, never from this machine's), the VM
// inside the VM runs under KVM, a QEMU killed with SIGKILL is drift that `lab up` repairs, a VM
// inside the hidden VM is refused before anything is made, and `lab down` leaves no QEMU, tap,
// socket or disk. SKIP without QEMU or without a guest kernel.
#include <signal.h>

#include <chrono>
#include <thread>

#include "hv/qemu/command.h"
#include "tests/e2e/e2e_support.h"
#include "tests/hv/qemu_support.h"

using namespace lab::testing::e2e;

namespace {

/// The sandbox's state directory gets the cached guest kernel (a download is 70 MB).
bool GiveKernel(const Sandbox& sb) {
  if (lab::hv::qemu::FindInPath("qemu-system-x86_64").empty()) {
    WARN("SKIP: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    return false;
  }
  auto kernel = lab::testing::TestKernel();
  if (!kernel) return false;
  // The lab exposes a guest's extensions: where lab doctor finds that impossible here (a KVM
  // host whose kvm module does not allow nesting), the lab cannot be made on this machine.
  auto doctor = nlohmann::json::parse(sb.Lab("doctor --json").out, nullptr, false);
  if (!doctor.is_discarded()) {
    const auto& caps = doctor.is_array() ? doctor : doctor.value("capabilities", nlohmann::json::array());
    for (const auto& c : caps)
      if (c.value("name", "") == "qemu nested" && c.value("state", "") != "ok") {
        WARN("SKIP: lab doctor: a qemu VM's extensions cannot be exposed here: " + c.value("detail", ""));
        return false;
      }
  }
  fs::create_directories(sb.state + "/qemu/kernels");
  fs::create_directory_symlink(kernel->dir, sb.state + "/qemu/kernels/" + fs::path(kernel->dir).filename().string());
  return true;
}

std::vector<int> QemuPids(const Sandbox& sb, const std::string& lab) {
  std::vector<int> pids;
  auto j = nlohmann::json::parse(sb.Lab("status " + lab + " --json").out, nullptr, false);
  if (j.is_discarded()) return pids;
  for (const auto& m : j["machines"])
    if (m.contains("driver") && m["driver"] == "qemu" && m.value("pid", 0) > 0) pids.push_back(m.value("pid", 0));
  return pids;
}

}  // namespace

TEST_CASE("labs/qemu-nested.yaml: real guests expose or hide virtualization, nest partitions and a KVM guest, "
          "are repaired after a kill and leave nothing",
          "[root][e2e][qemu]") {
  LAB_REQUIRE_ROOT("starting QEMU and bridges");
  Sandbox sb;
  if (!GiveKernel(sb)) return;
  const std::string file = Src("labs/qemu-nested.yaml");

  // A VM inside the VM whose extensions are hidden is refused before anything is made.
  std::string text = lab::ReadFile(file).value();
  std::string hidden_nesting = std::regex_replace(
      text, std::regex("(\n      plain:\n)"),
      "$1        vms:\n          deep: {driver: partition, memory: {startup: 256MiB}}\n");
  REQUIRE(hidden_nesting != text);
  std::string bad = sb.dir + "/hidden-nesting.yaml";
  REQUIRE(lab::WriteFileAtomic(bad, hidden_nesting));
  Run refused = sb.Lab("up " + bad);
  INFO(refused.out);
  CHECK(refused.code != 0);
  CHECK(refused.out.find("plain") != std::string::npos);
  CHECK(refused.out.find("xpose") != std::string::npos);  // ExposeVirtualizationExtensions
  CHECK(refused.out.find("made") == std::string::npos);
  CHECK_FALSE(fs::exists(sb.run + "/qemu-nested"));

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  if (up.code != 0) {
    // What the guests said, for the report: the VM inside middle is booted by middle's QEMU.
    Run consoles = sb.Lab("exec qemu-nested middle -- sh -c 'for f in /run/lab/*/q/*/console.log; do echo \"== $f\"; "
                          "tail -n 30 $f; done; cat /proc/loadavg'");
    INFO("inside middle:\n" << consoles.out);
    CHECK(up.code == 0);
  }
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "qemu-nested");
  auto qemus = QemuPids(sb, "qemu-nested");
  CHECK(qemus.size() == 2);  // middle and plain run here; inner runs inside middle

  Run check = sb.Lab("check qemu-nested");
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find("9 passed, 0 failed") != std::string::npos);

  // The guests' own kernel, not this machine's.
  Run uname = sb.Lab("exec qemu-nested middle -- uname -r");
  std::string host_release = sb.Popen("uname -r").out;
  CHECK(uname.code == 0);
  CHECK_FALSE(uname.out.empty());
  CHECK(uname.out != host_release);

  // Exposed: the processor has its virtualization flag and /dev/kvm is there; hidden: neither.
  Run exposed = sb.Lab("exec qemu-nested middle -- sh -c 'grep -c -w -e svm -e vmx /proc/cpuinfo; test -c /dev/kvm && echo kvm'");
  INFO(exposed.out);
  CHECK(exposed.out.find("kvm") != std::string::npos);
  CHECK(std::stoi(exposed.out) >= 1);
  Run hidden = sb.Lab("exec qemu-nested plain -- sh -c 'grep -c -w -e svm -e vmx /proc/cpuinfo; test -e /dev/kvm && echo kvm'");
  INFO(hidden.out);
  CHECK(hidden.out.rfind("0\n", 0) == 0);
  CHECK(hidden.out.find("kvm") == std::string::npos);

  // The VM inside the VM is a KVM guest of middle's hypervisor.
  Run inner = sb.Lab("exec qemu-nested inner -- dmesg");
  INFO(inner.out.substr(0, 2000));
  CHECK(inner.out.find("Hypervisor detected: KVM") != std::string::npos);

  // lab exec streams through the agents: our stdin reaches the command in the guest, its output
  // comes back as it is printed, and so does its exit code.
  std::string input = sb.dir + "/input";
  REQUIRE(lab::WriteFileAtomic(input, "abc\ndef\n"));
  Run piped = sb.Lab("exec -T qemu-nested middle -- sh -c 'cat; exit 3' < " + input);
  CHECK(piped.code == 3);
  CHECK(piped.out == "abc\ndef\n");
  // -t: a terminal of the machine's own, with the size of ours, in the qemu VM, in a partition
  // inside it and in the qemu VM inside it (a terminal made by script(1) stands in for the user's).
  if (!lab::hv::qemu::FindInPath("script").empty()) {
    for (const char* vm : {"middle", "nested1", "inner"}) {
      Run term = sb.Popen("script -qec \"stty rows 31 cols 101; LAB_STATE_DIR=" + sb.state + " LAB_RUN_DIR=" + sb.run +
                          " " + LAB_BINARY_DIR + "/lab exec -t qemu-nested " + vm +
                          " -- sh -c 'stty size; tty; exit 5'\" /dev/null < /dev/null");
      INFO(vm << ": " << term.out);
      CHECK(term.code == 5);
      CHECK(term.out.find("31 101") != std::string::npos);
      CHECK(term.out.find("/dev/pts/") != std::string::npos);
    }
  } else {
    WARN("SKIP: lab exec -t: script(1) is not installed (apt-get install bsdutils)");
  }

  Run again = sb.Lab("up " + file);
  INFO(again.out);
  CHECK(again.out.find("No changes.") != std::string::npos);

  // A QEMU killed is drift: status says the VM is off, `lab up` starts it again.
  REQUIRE(!qemus.empty());
  auto j = nlohmann::json::parse(sb.Lab("status qemu-nested --json").out);
  int plain_pid = 0;
  for (const auto& m : j["machines"])
    if (m.value("name", "") == "plain") plain_pid = m.value("pid", 0);
  REQUIRE(plain_pid > 0);
  REQUIRE(::kill(plain_pid, SIGKILL) == 0);
  for (int i = 0; i < 100 && !ProcessGone(plain_pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Run drift = sb.Lab("status qemu-nested");
  INFO(drift.out);
  CHECK(drift.out.find("not running") != std::string::npos);
  std::smatch row;
  CHECK(std::regex_search(drift.out, row, std::regex("plain +vm/qemu +hv1 +off")));
  Run repair = sb.Lab("up " + file);
  INFO(repair.out);
  CHECK(repair.code == 0);
  CHECK(repair.out.find("started VM 'plain'") != std::string::npos);
  CHECK(sb.Lab("check qemu-nested").out.find("9 passed, 0 failed") != std::string::npos);

  // Down: no QEMU left (by the pids recorded), no run directory (sockets), no disk directory.
  auto now = QemuPids(sb, "qemu-nested");
  pids.insert(pids.end(), now.begin(), now.end());
  TakeDownLeavingNothing(sb, "qemu-nested", pids);
  for (int pid : now) CHECK(ProcessGone(pid));
}
