// The host end of the agent protocol (hv/agent/protocol.h): a connection to the unix socket QEMU
// serves for the VM's `lab.agent` virtio-serial port.
//
// QEMU accepts the connection before the guest is up; a request written then waits in the port
// until the guest's agent opens it, so the first Ping doubles as "wait until the agent is ready".
// Every call has a deadline: a dead agent or QEMU is an error value, never a hang.
//
// One connection serves many threads at once: each request gets its own "id", and whichever
// caller is waiting reads the socket for all of them (no thread of its own), handing each reply
// to the call with its id. A reply that comes after its call gave up is dropped, so a slow
// request never answers the next one.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "hv/agent/protocol.h"

namespace lab::hv::qemu {

class AgentClient {
 public:
  /// Connects to `path`, retrying until `timeout_ms` while QEMU has not made it yet.
  static Result<AgentClient> Connect(const std::string& path, int timeout_ms);

  AgentClient(AgentClient&& other) noexcept;
  AgentClient& operator=(AgentClient&& other) noexcept;
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;
  ~AgentClient();

  /// Sends one request (with an "id" of its own) and returns its reply within `timeout_ms`.
  /// Safe to call from several threads at once.
  Result<nlohmann::json> Call(const nlohmann::json& request, int timeout_ms);

  Result<agent::PingReply> Ping(int timeout_ms);
  Result<agent::ExecReply> Exec(const std::vector<std::string>& argv, int timeout_ms);

  /// The socket closed (QEMU exited, or the connection broke): a new connection is needed.
  bool Broken() const;

  // --- sessions (hv/agent/protocol.h): one request, many messages both ways -----------------
  /// Sends `request` with an id of its own, under which every message of the guest for it is
  /// kept (Next) until Close.
  Result<int64_t> Open(const nlohmann::json& request);
  /// Sends a message as it is (input and resize name their session's id themselves).
  Status Post(const nlohmann::json& message);
  /// The next message of session `id`; nullopt when none came within `timeout_ms`.
  Result<std::optional<nlohmann::json>> Next(int64_t id, int timeout_ms);
  void Close(int64_t id);

 private:
  struct Conn;
  explicit AgentClient(int fd);
  std::unique_ptr<Conn> conn_;
};

/// `lab exec` through the agent: opens the session `request` (agent::SessionRequest) and relays
/// `in_fd` to it and its output to `out_fd` until the command ends; with `tty`, a terminal on
/// `in_fd` is in raw mode meanwhile and (on our stdin) window sizes follow SIGWINCH. Returns the
/// command's exit code.
Result<int> RunSession(AgentClient& agent, const nlohmann::json& request, bool tty, int in_fd = 0, int out_fd = 1);

}  // namespace lab::hv::qemu
