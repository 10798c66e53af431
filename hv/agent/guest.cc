#include "hv/agent/guest.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
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

/// How this agent was started, with __guest-exec for __guest-agent: on an image, lab runs through
/// its own dynamic loader (/proc/self/exe is the loader, which takes the program and its
/// arguments after its own options).
std::vector<std::string> SelfCommand() {
  std::vector<std::string> words;
  std::string cmdline = Slurp("/proc/self/cmdline");
  bool found = false;
  for (size_t at = 0; at < cmdline.size();) {
    size_t end = cmdline.find('\0', at);
    if (end == std::string::npos) end = cmdline.size();
    words.push_back(cmdline.substr(at, end - at));
    if (words.back() == "__guest-agent") {
      words.back() = "__guest-exec";
      found = true;
      break;
    }
    at = end + 1;
  }
  if (!found) words = {"lab", "__guest-exec"};
  return words;
}

/// The hypervisor context a request names (its lab, and the VMs it lives in, this one last).
LabContext GuestContext(const json& ctx, const std::string& init_path) {
  LabContext c;
  c.lab = ctx.value("lab", "");
  c.uid = ctx.value("uid", "");
  c.inside = ctx.value("inside", std::vector<std::string>());
  c.shared_state = ctx.value("shared_state", "");
  c.run_root = "/run/lab";
  c.state_root = "/var/lib/lab";
  c.init_path = init_path;
  return c;
}

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

class Agent {
 public:
  explicit Agent(GuestAgentOptions o) : options_(std::move(o)) {}

