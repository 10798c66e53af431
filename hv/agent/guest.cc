#include "hv/agent/guest.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/agent/exec.h"
#include "hv/agent/protocol.h"
#include "hv/agent/remote.h"
#include "hv/hypervisor.h"

namespace lab::hv::agent {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr long kOverlayMagic = 0x794c7630;
constexpr long k9pMagic = 0x01021997;

std::string Slurp(const std::string& path) {
  auto text = ReadFile(path);
  return text ? *text : std::string();
}

std::string FindPort(const std::string& name) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/sys/class/virtio-ports", ec)) {
    std::string n = Slurp(e.path().string() + "/name");
    while (!n.empty() && (n.back() == '\n' || n.back() == '\0')) n.pop_back();
    if (n == name) return "/dev/" + e.path().filename().string();
  }
  return "";
}

PingReply Ping() {
  PingReply p;
  utsname u{};
  ::uname(&u);
  p.kernel = u.release;
  std::istringstream in(Slurp("/proc/cpuinfo"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) break;
    std::istringstream words(line.substr(colon + 1));
    for (std::string w; words >> w;) p.cpu_flags.push_back(w);
    break;
  }
  p.kvm = ::access("/dev/kvm", F_OK) == 0;
  return p;
}

ExecReply Exec(const std::vector<std::string>& argv) {
  return RunCaptured(argv, [] { ::setsid(); });
}

/// lab's state inside the guest must be a filesystem an overlay can have its upper layer on (the
/// nested VMs' disks): not the guest's overlay root, not 9p.
void PrepareState(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) != 0) return;
  if (static_cast<long>(st.f_type) == kOverlayMagic || static_cast<long>(st.f_type) == k9pMagic) {
    if (::mount("lab-state", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
      std::fprintf(stderr, "lab agent: cannot mount a tmpfs on %s: %s\n", dir.c_str(), std::strerror(errno));
  }
}

class Agent {
 public:
  explicit Agent(GuestAgentOptions o) : options_(std::move(o)) {}

  Hypervisor& For(const json& ctx) {
    std::string key = ctx.dump();
    std::lock_guard lock(mu_);
    auto& hv = hypervisors_[key];
    if (!hv) {
      LabContext c;
      c.lab = ctx.value("lab", "");
      c.uid = ctx.value("uid", "");
      c.inside = ctx.value("inside", std::vector<std::string>());
      c.shared_state = ctx.value("shared_state", "");
      c.run_root = "/run/lab";
      c.state_root = kState;
      c.init_path = options_.init_path;
      hv = MakeHypervisor(c);
    }
    return *hv;
  }

  json Answer(const Request& req) {
    if (req.op == "ping") return ToJson(Ping());
    if (req.op == "exec") return ToJson(Exec(req.argv));
    json ctx = req.args.value("ctx", json::object());
    if (ctx.value("lab", "").empty() || ctx.value("uid", "").empty())
      return ErrorReply("agent: an hv request must name its lab (ctx)");
    auto r = Dispatch(For(ctx), req.method, req.args);
    if (!r) return ErrorReply(r.message());
    return HvReply(*r);
  }

  static constexpr const char* kState = "/var/lib/lab";

 private:
  GuestAgentOptions options_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Hypervisor>> hypervisors_;
};

/// The port, written by every request's thread: one reply line at a time.
class Port {
 public:
  explicit Port(int fd) : fd_(fd) {}
  void Reply(const json& reply) {
    // Command output may be any bytes: invalid UTF-8 is replaced rather than failing the reply.
    std::string line = reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard lock(mu_);
    size_t done = 0;
    while (done < line.size()) {
      ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // the host is gone: it asks again when it comes back
      done += static_cast<size_t>(n);
    }
  }

 private:
  int fd_;
  std::mutex mu_;
};

}  // namespace

int RunGuestAgent(const GuestAgentOptions& options) {
  std::string port = options.port;
  for (int i = 0; port.empty() && i < 500; ++i) {
    port = FindPort(kPortName);
    if (port.empty()) ::usleep(20000);
  }
  if (port.empty()) {
    std::fprintf(stderr, "lab agent: no virtio-serial port named %s\n", kPortName);
    return 1;
  }
  PrepareState(Agent::kState);
  Agent agent(options);
  std::fprintf(stderr, "lab agent: serving on %s\n", port.c_str());
  // Opened once, read-write, for the agent's whole life: the host comes and goes (each lab
  // command connects anew), which the port shows as end of file until it is back.
  int fd = -1;
  while ((fd = ::open(port.c_str(), O_RDWR | O_CLOEXEC)) < 0) ::usleep(250000);
  Port out(fd);
  // Requests are answered each in a thread of its own (a nested VM that boots for minutes does
  // not hold back what is made beside it); ping in line. Children that daemons of the partition
  // driver leave are reaped only while no request runs: a request waits for its own children by
  // pid, which a reaper in between would take from it.
  std::shared_mutex working;
  useconds_t pause = 20000;
  std::string pending;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) < 0 && errno != EINTR) ::usleep(pause);
    if (working.try_lock()) {
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      working.unlock();
    }
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char buf[65536];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      // The host is not connected: wait for it, a little longer each time.
      pending.clear();
      ::usleep(pause);
      pause = std::min<useconds_t>(pause * 2, 250000);
      continue;
    }
    pause = 20000;
    pending.append(buf, static_cast<size_t>(n));
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty()) continue;
      int64_t id = RequestId(line);
      auto req = ParseRequest(line);
      if (!req.ok()) {
        out.Reply(WithId(ErrorReply(req.message()), id));
        continue;
      }
      if (req->op == "ping") {
        out.Reply(WithId(ToJson(Ping()), id));
        continue;
      }
      std::thread([&agent, &out, &working, r = std::move(*req), id] {
        std::shared_lock held(working);
        out.Reply(WithId(agent.Answer(r), id));
      }).detach();
    }
  }
}

}  // namespace lab::hv::agent
