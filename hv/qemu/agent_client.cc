#include "hv/qemu/agent_client.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "hv/kernel/terminal.h"

namespace lab::hv::qemu {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct AgentClient::Conn {
  explicit Conn(int f) : fd(f) {}
  ~Conn() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
  std::mutex send_mu;  // one request line at a time on the socket
  std::mutex mu;       // everything below
  std::condition_variable cv;
  int64_t next_id = 1;
  std::map<int64_t, std::optional<json>> calls;  // waiting calls; a value once the reply came
  std::map<int64_t, std::deque<json>> sessions;  // open sessions: their messages not yet taken
  bool reading = false;                          // one waiting call reads the socket for all
  std::string buffer;                            // what came after the last full line
  std::string broken;                            // why the connection is unusable, "" while it is fine

  /// Waits up to `slice` ms for something on the socket, reading it when no other call does
  /// (`lock` holds `mu`; it is let go while reading).
  void Pump(std::unique_lock<std::mutex>& lock, int slice) {
    if (reading) {
      // Another call reads; it hands this one its reply (or the reader gives up its turn).
      cv.wait_for(lock, std::chrono::milliseconds(slice));
      return;
    }
    reading = true;
    lock.unlock();
    char buf[65536];
    ssize_t got = 0;
    bool closed = false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, slice) > 0) {
      got = ::recv(fd, buf, sizeof buf, 0);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) closed = true;
    }
    lock.lock();
    reading = false;
    if (closed) broken = "agent: the VM's agent socket closed (QEMU exited?)";
    if (got > 0) {
      buffer.append(buf, static_cast<size_t>(got));
      Deliver();
    }
    cv.notify_all();
  }

  /// One line to the socket; a failure marks the connection broken.
  Status Send(const std::string& line) {
    std::lock_guard lock(send_mu);
    for (size_t done = 0; done < line.size();) {
      ssize_t n = ::send(fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::lock_guard l(mu);
        broken = "agent: the VM's agent socket is closed (QEMU exited?)";
        cv.notify_all();
        return Status::Error(broken);
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  /// Lines read: each reply goes to the call with its id; a reply without one (a peer of
  /// another version refusing the request) to the oldest call; one for a call that gave up, and
  /// a line that is not JSON, are dropped. Under `mu`.
  void Deliver() {
    for (size_t nl; (nl = buffer.find('\n')) != std::string::npos;) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      json j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      int64_t id = j.contains("id") && j["id"].is_number_integer() ? j["id"].get<int64_t>() : -1;
      if (auto s = sessions.find(id); s != sessions.end()) {
        s->second.push_back(std::move(j));
        continue;
      }
      auto it = id >= 0 ? calls.find(id) : calls.begin();
      if (it != calls.end() && !it->second) it->second = std::move(j);
    }
  }
};

AgentClient::AgentClient(int fd) : conn_(std::make_unique<Conn>(fd)) {}
AgentClient::AgentClient(AgentClient&& other) noexcept = default;
AgentClient& AgentClient::operator=(AgentClient&& other) noexcept = default;
AgentClient::~AgentClient() = default;

Result<AgentClient> AgentClient::Connect(const std::string& path, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Status::Error("agent socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus("socket");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return AgentClient(fd);
    int err = errno;
    ::close(fd);
    if ((err != ENOENT && err != ECONNREFUSED) || Clock::now() >= deadline)
      return Status::Error("cannot connect to the agent socket " + path + ": " + ErrnoText(err));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool AgentClient::Broken() const {
  std::lock_guard lock(conn_->mu);
  return !conn_->broken.empty();
}

Result<json> AgentClient::Call(const json& request, int timeout_ms) {
  Conn& c = *conn_;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int64_t id;
  {
    std::lock_guard lock(c.mu);
    if (!c.broken.empty()) return Status::Error(c.broken);
    id = c.next_id++;
    c.calls[id];
  }
  json numbered = request;
  numbered["id"] = id;
  if (Status sent = c.Send(numbered.dump() + "\n"); !sent.ok()) {
    std::lock_guard lock(c.mu);
    c.calls.erase(id);
    return sent;
  }
  std::unique_lock lock(c.mu);
  for (;;) {
    auto it = c.calls.find(id);
    if (it->second) {
      json reply = std::move(*it->second);
      c.calls.erase(it);
      return reply;
    }
    if (!c.broken.empty()) {
      c.calls.erase(it);
      return Status::Error(c.broken);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      c.calls.erase(it);  // its reply, should it come, is dropped
      return Status::Error("agent: no answer from the guest within " + std::to_string(timeout_ms) + " ms");
    }
    c.Pump(lock, static_cast<int>(std::min<int64_t>(left, 100)));
  }
}

Status AgentClient::Post(const json& message) { return conn_->Send(message.dump() + "\n"); }

Result<int64_t> AgentClient::Open(const json& request) {
  Conn& c = *conn_;
  int64_t id;
  {
    std::lock_guard lock(c.mu);
    if (!c.broken.empty()) return Status::Error(c.broken);
    id = c.next_id++;
    c.sessions[id];
  }
  json numbered = request;
  numbered["id"] = id;
  Status sent = c.Send(numbered.dump() + "\n");
  if (!sent.ok()) {
    Close(id);
    return sent;
  }
  return id;
}

Result<std::optional<json>> AgentClient::Next(int64_t id, int timeout_ms) {
  Conn& c = *conn_;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::unique_lock lock(c.mu);
  for (;;) {
    auto it = c.sessions.find(id);
    if (it == c.sessions.end()) return Status::Error("agent: no session " + std::to_string(id));
    if (!it->second.empty()) {
      json m = std::move(it->second.front());
      it->second.pop_front();
      return std::optional<json>(std::move(m));
    }
    if (!c.broken.empty()) return Status::Error(c.broken);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return std::optional<json>();
    c.Pump(lock, static_cast<int>(std::min<int64_t>(left, 100)));
  }
}

void AgentClient::Close(int64_t id) {
  std::lock_guard lock(conn_->mu);
  conn_->sessions.erase(id);
}

Result<agent::PingReply> AgentClient::Ping(int timeout_ms) {
  auto r = Call(agent::PingRequest(), timeout_ms);
  if (!r.ok()) return r.status();
  return agent::ParsePingReply(*r);
}

Result<agent::ExecReply> AgentClient::Exec(const std::vector<std::string>& argv, int timeout_ms) {
  auto r = Call(agent::ExecRequest(argv), timeout_ms);
  if (!r.ok()) return r.status();
  return agent::ParseExecReply(*r);
}

namespace {

std::atomic<bool> g_winch{false};
void OnWinch(int) { g_winch = true; }

}  // namespace

Result<int> RunSession(AgentClient& agent, const json& request, bool tty, int in_fd, int out_fd) {
  int stop[2];
  if (::pipe2(stop, O_CLOEXEC) != 0) return ErrnoStatus("pipe");
  auto id = agent.Open(request);
  if (!id) {
    ::close(stop[0]);
    ::close(stop[1]);
    return id.status();
  }
  struct sigaction sa {}, old_sa {};
  sa.sa_handler = OnWinch;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (in_fd == 0) ::sigaction(SIGWINCH, &sa, &old_sa);
  std::optional<kernel::RawTerminal> raw;
  if (tty) raw.emplace(in_fd);
  // Our stdin goes to the session from a thread of its own, which `stop` ends.
  std::thread input([&agent, session = *id, stop_rd = stop[0], in_fd] {
    char buf[16384];
    for (;;) {
      pollfd fds[2] = {{in_fd, POLLIN, 0}, {stop_rd, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(in_fd, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        (void)agent.Post(agent::EofMessage(session));
        return;
      }
      if (!agent.Post(agent::InputMessage(session, std::string_view(buf, static_cast<size_t>(n)))).ok()) return;
    }
  });
  Result<int> code = Status::Error("agent: the session ended without an exit code");
  for (;;) {
    if (in_fd == 0 && g_winch.exchange(false)) {
      winsize ws{};
      if (kernel::TerminalSize(&ws)) (void)agent.Post(agent::ResizeMessage(*id, ws.ws_row, ws.ws_col));
    }
    auto m = agent.Next(*id, 100);
    if (!m) {
      code = m.status();
      break;
    }
    if (!*m) continue;
    auto e = agent::ParseSessionMessage(**m);
    if (!e) {
      code = e.status();
      break;
    }
    for (size_t done = 0; done < e->out.size();) {
      ssize_t w = ::write(out_fd, e->out.data() + done, e->out.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      done += static_cast<size_t>(w);
    }
    if (e->end) {
      code = e->exit_code;
      break;
    }
  }
  (void)!::write(stop[1], "x", 1);
  input.join();
  ::close(stop[0]);
  ::close(stop[1]);
  agent.Close(*id);
  if (in_fd == 0) ::sigaction(SIGWINCH, &old_sa, nullptr);
  return code;
}

}  // namespace lab::hv::qemu
