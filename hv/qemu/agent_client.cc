#include "hv/qemu/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

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
  bool reading = false;                          // one waiting call reads the socket for all
  std::string buffer;                            // what came after the last full line
  std::string broken;                            // why the connection is unusable, "" while it is fine

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
  std::string line = numbered.dump() + "\n";
  {
    std::lock_guard lock(c.send_mu);
    for (size_t done = 0; done < line.size();) {
      ssize_t n = ::send(c.fd, line.data() + done, line.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        std::lock_guard l(c.mu);
        c.calls.erase(id);
        c.broken = "agent: the VM's agent socket is closed (QEMU exited?)";
        c.cv.notify_all();
        return Status::Error(c.broken);
      }
      done += static_cast<size_t>(n);
    }
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
    int slice = static_cast<int>(std::min<int64_t>(left, 100));
    if (c.reading) {
      // Another call reads; it hands this one its reply (or the reader gives up its turn).
      c.cv.wait_for(lock, std::chrono::milliseconds(slice));
      continue;
    }
    c.reading = true;
    lock.unlock();
    char buf[65536];
    ssize_t got = 0;
    bool closed = false;
    pollfd p{c.fd, POLLIN, 0};
    int n = ::poll(&p, 1, slice);
    if (n > 0) {
      got = ::recv(c.fd, buf, sizeof buf, 0);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) closed = true;
    }
    lock.lock();
    c.reading = false;
    if (closed) c.broken = "agent: the VM's agent socket closed (QEMU exited?)";
    if (got > 0) {
      c.buffer.append(buf, static_cast<size_t>(got));
      c.Deliver();
    }
    c.cv.notify_all();
  }
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

}  // namespace lab::hv::qemu
