// The guest side of qemu VMs: the modules the initramfs carries for lab's needs inside a guest,
// image disks (ext4 from overlay layers, a qcow2 per VM), and real guests booted on the host's
// tree over 9p (with an agent program pid 1 supervises) and on an image's disk.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "hv/kernel/doctor.h"
#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/disk.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"
#include "hv/qemu/process.h"
#include "hv/qemu/qmp.h"
#include "tests/hv/qemu_support.h"
#include "tests/support.h"

namespace lab::hv::qemu {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void Write(const std::string& path, const std::string& data, unsigned mode = 0644) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << data;
  ::chmod(path.c_str(), mode);
}

TEST_CASE("The guest's modules load the agent's port first and lab's needs inside the guest in the background", "[hv][qemu]") {
  auto kernel = testing::TestKernel();
  if (!kernel) return;
  std::vector<std::string> files;
  auto list = ModuleLoadList(kernel->modules, kernel->release, GuestModuleRoots(), &files);
  INFO(list.message());
  REQUIRE(list.ok());
  std::map<std::string, std::string> phase_of;  // module file name -> the first phase listing it
  std::map<std::string, std::string> flags_of;
  std::string phase;
  std::istringstream lines(*list);
  for (std::string line; std::getline(lines, line);) {
    if (line.front() == '[') {
      phase = line.substr(1, line.size() - 2);
      continue;
    }
    std::istringstream words(line);
    std::string path, flags;
    words >> path >> flags;
    std::string file = fs::path(path).filename().string();
    phase_of.emplace(file, phase);
    if (phase == "late") flags_of[file] = flags;
  }
  // The agent's port needs only virtio's transport and console: nothing slow comes before it.
  for (const auto& [file, p] : phase_of) {
    INFO(file << " in phase " << p);
    if (p == "boot") CHECK(file.rfind("virtio", 0) == 0);
  }
  CHECK(phase_of["virtio_console.ko"] == "boot");
  CHECK(phase_of["9p.ko"] == "9p");
  CHECK(phase_of["9pnet_virtio.ko"] == "9p");
  CHECK(phase_of["overlay.ko"] == "9p");
  CHECK(phase_of["ext4.ko"] == "disk");
  CHECK(phase_of["virtio_blk.ko"] == "disk");
  CHECK(phase_of["crc32c_generic.ko"] == "disk");
  // lab's partition driver and QEMU inside the guest: bridges, veth, nftables NAT and the bridge
  // family, taps, kvm by processor flag.
  for (const char* m : {"bridge.ko", "veth.ko", "tun.ko", "nf_tables.ko", "nft_chain_nat.ko", "nft_masq.ko", "nf_nat.ko",
                        "nf_conntrack.ko", "nft_meta_bridge.ko", "virtio_balloon.ko", "virtio-rng.ko",
                        "kvm.ko"}) {
    INFO(m);
    CHECK(phase_of[m] == "late");
  }
  // The adapters' NIC driver first in the background (the host plugs the adapters as soon as the
  // VM is ready), then the power button, so that Stop-VM is heard soon after the agent starts.
  CHECK(phase_of["virtio_net.ko"] == "net");
  CHECK(list->find("[net]\n") < list->find("[button]\n"));
  CHECK(phase_of["button.ko"] == "button");
  CHECK(phase_of["evdev.ko"] == "button");
  CHECK(list->find("[button]\n") < list->find("[late]\n"));
  CHECK(flags_of["kvm-amd.ko"] == "svm");
  CHECK(flags_of["kvm-intel.ko"] == "vmx");
  // The late phase lists the root modules again (either root may be missing): the file is in once.
  CHECK(std::count(files.begin(), files.end(), "kernel/fs/ext4/ext4.ko") == 1);
  CHECK(list->find("[late]\n") != std::string::npos);
  CHECK(list->find("kernel/fs/ext4/ext4.ko", list->find("[late]")) != std::string::npos);
}

