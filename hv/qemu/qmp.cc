#include "hv/qemu/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/deadline.h"
#include "base/scm_rights.h"

namespace lab::hv::qemu {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

QmpClient::QmpClient(QmpClient&& other) noexcept
    : fd_(other.fd_), buffer_(std::move(other.buffer_)), events_(std::move(other.events_)),
      version_(std::move(other.version_)), next_id_(other.next_id_) {
  other.fd_ = -1;
}

QmpClient& QmpClient::operator=(QmpClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
    buffer_ = std::move(other.buffer_);
    events_ = std::move(other.events_);
    version_ = std::move(other.version_);
    next_id_ = other.next_id_;
  }
  return *this;
}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<QmpClient> QmpClient::Connect(const std::string& path, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Status::Error("QMP socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus("socket");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return Adopt(fd, MsUntil(deadline));
    int err = errno;
    ::close(fd);
    if ((err != ENOENT && err != ECONNREFUSED) || MsUntil(deadline) == 0)
      return Status::Error("cannot connect to QEMU's QMP socket " + path + ": " + ErrnoText(err));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<QmpClient> QmpClient::Adopt(int fd, int timeout_ms) {
  QmpClient c(fd);
  LAB_RETURN_IF_ERROR(c.Handshake(timeout_ms));
  return c;
}

Status QmpClient::Handshake(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto greeting = ReadMessage(MsUntil(deadline));
  if (!greeting.ok()) return greeting.status().Prefixed("QMP greeting");
  if (!greeting->contains("QMP")) return Status::Error("QMP: the peer is not a QMP server: " + greeting->dump());
  try {
    const json& q = (*greeting)["QMP"]["version"]["qemu"];
    version_ = std::to_string(q.at("major").get<int>()) + "." + std::to_string(q.at("minor").get<int>()) + "." +
               std::to_string(q.at("micro").get<int>());
  } catch (const json::exception&) {
    version_ = "unknown";
  }
  auto caps = Execute("qmp_capabilities", nullptr, MsUntil(deadline));
  return caps.status();
}

Status QmpClient::Send(const json& message, int fd) {
  std::string line = message.dump() + "\n";
  size_t done = 0;
  if (fd >= 0) {
    // The fd rides on the first chunk; QEMU's monitor collects it with recvmsg before it parses
    // the command that names it.
    ssize_t n;
    do n = SendWithFd(fd_, line.data(), line.size(), fd);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return ErrnoStatus("QMP: QEMU closed its monitor");
    done = static_cast<size_t>(n);
  }
  while (done < line.size()) {
    ssize_t n = ::send(fd_, line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("QMP: QEMU closed its monitor");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<json> QmpClient::ReadMessage(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded()) return Status::Error("QMP: not JSON from QEMU: " + line);
      return j;
    }
    if (fd_ < 0) return Status::Error("QMP: not connected");
    pollfd p{fd_, POLLIN, 0};
    int n = ::poll(&p, 1, MsUntil(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("QMP: poll");
    if (n == 0) return Status::Error("QMP: QEMU did not answer within " + std::to_string(timeout_ms) + " ms");
    char buf[8192];
    ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return Status::Error("QMP: QEMU closed its monitor (it exited?)");
    buffer_.append(buf, static_cast<size_t>(got));
  }
}

Result<json> QmpClient::Execute(const std::string& command, const json& arguments, int timeout_ms) {
  return ExecuteWithFd(command, arguments, -1, timeout_ms);
}

Result<json> QmpClient::ExecuteWithFd(const std::string& command, const json& arguments, int fd, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  uint64_t id = next_id_++;
  json request = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  LAB_RETURN_IF_ERROR(Send(request, fd).Prefixed(command));
  for (;;) {
    auto msg = ReadMessage(MsUntil(deadline));
    if (!msg.ok() && (MsUntil(deadline) == 0 || msg.message().find("did not answer") != std::string::npos))
      return Status::Error("QMP " + command + ": QEMU did not answer within " + std::to_string(timeout_ms) + " ms");
    if (!msg.ok()) return msg.status().Prefixed(command);
    if (msg->contains("event")) {
      events_.push_back(std::move(*msg));
      continue;
    }
    if (!msg->contains("id") || (*msg)["id"] != id) continue;  // a late reply to an abandoned command
    if (msg->contains("error")) {
      const json& e = (*msg)["error"];
      return Status::Error("QMP " + command + ": " + e.value("class", std::string("Error")) + ": " +
                           e.value("desc", std::string("(no description)")));
    }
    return msg->value("return", json::object());
  }
}

std::deque<json> QmpClient::TakeEvents() { return std::exchange(events_, {}); }

Result<json> QmpClient::WaitEvent(const std::string& name, int timeout_ms) {
  for (auto it = events_.begin(); it != events_.end(); ++it)
    if ((*it)["event"] == name) {
      json e = std::move(*it);
      events_.erase(it);
      return e;
    }
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto msg = ReadMessage(MsUntil(deadline));
    if (!msg.ok()) return msg.status().Prefixed("waiting for QMP event " + name);
    if (msg->contains("event") && (*msg)["event"] == name) return std::move(*msg);
    if (msg->contains("event")) events_.push_back(std::move(*msg));
  }
}

Result<std::string> QmpClient::QueryStatus() {
  auto r = Execute("query-status");
  if (!r.ok()) return r.status();
  return r->value("status", std::string("unknown"));
}

Status QmpClient::SystemPowerdown() { return Execute("system_powerdown").status(); }

Status QmpClient::GetFd(int fd, const std::string& name) {
  if (fd < 0) return Status::Error("QMP getfd " + name + ": no open file to pass");
  return ExecuteWithFd("getfd", {{"fdname", name}}, fd).status();
}

Status QmpClient::Quit() {
  auto r = Execute("quit", nullptr, 2000);
  // QEMU may exit before its reply reaches us: a closed monitor after quit is the expected end.
  if (!r.ok() && r.message().find("closed its monitor") != std::string::npos) return Status::Ok();
  return r.status();
}

}  // namespace lab::hv::qemu
