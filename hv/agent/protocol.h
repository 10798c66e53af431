// The agent protocol: how lab on the host talks to its agent inside a qemu VM, over the
// virtio-serial port named `lab.agent`. Both ends use this file (hv/qemu/agent_client.cc on the
// host, hv/qemu/guest_init.cc in the guest), so they cannot disagree on a field.
//
// Wire: one JSON object per line, each way. Every message carries "v" (kVersion); a request names
// its "op", a reply says "ok" and, when not ok, "error". A peer that speaks another version gets
// an error reply naming both versions, never a guess. A request carries an "id" (a number the
// host chooses) and its reply the same "id": the agent answers requests concurrently (a nested
// VM booting does not hold back a switch made beside it), so replies come in any order, and a
// reply the host stopped waiting for is recognised and dropped.
//
//   {"v":1,"op":"ping"}
//     -> {"v":1,"ok":true,"kernel":"<uname -r>","cpu_flags":["fpu",...,"svm"],"kvm":true}
//   {"v":1,"op":"exec","argv":["uname","-r"]}
//     -> {"v":1,"ok":true,"exit_code":0,"output":"6.1.0-57-amd64\n"}
//
//   {"v":2,"op":"hv","method":"CreateSwitch","args":{"spec":{...}}}
//     -> {"v":2,"ok":true,"result":"<facts>"}
// "hv" is the hypervisor API (hv/hypervisor.h) as requests: one per method, its arguments as
// JSON (hv/agent/remote.h has both ends: the client stub and the agent's dispatch).
//
// A terminal session (`lab exec` into a qemu VM or a VM inside one) is one request with many
// messages both ways, all with the session's "id":
//   {"v":3,"op":"session","id":7,"args":{"ctx":{...},"spec":{...},"argv":["sh"],"tty":true,
//                                      "rows":24,"cols":80,"env":[],"workdir":"","user":""}}
//     <- {"v":3,"id":7,"out":"<base64>"} ...        what the command prints, as it prints it
//     -> {"v":3,"op":"input","id":7,"data":"<base64>"} / {"v":3,"op":"input","id":7,"eof":true}
//     -> {"v":3,"op":"resize","id":7,"rows":50,"cols":132}
//     <- {"v":3,"id":7,"ok":true,"exit_code":0}     the end: a message with "ok" is the last
// input and resize get no reply. The host going away hangs the session up.
//
// Version 1 knew ping and exec; version 2 adds hv; version 3 adds "id", concurrent answers and
// sessions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lab::hv::agent {

inline constexpr int kVersion = 3;
/// The virtio-serial port's name, as QEMU's `virtserialport name=` and the guest's
/// /sys/class/virtio-ports/*/name see it.
inline constexpr const char* kPortName = "lab.agent";

/// What the guest says of itself.
struct PingReply {
  std::string kernel;                  // uname -r
  std::vector<std::string> cpu_flags;  // /proc/cpuinfo's flags of the first processor
  bool kvm = false;                    // /dev/kvm exists: a hypervisor can run inside
};

/// What a command run in the guest left.
struct ExecReply {
  int exit_code = 0;  // 127: not found; 128+N: killed by signal N
  std::string output;  // stdout and stderr together
};

/// One request as the guest reads it.
struct Request {
  std::string op;                 // "ping", "exec", "hv", "session", "input", "resize"
  std::vector<std::string> argv;  // exec
  std::string method;             // hv: the Hypervisor method
  nlohmann::json args;            // hv, session: its arguments (an object)
  std::string data;               // input: the bytes (decoded)
  bool eof = false;               // input: the end of the session's input
  int rows = 0, cols = 0;         // resize
};

nlohmann::json PingRequest();
nlohmann::json ExecRequest(const std::vector<std::string>& argv);
nlohmann::json HvRequest(const std::string& method, nlohmann::json args);
nlohmann::json SessionRequest(nlohmann::json args);
nlohmann::json InputMessage(int64_t session, std::string_view bytes);
nlohmann::json EofMessage(int64_t session);
nlohmann::json ResizeMessage(int64_t session, int rows, int cols);
/// What a session's command printed (guest to host); the session's last message is
/// SessionEnd, or an ErrorReply with the session's id.
nlohmann::json OutputMessage(int64_t session, std::string_view bytes);
nlohmann::json SessionEnd(int64_t session, int exit_code);
/// A message of a session: its output (bytes, "" for none), or at the end its exit code (or the
/// error that ended it).
struct SessionEvent {
  std::string out;
  bool end = false;
  int exit_code = 0;
};
Result<SessionEvent> ParseSessionMessage(const nlohmann::json& message);

/// The reply to an hv request that went through: its result (null for a method without one).
nlohmann::json HvReply(nlohmann::json result);
/// An hv reply's result; an error with the agent's message when it was refused.
Result<nlohmann::json> ParseHvReply(const nlohmann::json& reply);

/// A request line; an error (to be sent back with ErrorReply) when it is not JSON, speaks another
/// version, or lacks what its op needs.
Result<Request> ParseRequest(const std::string& line);

nlohmann::json ToJson(const PingReply& reply);
nlohmann::json ToJson(const ExecReply& reply);
nlohmann::json ErrorReply(const std::string& message);

/// The "id" a request line carries (-1 without one, or when the line is not JSON), to be put in
/// its reply with WithId even when the request itself is refused.
int64_t RequestId(const std::string& line);
nlohmann::json WithId(nlohmann::json reply, int64_t id);

/// The replies as the host reads them; a reply with "ok": false is an error with its message.
Result<PingReply> ParsePingReply(const nlohmann::json& reply);
Result<ExecReply> ParseExecReply(const nlohmann::json& reply);

}  // namespace lab::hv::agent