/// A two-layer image: a lower with busybox (when there is one), files and a directory the upper
/// makes opaque, an upper that whites out one file and adds another. Topmost first.
std::vector<std::string> SyntheticImage(const std::string& dir) {
  std::string lower = dir + "/lower", upper = dir + "/upper";
  Write(lower + "/etc/hello", "hello\n");
  Write(lower + "/etc/gone", "whited out\n");
  Write(lower + "/data/old", "hidden by the opaque upper\n");
  fs::create_directories(lower + "/root");
  if (std::string bb = StaticBusybox(); !bb.empty()) {
    fs::create_directories(lower + "/bin");
    fs::copy_file(bb, lower + "/bin/busybox");
    ::chmod((lower + "/bin/busybox").c_str(), 0755);
    for (const char* applet : {"sh", "cat", "test", "ls", "sync", "echo", "kill"})
      fs::create_symlink("busybox", lower + "/bin/" + applet);
  }
  Write(upper + "/etc/added", "upper\n");
  REQUIRE(::mknod((upper + "/etc/gone").c_str(), S_IFCHR | 0000, makedev(0, 0)) == 0);
  fs::create_directories(upper + "/data");
  REQUIRE(::setxattr((upper + "/data").c_str(), "trusted.overlay.opaque", "y", 1, 0) == 0);
  Write(upper + "/data/new", "upper data\n");
  return {upper, lower};
}

/// `path`'s listing inside an ext4 image, by debugfs (e2fsprogs).
std::string DebugfsLs(const std::string& image, const std::string& path) {
  auto out = RunCommand({"debugfs", "-R", "ls -l " + path, image}, 30000);
  REQUIRE(out.ok());
  return out->output;
}

std::string Sha256(const std::string& path) {
  auto out = RunCommand({"sha256sum", path}, 120000);
  REQUIRE(out.ok());
  return out->output.substr(0, 64);
}

TEST_CASE("An image's disk is ext4 of its merged layers with lab's tools, made once; a VM's qcow2 sits over it", "[root][hv][qemu]") {
  LAB_REQUIRE_ROOT("whiteouts are device nodes");
  if (FindInPath("qemu-img").empty() || (FindInPath("mkfs.ext4").empty() && ::access("/usr/sbin/mkfs.ext4", X_OK) != 0)) {
    WARN("SKIP: qemu-img or mkfs.ext4 missing (apt-get install qemu-utils e2fsprogs)");
    return;
  }
  std::string dir = testing::TempDir("lab-disk");
  auto layers = SyntheticImage(dir);
  Write(dir + "/tools-0123/lab", "#!lab\n", 0755);
  std::string cache = dir + "/disks";
  // What a killed build left: removed by the next build of that key.
  Write(cache + "/img1+tools-0123.raw.tmp-99999999", "partial");
  fs::create_directories(cache + "/img1+tools-0123.stage-99999999/etc");

  auto raw = EnsureImageDisk(cache, "img1", layers, dir + "/tools-0123");
  INFO(raw.message());
  REQUIRE(raw.ok());
  CHECK(*raw == cache + "/img1+tools-0123.raw");
  std::string etc = DebugfsLs(*raw, "/etc");
  CHECK(etc.find(" hello") != std::string::npos);
  CHECK(etc.find(" added") != std::string::npos);
  CHECK(etc.find(" gone") == std::string::npos);  // the whiteout removed it, and is not there itself
  std::string data = DebugfsLs(*raw, "/data");
  CHECK(data.find(" new") != std::string::npos);
  CHECK(data.find(" old") == std::string::npos);  // the opaque directory hides the lower's
  CHECK(DebugfsLs(*raw, "/opt/lab").find(" lab") != std::string::npos);
  CHECK(fs::file_size(*raw) >= static_cast<uintmax_t>(kImageDiskHeadroomBytes));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(cache)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"img1+tools-0123.lock", "img1+tools-0123.raw"});
  // The layers are untouched (the staging tree was hard links).
  CHECK(Slurp(layers[1] + "/etc/gone") == "whited out\n");

  // Made once: a second ask finds it (not rebuilt: same inode and time).
  struct stat before {}, after {};
  ::stat(raw->c_str(), &before);
  auto again = EnsureImageDisk(cache, "img1", layers, dir + "/tools-0123");
  REQUIRE(again.ok());
  ::stat(again->c_str(), &after);
  CHECK(after.st_ino == before.st_ino);
  CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  // A key that cannot be a file name, and a layer that is not there, are refused by name.
  CHECK(EnsureImageDisk(cache, "../x", layers, "").message().find("'../x'") != std::string::npos);
  auto missing = EnsureImageDisk(cache, "img2", {dir + "/nope"}, "");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find(dir + "/nope") != std::string::npos);
  CHECK_FALSE(fs::exists(cache + "/img2.raw"));

  // Two labs asking for the same new image at once: one builds, the other waits and finds it.
  Result<std::string> first = Status::Error("not run"), second = Status::Error("not run");
  std::thread a([&] { first = EnsureImageDisk(cache, "img3", layers, ""); });
  std::thread b([&] { second = EnsureImageDisk(cache, "img3", layers, ""); });
  a.join();
  b.join();
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  CHECK(*first == *second);
  CHECK(DebugfsLs(*first, "/etc").find(" added") != std::string::npos);
  for (const auto& e : fs::directory_iterator(cache)) {
    std::string n = e.path().filename().string();
    CHECK((n.rfind("img1+tools-0123.", 0) == 0 || n == "img3.raw" || n == "img3.lock" || n == "img2.lock"));
  }

  std::string vm = dir + "/vm.qcow2";
  REQUIRE(CreateVmDisk(vm, *raw).ok());
  auto info = RunCommand({"qemu-img", "info", "--output=json", vm}, 30000);
  REQUIRE(info.ok());
  auto j = nlohmann::json::parse(info->output);
  CHECK(j["format"] == "qcow2");
  CHECK(j["backing-filename"] == *raw);
  CHECK(j["backing-filename-format"] == "raw");
  CHECK(j["virtual-size"] == fs::file_size(*raw));
  auto twice = CreateVmDisk(vm, *raw);
  REQUIRE_FALSE(twice.ok());
  CHECK(twice.message().find("already exists") != std::string::npos);
  fs::remove_all(dir);
}

