// Hyper-V's run-time operations on a qemu VM (hv/qemu/control.h): the QMP side against a fake
// monitor that reads what arrives with SCM_RIGHTS, taps in a private network namespace, and one
// real guest taken through hotplug, balloon, Save-VM and Start-VM from the file, checkpoints and a
// live migration.
#include "hv/qemu/control.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <optional>
#include <thread>

#include "hv/kernel/doctor.h"
#include "hv/kernel/netlink.h"
#include "hv/qemu/agent_client.h"
#include "hv/qemu/command.h"
#include "hv/qemu/initramfs.h"
#include "hv/qemu/kernel.h"
#include "tests/support.h"

namespace lab::hv::qemu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

/// A fake QEMU monitor on one end of a socketpair that reads with recvmsg, so it sees the fds a
/// message brings. It greets, then answers each command with the next of its scripted replies
/// (the last one repeats; "{id}" is the request's id, "{job}" the last "job-id" it was given; a
/// command without a script is answered {}).
struct FakeMonitor {
  struct Received {
    json request;
    int fd = -1;  // the fd that came with it (the fake's own copy), -1 for none
  };
  int fds[2];
  std::thread thread;
  std::mutex mu;
  std::vector<Received> received;

  using Script = std::map<std::string, std::vector<std::string>>;
  explicit FakeMonitor(Script script) {
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    thread = std::thread([this, script]() mutable {
      auto send = [&](const std::string& s) { (void)!::write(fds[1], (s + "\n").data(), s.size() + 1); };
      send(R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}})");
      std::string buf;
      int pending_fd = -1;
      std::string job;
      for (;;) {
        char data[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
        iovec iov{data, sizeof data};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n = ::recvmsg(fds[1], &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0) break;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&pending_fd, CMSG_DATA(c), sizeof(int));
        buf.append(data, static_cast<size_t>(n));
        for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
          json req = json::parse(buf.substr(0, nl));
          buf.erase(0, nl + 1);
          {
            std::lock_guard<std::mutex> lock(mu);
            received.push_back({req, std::exchange(pending_fd, -1)});
          }
          std::string command = req["execute"];
          if (req.contains("arguments") && req["arguments"].contains("job-id")) job = req["arguments"]["job-id"];
          auto& replies = script[command];
          std::string reply = replies.empty() ? R"({"return": {}, "id": {id}})" : replies.front();
          if (replies.size() > 1) replies.erase(replies.begin());
          for (size_t at; (at = reply.find("{id}")) != std::string::npos;) reply.replace(at, 4, req["id"].dump());
          for (size_t at; (at = reply.find("{job}")) != std::string::npos;) reply.replace(at, 5, job);
          json one = json::parse(reply, nullptr, false);  // a script may spread one reply over lines
          send(one.is_discarded() ? reply : one.dump());
        }
      }
    });
  }
  ~FakeMonitor() {
    ::shutdown(fds[1], SHUT_RDWR);
    thread.join();
    ::close(fds[1]);
    for (auto& r : received)
      if (r.fd >= 0) ::close(r.fd);
  }
  QmpClient Client() {
    auto qmp = QmpClient::Adopt(fds[0], 2000);
    REQUIRE(qmp.ok());
    return std::move(qmp).value();
  }
  std::vector<std::string> Commands() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> out;
    for (const auto& r : received) out.push_back(r.request["execute"]);
    return out;
  }
  Received At(const std::string& command) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& r : received)
      if (r.request["execute"] == command) return r;
    FAIL("the monitor never received " << command);
    return {};
  }
};

