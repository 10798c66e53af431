// The host end of the agent protocol (hv/agent/protocol.h): a connection to the unix socket QEMU
// serves for the VM's `lab.agent` virtio-serial port.
//
// QEMU accepts the connection before the guest is up; a request written then waits in the port
// until the guest's agent opens it, so the first Ping doubles as "wait until the agent is ready".
// Every call has a deadline: a dead agent or QEMU is an error value, never a hang.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/agent/protocol.h"

namespace lab::hv::qemu {

class AgentClient {
 public:
  /// Connects to `path`, retrying until `timeout_ms` while QEMU has not made it yet.
  static Result<AgentClient> Connect(const std::string& path, int timeout_ms);

  AgentClient(AgentClient&& other) noexcept : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}
  AgentClient& operator=(AgentClient&& other) noexcept;
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;
  ~AgentClient();

  /// Sends one request and returns the reply line as JSON within `timeout_ms`.
  Result<nlohmann::json> Call(const nlohmann::json& request, int timeout_ms);

  Result<agent::PingReply> Ping(int timeout_ms);
  Result<agent::ExecReply> Exec(const std::vector<std::string>& argv, int timeout_ms);

 private:
  explicit AgentClient(int fd) : fd_(fd) {}
  int fd_ = -1;
  std::string buffer_;
};

}  // namespace lab::hv::qemu