/// Lines the guest writes on the agent port, read from QEMU's agent.sock until one starts with
/// `last` or `timeout_ms` passes.
std::vector<std::string> ReadPortLines(int fd, const std::string& last, int timeout_ms) {
  std::vector<std::string> lines;
  std::string buf;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char chunk[4096];
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      lines.push_back(buf.substr(0, nl));
      buf.erase(0, nl + 1);
      if (lines.back().rfind(last, 0) == 0) return lines;
    }
  }
  return lines;
}

int ConnectUnix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

/// Waits for QEMU (our child) to exit by itself: the guest powered off.
bool ExitsByItself(const QemuProcess& p, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (::waitpid(p.pid, nullptr, WNOHANG) == p.pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

/// Presses the ACPI power button and waits for QEMU to exit by itself.
bool PowersOffOnButton(const QemuProcess& p, int timeout_ms) {
  auto qmp = QmpClient::Connect(p.qmp_socket(), 5000);
  return qmp.ok() && qmp->SystemPowerdown().ok() && ExitsByItself(p, timeout_ms);
}

TEST_CASE("Guests boot on the host's tree over 9p with a supervised agent and on an image's disk, and power off on the button or SIGTERM", "[root][hv][qemu]") {
  LAB_REQUIRE_ROOT("booting qemu guests");
  if (FindInPath("qemu-system-x86_64").empty() || FindInPath("qemu-img").empty()) {
    WARN("SKIP: QEMU is not installed (apt-get install qemu-system-x86 qemu-utils)");
    return;
  }
  if (StaticBusybox().empty()) {
    WARN("SKIP: the image guest needs busybox-static for its commands");
    return;
  }
  auto kernel = testing::TestKernel();
  if (!kernel) return;
  // Under /var/tmp: the 9p guest sees the host's tree, but its /tmp is its own tmpfs.
  std::string dir = "/var/tmp/lab-qemu-guest-XXXXXX";
  REQUIRE(::mkdtemp(dir.data()));
  std::string initrd = dir + "/initrd.gz";
  REQUIRE(BuildInitramfs(*kernel, std::string(LAB_BINARY_DIR) + "/lab-guest-init", StaticBusybox(), initrd).ok());
  bool kvm = kernel::JudgeKvm(kernel::ProbeKvm(2000)).state == kernel::kCapUsable;
  auto config = [&](const std::string& name) {
    QemuConfig c;
    c.accel = kvm ? Accel::kKvm : Accel::kTcg;
    c.memory_mib = 384;
    c.kernel = kernel->vmlinux;
    c.initrd = initrd;
    c.run_dir = dir + "/" + name;
    c.nice = 10;
    c.hotplug_ports = 0;
    fs::create_directories(c.run_dir);
    return c;
  };

  // The 9p guest's agent: a script that takes on the VM's identity (its hostname, as lab's agent
  // does when the host creates the VM: the background modules wait for it), reports each start
  // (and LAB_AGENT_PORT) on the port and exits, so pid 1 restarts it; its third run also makes what
  // lab's partition driver makes inside a guest (a bridge with a veth port, nftables NAT and a
  // bridge-family filter) with the host's own ip and nft, and looks at the root pid 1 set up.
  std::string script = dir + "/agent.sh";
  Write(script, R"SH(#!/bin/sh
echo lab-vm > /proc/sys/kernel/hostname
while [ ! -e /run/lab/modules-loaded ]; do sleep 0.1; done
n=$(( $(cat /run/agent-runs 2>/dev/null || echo 0) + 1 )); echo $n > /run/agent-runs
{
  echo "start $n $1 $LAB_AGENT_PORT"
  if [ $n = 3 ]; then
    ip link add labbr0 type bridge && ip link add labv0 type veth peer name labv1 &&
      ip link set labv0 master labbr0 && ip link set labbr0 up && echo "bridge and veth: ok"
    nft -f - <<'EOF' && nft list ruleset | grep -c -e masquerade -e 'ether saddr' | sed 's/^/nft rules: /'
table ip labnat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "labbr0" masquerade
  }
}
table bridge labfilter {
  chain lab_forward {
    type filter hook forward priority 0;
    ether saddr 02:00:00:00:00:01 drop
  }
}
EOF
    test -c /dev/net/tun && echo "tun: ok"
    mkdir -p /tmp/o/l /tmp/o/u /tmp/o/w /tmp/o/m &&
      mount -t overlay overlay -o lowerdir=/tmp/o/l,upperdir=/tmp/o/u,workdir=/tmp/o/w /tmp/o/m && echo "overlay: ok"
    touch /etc/lab-written && echo "root writable: ok"
    ip -o link show lo | grep -q 'UP' && echo "lo: up"
    for m in /dev/pts /dev/shm /tmp /run /sys/fs/cgroup; do
      grep -q " $m " /proc/mounts && echo "mounted $m $(awk -v m=$m '$2 == m {print $3}' /proc/mounts)"
    done
    echo "pid1 $(cat /proc/1/comm)"
  fi
  echo "end $n"
} > "$LAB_AGENT_PORT" 2>&1
)SH",
        0755);
  QemuConfig host_tree = config("host-tree");
  host_tree.root = RootKind::k9p;
  host_tree.root_dir = "/";
  host_tree.agent_binary = script;

  auto layers = SyntheticImage(dir + "/image");
  auto raw = EnsureImageDisk(dir + "/disks", "synthetic", layers, "");
  INFO(raw.message());
  REQUIRE(raw.ok());
  std::string raw_hash = Sha256(*raw);
  QemuConfig image = config("image");
  image.root = RootKind::kDisk;
  image.disk = dir + "/image/vm.qcow2";
  REQUIRE(CreateVmDisk(image.disk, *raw).ok());

  // Both boot at once (TCG on a shared machine: seconds each).
  auto tree_vm = StartQemu(host_tree);
  REQUIRE(tree_vm.ok());
  int port = ConnectUnix(tree_vm->agent_socket());  // before the guest is up: QEMU keeps it
  auto image_vm = StartQemu(image);
  REQUIRE(image_vm.ok());

  {
    INFO("image guest, console: " << Slurp(image_vm->console_log()));
    auto agent = AgentClient::Connect(image_vm->agent_socket(), 5000);
    REQUIRE(agent.ok());
    REQUIRE(agent->Ping(180000).ok());
    auto cat = [&](const std::string& path) {
      auto r = agent->Exec({"cat", path}, 30000);
      REQUIRE(r.ok());
      return r->exit_code == 0 ? r->output : "(exit " + std::to_string(r->exit_code) + ")";
    };
    CHECK(cat("/etc/hello") == "hello\n");
    CHECK(cat("/etc/added") == "upper\n");
    CHECK(cat("/etc/gone") == "(exit 1)");
    CHECK(cat("/data/new") == "upper data\n");
    CHECK(cat("/data/old") == "(exit 1)");
    CHECK(cat("/proc/mounts").find("/dev/vda / ext4 rw") != std::string::npos);
    auto write = agent->Exec({"sh", "-c", "echo kept > /root/kept"}, 30000);
    REQUIRE(write.ok());
    CHECK(write->exit_code == 0);
    REQUIRE(testing::WaitModulesLoaded(*agent));
    CHECK(PowersOffOnButton(*image_vm, 60000));
    CHECK(StopQemu(*image_vm, 0, 3000).ok());
  }
  {
    INFO("9p guest, console: " << Slurp(tree_vm->console_log()));
    auto lines = ReadPortLines(port, "end 3", 300000);
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    INFO(all);
    // Started three times, each with the port's device and the agent's verb.
    for (int n = 1; n <= 3; ++n) {
      auto start = std::find_if(lines.begin(), lines.end(),
                                [&](const std::string& l) { return l.rfind("start " + std::to_string(n) + " ", 0) == 0; });
      REQUIRE(start != lines.end());
      CHECK(start->find(" __guest-agent /dev/vport") != std::string::npos);
    }
    CHECK(all.find("bridge and veth: ok\n") != std::string::npos);
    CHECK(all.find("nft rules: 2\n") != std::string::npos);
    CHECK(all.find("tun: ok\n") != std::string::npos);
    CHECK(all.find("overlay: ok\n") != std::string::npos);
    CHECK(all.find("root writable: ok\n") != std::string::npos);
    CHECK(all.find("lo: up\n") != std::string::npos);
    CHECK(all.find("mounted /dev/pts devpts\n") != std::string::npos);
    CHECK(all.find("mounted /dev/shm tmpfs\n") != std::string::npos);
    CHECK(all.find("mounted /tmp tmpfs\n") != std::string::npos);
    CHECK(all.find("mounted /run tmpfs\n") != std::string::npos);
    CHECK(all.find("mounted /sys/fs/cgroup cgroup2\n") != std::string::npos);
    CHECK(all.find("pid1 init\n") != std::string::npos);
    // The background modules waited for the agent's identity, then loaded virtio_net first.
    std::string console = Slurp(tree_vm->console_log());
    size_t identity = console.find("the agent took on the VM's identity: loading the rest");
    CHECK(identity != std::string::npos);
    CHECK(console.find("modules (net)", identity) != std::string::npos);
    CHECK(console.find("no identity from the agent") == std::string::npos);
    // The overlay's upper is the guest's own: the host's /etc is untouched.
    CHECK_FALSE(fs::exists("/etc/lab-written"));
    ::close(port);
    CHECK(PowersOffOnButton(*tree_vm, 60000));
    CHECK(StopQemu(*tree_vm, 0, 3000).ok());
  }

  // The image guest's write survived in its qcow2; the image's disk did not change.
  auto second = StartQemu(image);
  REQUIRE(second.ok());
  {
    INFO("image guest, second boot, console: " << Slurp(second->console_log()));
    auto agent = AgentClient::Connect(second->agent_socket(), 5000);
    REQUIRE(agent.ok());
    REQUIRE(agent->Ping(180000).ok());
    auto kept = agent->Exec({"cat", "/root/kept"}, 30000);
    REQUIRE(kept.ok());
    CHECK(kept->output == "kept\n");
    // pid 1 powers off on SIGTERM too (what a shutdown inside the guest sends it).
    auto term = agent->Exec({"kill", "-TERM", "1"}, 30000);
    REQUIRE(term.ok());
    CHECK(ExitsByItself(*second, 60000));
  }
  CHECK(StopQemu(*second, 0, 3000).ok());
  CHECK(Sha256(*raw) == raw_hash);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lab::hv::qemu