bool SameFile(int a, int b) {
  struct stat x {}, y {};
  return ::fstat(a, &x) == 0 && ::fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

TEST_CASE("Plugging an adapter passes its tap fd to QEMU with getfd, then adds the netdev and the device on its root port", "[hv][qemu]") {
  FakeMonitor monitor({});
  auto qmp = monitor.Client();
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  NicAtStart nic{"nlan", pipe_fds[0], "52:54:00:aa:bb:cc", 3};
  REQUIRE(PlugNic(qmp, nic).ok());
  CHECK(monitor.Commands() == std::vector<std::string>{"qmp_capabilities", "getfd", "netdev_add", "device_add"});
  auto getfd = monitor.At("getfd");
  CHECK(getfd.request["arguments"]["fdname"] == "nlan");
  REQUIRE(getfd.fd >= 0);
  CHECK(SameFile(getfd.fd, pipe_fds[0]));  // the very file, duplicated by the kernel
  CHECK(monitor.At("netdev_add").fd == -1);   // only getfd brings an fd
  CHECK(monitor.At("netdev_add").request["arguments"] ==
        json({{"type", "tap"}, {"id", "nlan"}, {"fd", "nlan"}, {"vhost", false}}));
  CHECK(monitor.At("device_add").request["arguments"] == json({{"driver", "virtio-net-pci"},
                                                               {"id", "nlan"},
                                                               {"netdev", "nlan"},
                                                               {"mac", "52:54:00:aa:bb:cc"},
                                                               {"bus", "rp3"}}));
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST_CASE("An adapter QEMU refuses to add leaves no netdev behind and the error names the operation", "[hv][qemu]") {
  FakeMonitor monitor(FakeMonitor::Script{{"device_add", {R"({"error": {"class": "GenericError", "desc": "Bus 'rp9' not found"}, "id": {id}})"}}});
  auto qmp = monitor.Client();
  NicAtStart nic{"nwan", 0, "52:54:00:00:00:01", 9};  // stdin serves as the fd
  auto st = PlugNic(qmp, nic);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message() == "Add-VMNetworkAdapter nwan: QMP device_add: GenericError: Bus 'rp9' not found");
  CHECK(monitor.Commands().back() == "netdev_del");
  CHECK(monitor.At("netdev_del").request["arguments"]["id"] == "nwan");
  CHECK_FALSE(PlugNic(qmp, NicAtStart{"nx", -1, "52:54:00:00:00:02", 1}).ok());  // no fd: refused before QEMU
}

TEST_CASE("Unplugging waits for DEVICE_DELETED of the adapter itself and says when the guest does not release it", "[hv][qemu]") {
  FakeMonitor monitor({{"device_del",
                        {R"({"return": {}, "id": {id}})"
                         "\n"
                         R"({"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/nlan/virtio-backend"}})"
                         "\n"
                         R"({"event": "DEVICE_DELETED", "data": {"device": "nlan", "path": "/machine/peripheral/nlan"}})",
                         R"({"return": {}, "id": {id}})"}}});
  auto qmp = monitor.Client();
  REQUIRE(UnplugNic(qmp, "nlan", 2000).ok());
  CHECK(monitor.Commands().back() == "netdev_del");
  // The second device_del is acknowledged but no event follows: the guest keeps the device.
  auto stuck = UnplugNic(qmp, "nlan", 200);
  REQUIRE_FALSE(stuck.ok());
  CHECK(stuck.message().find("Remove-VMNetworkAdapter nlan: the guest did not release the adapter within 200 ms") == 0);
  CHECK(monitor.Commands().back() == "device_del");  // netdev_del not sent while the device stays
}

TEST_CASE("A checkpoint job is waited for until it concludes, its error reported and the job dismissed", "[hv][qemu]") {
  FakeMonitor monitor({{"query-jobs",
                        {R"({"return": [{"id": "other", "status": "concluded", "type": "snapshot-save"},
                                        {"id": "{job}", "status": "running", "type": "snapshot-save"}], "id": {id}})",
                         R"({"return": [{"id": "{job}", "status": "concluded", "type": "snapshot-save",
                             "error": "Snapshot 'c1' already exists in one or more devices"}], "id": {id}})",
                         R"({"return": [{"id": "{job}", "status": "concluded", "type": "snapshot-load"}], "id": {id}})",
                         R"({"return": [], "id": {id}})"}}});
  auto qmp = monitor.Client();
  auto refused = SaveCheckpoint(qmp, "c1", 2000);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message() == "Checkpoint-VM c1: QMP snapshot-save: Snapshot 'c1' already exists in one or more devices");
  auto save = monitor.At("snapshot-save").request["arguments"];
  CHECK(save["tag"] == "c1");
  CHECK(save["vmstate"] == "disk");  // memory state in the VM's own disk
  CHECK(save["devices"] == json::array({"disk"}));
  CHECK(monitor.Commands() == std::vector<std::string>{"qmp_capabilities", "snapshot-save", "query-jobs", "query-jobs",
                                                       "job-dismiss"});
  CHECK(monitor.At("job-dismiss").request["arguments"]["id"] == save["job-id"]);

  REQUIRE(LoadCheckpoint(qmp, "c1", 2000).ok());
  auto gone = DeleteCheckpoint(qmp, "c1", 2000);  // query-jobs no longer lists it
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.message().find("Remove-VMCheckpoint c1: QMP snapshot-delete: job ") == 0);
}

