// The hypervisor API (hv/hypervisor.h) as a wire protocol: both of its ends.
//
// On the host, a call for an object that lives inside a qemu VM goes to a RemoteHypervisor: every
// method becomes one "hv" request (hv/agent/protocol.h) naming the method, with its arguments as
// JSON (the specs' own JSON, facts as they were recorded). In the guest, the agent hands each
// request to Dispatch, which calls the same method on the guest's own hypervisor (the partition
// driver, or the qemu driver again for a VM inside) and sends back what it returned. Specs keep
// their machine names end to end; the guest's hypervisor knows which machine it is (LabContext::
// inside).
//
// One table of method names serves both ends, so a method the guest does not know is an error
// naming it, never a silent no-op. Teams (SET) inside a qemu VM are not carried yet.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"
#include "hv/hypervisor.h"

namespace lab::hv::agent {

/// Sends one request and returns the reply (a JSON object) within `timeout_ms`.
using Transport = std::function<Result<nlohmann::json>(const nlohmann::json& request, int timeout_ms)>;

/// Runs a terminal session (protocol.h) with the session's arguments, relaying `in_fd` to it and
/// its output to `out_fd`; returns the command's exit code.
using SessionRunner = std::function<Result<int>(nlohmann::json args, bool tty, int in_fd, int out_fd)>;

/// The hypervisor of the guest reached through `transport`; `vm` names the qemu VM in messages.
/// Exec is a session through `session` (streamed both ways, a terminal with -t); without one, the
/// command's output comes to our stdout once it has ended.
std::unique_ptr<Hypervisor> MakeRemoteHypervisor(Transport transport, std::string vm, SessionRunner session = nullptr);

/// The agent's side: calls `method` with `args` on `hv` and returns its result as JSON.
/// Exec runs with stdin from /dev/null and stdout/stderr captured, and returns
/// {"exit_code", "output"}.
Result<nlohmann::json> Dispatch(Hypervisor& hv, const std::string& method, const nlohmann::json& args);

/// JSON of what the API passes around, shared by both ends (and tests).
nlohmann::json ToJson(const ObserveRequest& r);
ObserveRequest ObserveRequestFrom(const nlohmann::json& j);
nlohmann::json ToJson(const Drift& d);
Drift DriftFrom(const nlohmann::json& j);
nlohmann::json ToJson(const Seen& s);
void MergeSeen(const nlohmann::json& j, Seen* into);

}  // namespace lab::hv::agent
