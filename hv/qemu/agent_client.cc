#include "hv/qemu/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace lab::hv::qemu {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

AgentClient& AgentClient::operator=(AgentClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

AgentClient::~AgentClient() {
  if (fd_ >= 0) ::close(fd_);
}

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

Result<json> AgentClient::Call(const json& request, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string line = request.dump() + "\n";
  for (size_t done = 0; done < line.size();) {
    ssize_t n = ::send(fd_, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("agent: the VM's agent socket is closed (QEMU exited?)");
    done += static_cast<size_t>(n);
  }
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string reply = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      json j = json::parse(reply, nullptr, false);
      if (j.is_discarded()) return Status::Error("agent: not JSON from the guest: " + reply);
      return j;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0)
      return Status::Error("agent: no answer from the guest within " + std::to_string(timeout_ms) + " ms");
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[8192];
    ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return Status::Error("agent: the VM's agent socket closed (QEMU exited?)");
    buffer_.append(buf, static_cast<size_t>(got));
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