TEST_CASE("Save-VM migrates to a file written aside and renamed, and a failure runs the VM again", "[hv][qemu]") {
  FakeMonitor monitor({{"query-status", {R"({"return": {"status": "running", "running": true}, "id": {id}})"}},
                       {"query-migrate", {R"({"return": {"status": "active"}, "id": {id}})",
                                          R"({"return": {"status": "failed", "error-desc": "Unable to write to command: Broken pipe"}, "id": {id}})"}}});
  auto qmp = monitor.Client();
  auto st = SaveToFile(qmp, "/var/lib/x/it's.state", 2000);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message() ==
        "Save-VM: QMP migrate to /var/lib/x/it's.state: migration failed: Unable to write to command: Broken pipe");
  CHECK(monitor.At("migrate").request["arguments"]["uri"] ==
        R"(exec:cat > '/var/lib/x/it'\''s.state.part' && mv '/var/lib/x/it'\''s.state.part' '/var/lib/x/it'\''s.state')");
  CHECK(monitor.At("migrate-set-parameters").request["arguments"]["max-bandwidth"].get<int64_t>() > (int64_t{1} << 30));
  auto commands = monitor.Commands();
  CHECK(commands[2] == "stop");  // paused before the state is written
  CHECK(commands.back() == "cont");  // and running again after the failure
  CHECK(IncomingFromFile("/var/lib/x/it's.state") == R"(exec:cat '/var/lib/x/it'\''s.state')");
}

TEST_CASE("Move-VM reports the source's total time and downtime once the destination runs", "[hv][qemu]") {
  FakeMonitor source({{"query-migrate", {R"({"return": {"status": "active"}, "id": {id}})",
                                         R"({"return": {"status": "completed", "total-time": 412, "downtime": 57,
                                            "setup-time": 3, "ram": {"transferred": 1234}}, "id": {id}})"}}});
  FakeMonitor destination({{"query-status", {R"({"return": {"status": "inmigrate", "running": false}, "id": {id}})",
                                             R"({"return": {"status": "running", "running": true}, "id": {id}})"}}});
  auto from = source.Client();
  auto to = destination.Client();
  auto stats = MigrateTo(from, to, "unix:/run/lab/x/migrate.sock", 2000);
  INFO(stats.message());
  REQUIRE(stats.ok());
  CHECK(stats->total_ms == 412);
  CHECK(stats->downtime_ms == 57);
  CHECK(stats->transferred == 1234);
  CHECK(destination.At("migrate-incoming").request["arguments"]["uri"] == "unix:/run/lab/x/migrate.sock");
  CHECK(source.At("migrate").request["arguments"]["uri"] == "unix:/run/lab/x/migrate.sock");
  CHECK(destination.Commands().back() == "query-status");
}

// ---- the real kernel and a real guest ----

/// A fresh, empty network namespace, made by a helper thread so the test's threads never leave
/// the machine's namespace; OpenTap reaches it through /proc/self/fd/N.
kernel::NetNs ScratchNs() {
  Result<kernel::NetNs> ns = Status::Error("not created");
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      ns = ErrnoStatus("unshare(CLONE_NEWNET)");
      return;
    }
    ns = kernel::NetNs::Current();
  }).join();
  REQUIRE(ns.ok());
  return std::move(ns).value();
}

std::string PathOf(const kernel::NetNs& ns) { return "/proc/self/fd/" + std::to_string(ns.fd()); }

ino_t ThreadNetNs() {
  struct stat st {};
  REQUIRE(::stat("/proc/thread-self/ns/net", &st) == 0);
  return st.st_ino;
}

std::optional<kernel::LinkInfo> Link(const kernel::NetNs& ns, const std::string& name) {
  auto nl = kernel::Netlink::In(ns);
  REQUIRE(nl.ok());
  auto link = nl->FindLink(name);
  REQUIRE(link.ok());
  return *link;
}