  Hypervisor& For(const json& ctx) {
    std::string key = ctx.dump();
    std::lock_guard lock(mu_);
    auto& hv = hypervisors_[key];
    if (!hv) hv = MakeHypervisor(GuestContext(ctx, options_.init_path));
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

  // --- sessions: `lab exec` with its input, output and terminal streamed ------------------------
  // The command runs in a process of its own, `lab __guest-exec` (RunGuestExec), whose stdin,
  // stdout and stderr are a pty's slave (tty) or a socket; the agent holds the other end and
  // relays it as the session's messages.
  struct Session {
    int fd = -1;  // the pty's master, or our end of the socket
    pid_t pid = 0;  // `lab __guest-exec`; 0 when the session goes further in (a thread of ours)
    bool tty = false;
    std::atomic<int> code{125};  // the exit code, when the session went further in
  };

  /// Starts session `id`; its output and end go to `out` from a thread of its own (holding
  /// `working`, so the reaper leaves its child alone).
  void StartSession(const Request& req, int64_t id, Port& out, std::shared_mutex& working) {
    json a = req.args;
    auto refuse = [&](const std::string& why) { out.Reply(WithId(ErrorReply("agent: " + why), id)); };
    PartitionSpec spec;
    try {
      spec = a.at("spec").get<PartitionSpec>();
    } catch (const json::exception& e) {
      return refuse(std::string("a session needs the machine's spec: ") + e.what());
    }
    bool tty = a.value("tty", false);
    int ours = -1, theirs = -1;
    if (tty) {
      winsize ws{};
      ws.ws_row = static_cast<unsigned short>(a.value("rows", 0));
      ws.ws_col = static_cast<unsigned short>(a.value("cols", 0));
      if (::openpty(&ours, &theirs, nullptr, nullptr, ws.ws_row ? &ws : nullptr) != 0)
        return refuse(std::string("openpty: ") + std::strerror(errno));
      ::fcntl(ours, F_SETFD, FD_CLOEXEC);
      ::fcntl(theirs, F_SETFD, FD_CLOEXEC);
      // This pty only carries bytes: the terminal the user types into is the machine's own pty
      // further in (the partition driver's), so this one neither echoes nor edits.
      termios t{};
      if (::tcgetattr(theirs, &t) == 0) {
        ::cfmakeraw(&t);
        ::tcsetattr(theirs, TCSANOW, &t);
      }
    } else {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return refuse(std::string("socketpair: ") + std::strerror(errno));
      ours = sv[0];
      theirs = sv[1];
    }
    auto session = std::make_shared<Session>();
    session->fd = ours;
    session->tty = tty;
    // A machine inside a qemu VM of this guest: the session goes on from here, through this
    // agent's own connection to that VM's agent (QEMU serves one client per agent socket, and
    // this agent holds it).
    std::vector<std::string> home = spec.within;
    if (spec.IsQemu()) home.push_back(spec.name);
    if (home.size() > a.value("ctx", json::object()).value("inside", std::vector<std::string>()).size()) {
      Hypervisor& hv = For(a.value("ctx", json::object()));
      hv::ExecRequest x;
      x.argv = a.value("argv", std::vector<std::string>());
      x.env = a.value("env", std::vector<std::string>());
      x.workdir = a.value("workdir", "");
      x.user = a.value("user", "");
      x.tty = tty;
      x.in_fd = x.out_fd = theirs;
      std::thread([&hv, spec, x, session, theirs, &working] {
        std::shared_lock held(working);
        auto code = hv.Exec(spec, x);
        if (!code) {
          std::string line = "lab: " + code.message() + "\r\n";
          (void)!::write(theirs, line.data(), line.size());
        }
        session->code = code ? *code : 125;
        ::close(theirs);  // the relay below reads the end
      }).detach();
    } else {
      a["init_path"] = options_.init_path;
      // Everything the child needs is made before fork: after it, only async-signal-safe calls.
      std::vector<std::string> env_strings;
      for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "LAB_GUEST_EXEC=", 15) != 0) env_strings.emplace_back(*e);
      env_strings.push_back("LAB_GUEST_EXEC=" + a.dump());
      std::vector<char*> envp;
      for (auto& e : env_strings) envp.push_back(e.data());
      envp.push_back(nullptr);
      std::vector<std::string> self = SelfCommand();
      std::vector<char*> argv;
      for (auto& w : self) argv.push_back(w.data());
      argv.push_back(nullptr);
      pid_t pid = ::fork();
      if (pid == 0) {
        ::setsid();
        if (tty) ::ioctl(theirs, TIOCSCTTY, 0);
        for (int fd = 0; fd < 3; ++fd) ::dup2(theirs, fd);
        ::execve("/proc/self/exe", argv.data(), envp.data());
        ::_exit(127);
      }
      ::close(theirs);
      if (pid < 0) {
        ::close(ours);
        return refuse(std::string("fork: ") + std::strerror(errno));
      }
      session->pid = pid;
    }
    {
      std::lock_guard lock(mu_);
      sessions_[id] = session;
    }
    std::thread([this, session, id, &out, &working] {
      std::shared_lock held(working);
      char buf[16384];
      for (;;) {
        ssize_t n = ::read(session->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // end of file, or EIO: every slave of the pty closed
        out.Reply(OutputMessage(id, std::string_view(buf, static_cast<size_t>(n))));
      }
      int code = session->code;
      if (session->pid > 0) {
        int status = 0;
        while (::waitpid(session->pid, &status, 0) < 0 && errno == EINTR) {
        }
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      {
        std::lock_guard lock(mu_);
        sessions_.erase(id);
      }
      ::close(session->fd);
      out.Reply(SessionEnd(id, code));
    }).detach();
  }

  /// Input and window sizes for a session (no reply); a session that ended is ignored.
  void ToSession(const Request& req, int64_t id) {
    std::shared_ptr<Session> s;
    {
      std::lock_guard lock(mu_);
      auto it = sessions_.find(id);
      if (it == sessions_.end()) return;
      s = it->second;
    }
    if (req.op == "resize") {
      winsize ws{};
      ws.ws_row = static_cast<unsigned short>(req.rows);
      ws.ws_col = static_cast<unsigned short>(req.cols);
      if (s->tty) ::ioctl(s->fd, TIOCSWINSZ, &ws);
    } else if (req.eof) {
      if (s->tty) {
        // This pty is raw: the end of input is the EOF character of the machine's own terminal
        // further in (Ctrl-D, as the user would type it).
        (void)!::write(s->fd, "\x04", 1);
      } else {
        ::shutdown(s->fd, SHUT_WR);
      }
    } else {
      for (size_t done = 0; done < req.data.size();) {
        ssize_t n = ::write(s->fd, req.data.data() + done, req.data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
    }
  }

  /// The host went away: its sessions are hung up (their process groups get SIGHUP).
  void HangUpSessions() {
    std::lock_guard lock(mu_);
    for (auto& [id, s] : sessions_)
      if (s->pid > 0) ::kill(-s->pid, SIGHUP);
  }

  static constexpr const char* kState = "/var/lib/lab";

 private:
  GuestAgentOptions options_;
  std::map<int64_t, std::shared_ptr<Session>> sessions_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Hypervisor>> hypervisors_;
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
      if (pause == 20000) agent.HangUpSessions();  // once, when it goes
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
      if (req->op == "input" || req->op == "resize") {
        agent.ToSession(*req, id);
        continue;
      }
      if (req->op == "session") {
        agent.StartSession(*req, id, out, working);
        continue;
      }
      std::thread([&agent, &out, &working, r = std::move(*req), id] {
        std::shared_lock held(working);
        out.Reply(WithId(agent.Answer(r), id));
      }).detach();
    }
  }
}

int RunGuestExec() {
  const char* payload = std::getenv("LAB_GUEST_EXEC");
  json a = json::parse(payload ? payload : "", nullptr, false);
  if (!a.is_object()) {
    std::fprintf(stderr, "lab: __guest-exec runs a session of the guest agent (LAB_GUEST_EXEC)\n");
    return 125;
  }
  ::unsetenv("LAB_GUEST_EXEC");
  try {
    auto hv = MakeHypervisor(GuestContext(a.value("ctx", json::object()), a.value("init_path", "")));
    hv::ExecRequest x;
    x.argv = a.at("argv").get<std::vector<std::string>>();
    x.env = a.value("env", std::vector<std::string>());
    x.workdir = a.value("workdir", "");
    x.user = a.value("user", "");
    x.tty = a.value("tty", false);
    auto code = hv->Exec(a.at("spec").get<PartitionSpec>(), x);
    if (!code) {
      std::fprintf(stderr, "lab: %s\n", code.message().c_str());
      return 125;
    }
    return *code;
  } catch (const json::exception& e) {
    std::fprintf(stderr, "lab: a malformed session request: %s\n", e.what());
    return 125;
  }
}

}  // namespace lab::hv::agent
