// A typed QMP client: QEMU's JSON monitor protocol over a unix socket (one client per QEMU).
//
// After connecting, QEMU sends its greeting ({"QMP": {"version": ...}}); the client answers with
// qmp_capabilities and may then execute commands. Every command carries an "id" and its reply is
// matched by it; asynchronous events ({"event": ...}) that arrive in between are kept apart for
// TakeEvents/WaitEvent. Every wait has a deadline: a dead or silent QEMU is an error value, never a
// hang. Errors name the command and QEMU's error class and description.
#pragma once

#include <nlohmann/json.hpp>
#include <deque>
#include <string>

#include "base/status.h"

namespace lab::hv::qemu {

class QmpClient {
 public:
  /// Connects to the QMP socket at `path`, retrying until `timeout_ms` while it does not exist or
  /// refuses (QEMU still starting), reads the greeting and negotiates capabilities.
  static Result<QmpClient> Connect(const std::string& path, int timeout_ms);
  /// The same over an already connected stream socket, which the client then owns (tests).
  static Result<QmpClient> Adopt(int fd, int timeout_ms);

  QmpClient(QmpClient&& other) noexcept;
  QmpClient& operator=(QmpClient&& other) noexcept;
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient();

  /// QEMU's version from its greeting: "7.2.0".
  const std::string& version() const { return version_; }

  /// Runs `command` with `arguments` (an object, or null for none) and returns its "return" value;
  /// an error when QEMU answers with "error", closes the socket, or is silent for `timeout_ms`.
  Result<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                 int timeout_ms = 5000);
  /// The same, with the open file `fd` passed along as SCM_RIGHTS ancillary data of the message
  /// (QEMU keeps the last fd a message brought for the command that takes it: getfd, add-fd). The
  /// caller keeps its own `fd`: the kernel gives QEMU a duplicate.
  Result<nlohmann::json> ExecuteWithFd(const std::string& command, const nlohmann::json& arguments, int fd,
                                       int timeout_ms = 5000);

  /// The events received so far, oldest first; they are no longer kept.
  std::deque<nlohmann::json> TakeEvents();
  /// The first event named `name`, received before or within `timeout_ms`; the ones before it
  /// stay for TakeEvents.
  Result<nlohmann::json> WaitEvent(const std::string& name, int timeout_ms);

  // One function per command lab uses.
  /// query-status: "running", "paused", "shutdown", ...
  Result<std::string> QueryStatus();
  /// system_powerdown: the ACPI power button.
  Status SystemPowerdown();
  /// getfd: hands QEMU a duplicate of `fd` under `name`, for a later command that names it
  /// (netdev_add's "fd"). QEMU closes it when that command consumes it, or on closefd.
  Status GetFd(int fd, const std::string& name);
  /// quit: QEMU exits at once (the guest is not asked). QEMU may close the socket before replying.
  Status Quit();

 private:
  explicit QmpClient(int fd) : fd_(fd) {}
  Status Handshake(int timeout_ms);
  /// The next message, from the buffer or the socket, within the deadline.
  Result<nlohmann::json> ReadMessage(int timeout_ms);
  /// Writes one message; `fd` >= 0 travels with its first byte as SCM_RIGHTS.
  Status Send(const nlohmann::json& message, int fd = -1);

  int fd_ = -1;
  std::string buffer_;
  std::deque<nlohmann::json> events_;
  std::string version_;
  uint64_t next_id_ = 1;
};

}  // namespace lab::hv::qemu