TEST_CASE("A tap is made in the owner's namespace with its altname, leaves the caller's namespace alone and goes with its last holder", "[root][hv][qemu]") {
  LAB_REQUIRE_ROOT("making taps");
  ino_t before = ThreadNetNs();
  auto ns = ScratchNs();
  auto tap = OpenTap(PathOf(ns), "tlab0", "lab.t20.nic0");
  INFO(tap.message());
  REQUIRE(tap.ok());
  CHECK(ThreadNetNs() == before);
  CHECK(::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC);  // nothing lab runs inherits it by accident
  auto link = Link(ns, "lab.t20.nic0");  // found by its ownership mark
  REQUIRE(link.has_value());
  CHECK(link->name == "tlab0");
  CHECK(link->index == tap->ifindex());
  CHECK(std::find(link->altnames.begin(), link->altnames.end(), "lab.t20.nic0") != link->altnames.end());

  auto twice = OpenTap(PathOf(ns), "tlab0", "lab.t20.nic1");
  REQUIRE_FALSE(twice.ok());
  CHECK(twice.message().find("tap tlab0: a link of that name already exists") == 0);
  CHECK_FALSE(OpenTap("/nonexistent/ns", "tlab1", "").ok());

  tap->Close();  // the last holder: the kernel deletes a tap that is not persistent
  CHECK_FALSE(Link(ns, "tlab0").has_value());
}

/// The guest's answer to a shell line (busybox sh), which must succeed.
std::string Sh(AgentClient& agent, const std::string& script, int timeout_ms = 60000) {
  auto r = agent.Exec({"sh", "-c", script}, timeout_ms);
  INFO(script);
  REQUIRE(r.ok());
  INFO(r->output);
  REQUIRE(r->exit_code == 0);
  return r->output;
}

