// Hyper-V's run-time operations on a qemu VM (hv/qemu/control.h): the QMP side against a fake
// monitor that reads what arrives with SCM_RIGHTS, taps in a private network namespace, and one
// real guest taken through hotplug, balloon, Save-VM and Start-VM from the file, checkpoints and a
// live migration.
#include "hv/qemu/control.h"

#include <fcntl.h>
#include <sched.h>
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

}  // namespace
}  // namespace lab::hv::qemu