/// Until `script` succeeds in the guest, at most `timeout_ms`.
bool ShUntil(AgentClient& agent, const std::string& script, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto r = agent.Exec({"sh", "-c", script}, 30000);
    if (r.ok() && r->exit_code == 0) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

/// The name of the guest's NIC with `mac`, "" when there is none.
std::string NicWithMac(AgentClient& agent, const std::string& mac) {
  std::string out = Sh(agent, "for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = " + mac +
                                  " ] && echo ${i##*/}; done; true");
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

double Uptime(AgentClient& agent) { return std::stod(Sh(agent, "cut -d' ' -f1 /proc/uptime")); }

/// The tap `name` in `ns`, up with 10.20.0.1/24: the host end the guest pings.
Tap HostTap(const kernel::NetNs& ns, const std::string& name) {
  auto tap = OpenTap(PathOf(ns), name, "lab.t20." + name);
  INFO(tap.message());
  REQUIRE(tap.ok());
  auto nl = kernel::Netlink::In(ns);
  REQUIRE(nl.ok());
  REQUIRE(nl->SetUp(name).ok());
  REQUIRE(nl->AddAddress(name, *Cidr::Parse("10.20.0.1/24")).ok());
  return std::move(tap).value();
}

TEST_CASE("A running guest gets and loses an adapter, balloons, is saved to a file and started from it, reverts to a checkpoint and moves live", "[root][hv][qemu]") {
  LAB_REQUIRE_ROOT("booting a qemu guest");
  if (FindInPath("qemu-system-x86_64").empty() || FindInPath("qemu-img").empty()) {
    WARN("SKIP: qemu-system-x86_64 or qemu-img is not installed (apt-get install qemu-system-x86 qemu-utils)");
    return;
  }
  if (StaticBusybox().empty()) {
    WARN("SKIP: the guest needs busybox-static's applets (apt-get install busybox-static)");
    return;
  }
  const char* cache_env = std::getenv("LAB_TEST_KERNEL_CACHE");
  auto kernel = FetchKernel(cache_env ? cache_env : "/var/tmp/lab-test-kernels");
  if (!kernel.ok()) {
    WARN("SKIP: no guest kernel: " + kernel.message());
    return;
  }
  std::string dir = testing::TempDir("lab-qemu-control");
  std::string initrd = dir + "/initrd.gz";
  REQUIRE(BuildInitramfs(*kernel, std::string(LAB_BINARY_DIR) + "/lab-guest-init", StaticBusybox(), initrd).ok());
  // The balloon driver, appended as a second cpio (the kernel unpacks concatenated archives) for
  // an initramfs that does not carry it; the guest loads it below unless its init did.
  auto balloon = ModuleClosure(kernel->modules, {"virtio_balloon"});
  REQUIRE(balloon.ok());
  std::vector<CpioEntry> extra;
  std::string insmod = "true";
  for (const auto& m : *balloon) {
    std::ifstream in(kernel->modules + "/" + m, std::ios::binary);
    std::stringstream body;
    body << in.rdbuf();
    std::string path = "lib/modules/" + kernel->release + "/" + m;
    extra.push_back({CpioEntry::Kind::kFile, path, body.str(), 0644});
    // Loaded already (an init that loads it in the background may be at it right now) is fine.
    std::string loaded = "[ -d /sys/module/$(basename " + m + " .ko | tr - _) ]";
    insmod += "; " + loaded + " || insmod /" + path + " || " + loaded;
  }
  REQUIRE(WriteCpioGz(extra, dir + "/extra.gz").ok());
  {
    std::ifstream more(dir + "/extra.gz", std::ios::binary);
    std::ofstream out(initrd, std::ios::binary | std::ios::app);
    out << more.rdbuf();
  }
  std::string disk = dir + "/disk.qcow2";
  auto made = RunCommand({"qemu-img", "create", "-f", "qcow2", disk, "64M"}, 30000);
  REQUIRE(made.ok());
  REQUIRE(made->exit_code == 0);

  bool kvm = kernel::JudgeKvm(kernel::ProbeKvm(2000)).state == kernel::kCapUsable;
  QemuConfig base;
  base.accel = kvm ? Accel::kKvm : Accel::kTcg;
  base.memory_mib = 384;
  base.kernel = kernel->vmlinux;
  base.initrd = initrd;
  // A blank qcow2 as the VM's disk (checkpoints need its block node); an init that tries it as
  // its root finds no ext4 there and stays in the initramfs, where busybox is.
  base.root = RootKind::kDisk;
  base.disk = disk;
  base.hotplug_ports = 2;
  base.nice = 10;
  auto in = [&](const std::string& name) {
    QemuConfig c = base;
    c.run_dir = dir + "/" + name;
    fs::create_directories(c.run_dir);
    return c;
  };
  const std::string mac = "52:54:00:20:20:01";
  std::vector<QemuProcess> started;
  // A failed REQUIRE leaves nothing running: the QEMUs this test started go by their pids.
  struct StopAll {
    std::vector<QemuProcess>& started;
    ~StopAll() {
      for (const auto& p : started) (void)StopQemu(p, 0, 3000);
    }
  } stop_all{started};
  auto start = [&](const QemuConfig& c) {
    auto p = StartQemu(c);
    INFO(p.message());
    REQUIRE(p.ok());
    started.push_back(*p);
    return *p;
  };
  auto connect = [](const QemuProcess& p) {
    auto qmp = QmpClient::Connect(p.qmp_socket(), 5000);
    INFO(qmp.message());
    REQUIRE(qmp.ok());
    return std::move(qmp).value();
  };
  // Connected as soon as QEMU runs, before any saved state loads: the state says the host was
  // connected, and a QEMU whose agent socket has no client then tells the guest it hung up, whose
  // agent reopens its port, and a request that lands in that instant is lost with the port's data.
  auto agent_of = [](const QemuProcess& p) {
    auto agent = AgentClient::Connect(p.agent_socket(), 5000);
    INFO(agent.message());
    REQUIRE(agent.ok());
    return std::move(agent).value();
  };
  auto ping = [](AgentClient& agent, const QemuProcess& p, int timeout_ms) {
    auto reply = agent.Ping(timeout_ms);
    INFO(p.console_log() << ": " << reply.message());
    REQUIRE(reply.ok());
  };
  auto ns = ScratchNs();

  // Boot.
  QemuProcess a = start(in("a"));
  auto qmp_a = connect(a);
  auto agent_a = agent_of(a);
  ping(agent_a, a, 180000);

  // Add-VMNetworkAdapter while it runs: the guest sees the MAC and pings the tap's namespace.
  {
    Tap tap = HostTap(ns, "tq0");
    REQUIRE(PlugNic(qmp_a, NicAtStart{"nq0", tap.fd(), mac, 1}).ok());
  }  // lab's copy closed: QEMU holds the tap alone
  REQUIRE(Link(ns, "tq0").has_value());
  REQUIRE(ShUntil(agent_a, "for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = " + mac + " ] && exit 0; done; exit 1", 60000));
  std::string nic = NicWithMac(agent_a, mac);
  REQUIRE_FALSE(nic.empty());
  Sh(agent_a, "ip link set " + nic + " up && ip addr add 10.20.0.2/24 dev " + nic);
  CHECK(ShUntil(agent_a, "ping -c 1 -W 2 10.20.0.1", 30000));
  CHECK(Link(ns, "tq0")->rx_packets > 0);  // the guest's frames reached the namespace

  // Remove-VMNetworkAdapter: the NIC leaves the guest, and with QEMU's last fd the tap goes.
  auto unplugged = UnplugNic(qmp_a, "nq0", 120000);
  INFO(unplugged.message());
  REQUIRE(unplugged.ok());
  CHECK(NicWithMac(agent_a, mac).empty());
  CHECK_FALSE(Link(ns, "tq0").has_value());

  // Dynamic memory: the balloon takes 128 MiB and the guest's MemTotal follows.
  Sh(agent_a, insmod);
  auto mem_total_kib = [&](AgentClient& agent) {
    return std::stoull(Sh(agent, "awk '/^MemTotal/ {print $2}' /proc/meminfo"));
  };
  uint64_t total_before = mem_total_kib(agent_a);
  REQUIRE(SetBalloon(qmp_a, uint64_t{256} << 20).ok());
  uint64_t actual = 0;
  for (int i = 0; i < 300 && actual != uint64_t{256} << 20; ++i) {
    auto q = QueryBalloon(qmp_a);
    REQUIRE(q.ok());
    actual = *q;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(actual == uint64_t{256} << 20);
  uint64_t total_ballooned = mem_total_kib(agent_a);
  CHECK(total_ballooned + 120 * 1024 <= total_before);
  REQUIRE(SetBalloon(qmp_a, uint64_t{384} << 20).ok());

  // Save-VM with an adapter and a running process, then Start-VM from the file with a new tap.
  {
    Tap tap = HostTap(ns, "tq0");
    REQUIRE(PlugNic(qmp_a, NicAtStart{"nq0", tap.fd(), mac, 1}).ok());
  }
  REQUIRE(ShUntil(agent_a, "for i in /sys/class/net/*; do [ \"$(cat $i/address)\" = " + mac + " ] && exit 0; done; exit 1", 60000));
  nic = NicWithMac(agent_a, mac);
  Sh(agent_a, "ip link set " + nic + " up && ip addr add 10.20.0.2/24 dev " + nic);
  std::string sleeper = Sh(agent_a, "sleep 100000 </dev/null >/dev/null 2>&1 & echo $!");
  sleeper.pop_back();
  double uptime_saved = Uptime(agent_a);
  std::string state = dir + "/vm.state";
  auto saved = SaveToFile(qmp_a, state, 120000);
  INFO(saved.message());
  REQUIRE(saved.ok());
  CHECK(fs::file_size(state) > 1000000);
  CHECK_FALSE(fs::exists(state + ".part"));
  { QmpClient gone = std::move(qmp_a); }  // QEMU's monitor serves one client: StopQemu's quit
  auto stopped_a = StopQemu(a, 0, 5000);
  INFO(stopped_a.message());
  REQUIRE(stopped_a.ok());
  CHECK_FALSE(Link(ns, "tq0").has_value());  // QEMU died: its tap with it

  QemuConfig restore = in("b");
  Tap tap_b = HostTap(ns, "tq0");
  restore.nics = {NicAtStart{"nq0", tap_b.fd(), mac, 1}};
  restore.incoming = IncomingFromFile(state);
  QemuProcess b = start(restore);
  tap_b.Close();
  auto qmp_b = connect(b);
  auto agent_b = agent_of(b);
  auto resumed = Resume(qmp_b, 60000);
  INFO(resumed.message());
  REQUIRE(resumed.ok());
  ping(agent_b, b, 60000);
  CHECK(Sh(agent_b, "kill -0 " + sleeper + " && echo alive") == "alive\n");
  double uptime_restored = Uptime(agent_b);
  CHECK(uptime_restored >= uptime_saved);  // the same boot going on, not a new one
  CHECK(ShUntil(agent_b, "ping -c 1 -W 2 10.20.0.1", 30000));  // its adapter on the new tap

  // Checkpoint-VM, a write after it, Restore-VMCheckpoint: the disk is as it was.
  auto write = [&](AgentClient& agent, const std::string& text) {
    Sh(agent, "printf '%-32s' " + text + " | dd of=/dev/vda bs=32 count=1 conv=fsync 2>/dev/null");
  };
  auto read = [&](AgentClient& agent) {
    return Sh(agent, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=32 count=1 2>/dev/null | tr -d ' '");
  };
  write(agent_b, "before-checkpoint");
  auto checkpoint = SaveCheckpoint(qmp_b, "c1", 120000);
  INFO(checkpoint.message());
  REQUIRE(checkpoint.ok());
  auto list = ListCheckpoints(qmp_b);
  REQUIRE(list.ok());
  CHECK(*list == std::vector<std::string>{"c1"});
  CHECK_FALSE(SaveCheckpoint(qmp_b, "c1", 60000).ok());  // the name is taken
  write(agent_b, "after-checkpoint");
  CHECK(read(agent_b) == "after-checkpoint");
  auto restored = LoadCheckpoint(qmp_b, "c1", 120000);
  INFO(restored.message());
  REQUIRE(restored.ok());
  CHECK(read(agent_b) == "before-checkpoint");
  CHECK(Sh(agent_b, "kill -0 " + sleeper + " && echo alive") == "alive\n");
  REQUIRE(DeleteCheckpoint(qmp_b, "c1", 60000).ok());
  list = ListCheckpoints(qmp_b);
  REQUIRE(list.ok());
  CHECK(list->empty());

  // Move-VM: to a QEMU waiting for it, its adapter's tap in another namespace.
  auto other_ns = ScratchNs();
  QemuConfig dest = in("c");
  Tap tap_c = HostTap(other_ns, "tq0");
  dest.nics = {NicAtStart{"nq0", tap_c.fd(), mac, 1}};
  dest.incoming = "defer";
  QemuProcess c = start(dest);
  tap_c.Close();
  auto qmp_c = connect(c);
  auto agent_c = agent_of(c);
  auto moved = MigrateTo(qmp_b, qmp_c, MigrationUri(b.run_dir), 120000);
  INFO(moved.message());
  REQUIRE(moved.ok());
  CHECK_FALSE(fs::exists(b.run_dir + "/migrate.sock"));
  CHECK(moved->total_ms > 0);
  CHECK(moved->downtime_ms >= 0);
  CHECK(moved->downtime_ms <= moved->total_ms);
  WARN("Move-VM: total " << moved->total_ms << " ms, downtime " << moved->downtime_ms << " ms");
  { QmpClient gone = std::move(qmp_b); }
  auto stopped_b = StopQemu(b, 0, 5000);
  INFO(stopped_b.message());
  REQUIRE(stopped_b.ok());
  ping(agent_c, c, 60000);
  CHECK(Sh(agent_c, "kill -0 " + sleeper + " && echo alive") == "alive\n");
  CHECK(Uptime(agent_c) >= uptime_restored);
  CHECK(ShUntil(agent_c, "ip neigh flush dev " + nic + "; ping -c 1 -W 2 10.20.0.1", 30000));
  CHECK(Link(other_ns, "tq0")->rx_packets > 0);

  // QEMU killed outright: its tap, held by nothing else, goes with it.
  REQUIRE(Link(other_ns, "tq0").has_value());
  REQUIRE(IsRunning(c));
  ::kill(c.pid, SIGKILL);
  { QmpClient gone = std::move(qmp_c); }
  for (const auto& p : started) REQUIRE(StopQemu(p, 0, 5000).ok());  // reaps it
  CHECK_FALSE(IsRunning(c));
  CHECK_FALSE(Link(ns, "tq0").has_value());
  CHECK_FALSE(Link(other_ns, "tq0").has_value());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace lab::hv::qemu
