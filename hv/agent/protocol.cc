#include "hv/agent/protocol.h"

#include "base/base64.h"

namespace lab::hv::agent {

using nlohmann::json;

json PingRequest() { return {{"v", kVersion}, {"op", "ping"}}; }

json ExecRequest(const std::vector<std::string>& argv) { return {{"v", kVersion}, {"op", "exec"}, {"argv", argv}}; }

json HvRequest(const std::string& method, json args) {
  return {{"v", kVersion}, {"op", "hv"}, {"method", method}, {"args", std::move(args)}};
}

json SessionRequest(json args) { return {{"v", kVersion}, {"op", "session"}, {"args", std::move(args)}}; }
json InputMessage(int64_t session, std::string_view bytes) {
  return {{"v", kVersion}, {"op", "input"}, {"id", session}, {"data", Base64Encode(bytes)}};
}
json EofMessage(int64_t session) { return {{"v", kVersion}, {"op", "input"}, {"id", session}, {"eof", true}}; }
json ResizeMessage(int64_t session, int rows, int cols) {
  return {{"v", kVersion}, {"op", "resize"}, {"id", session}, {"rows", rows}, {"cols", cols}};
}
json OutputMessage(int64_t session, std::string_view bytes) {
  return {{"v", kVersion}, {"id", session}, {"out", Base64Encode(bytes)}};
}
json SessionEnd(int64_t session, int exit_code) {
  return {{"v", kVersion}, {"id", session}, {"ok", true}, {"exit_code", exit_code}};
}

json HvReply(json result) { return {{"v", kVersion}, {"ok", true}, {"result", std::move(result)}}; }

Result<Request> ParseRequest(const std::string& line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Error("agent: a request must be one JSON object per line");
  if (!j.contains("v") || !j["v"].is_number_integer() || j["v"].get<int>() != kVersion)
    return Status::Error("agent: protocol version " + (j.contains("v") ? j["v"].dump() : std::string("(none)")) +
                         " is not this agent's version " + std::to_string(kVersion));
  if (!j.contains("op") || !j["op"].is_string()) return Status::Error("agent: the request has no \"op\"");
  Request r;
  r.op = j["op"].get<std::string>();
  if (r.op == "ping") return r;
  if (r.op == "exec") {
    if (!j.contains("argv") || !j["argv"].is_array() || j["argv"].empty())
      return Status::Error("agent: exec needs a non-empty \"argv\" array");
    for (const auto& a : j["argv"]) {
      if (!a.is_string()) return Status::Error("agent: exec's \"argv\" holds only strings");
      r.argv.push_back(a.get<std::string>());
    }
    return r;
  }
  if (r.op == "hv") {
    if (!j.contains("method") || !j["method"].is_string()) return Status::Error("agent: hv needs a \"method\"");
    r.method = j["method"].get<std::string>();
    r.args = j.value("args", json::object());
    if (!r.args.is_object()) return Status::Error("agent: hv's \"args\" must be an object");
    return r;
  }
  if (r.op == "session") {
    r.args = j.value("args", json::object());
    if (!r.args.is_object() || !r.args.contains("argv") || !r.args["argv"].is_array() || r.args["argv"].empty())
      return Status::Error("agent: session needs \"args\" with a non-empty \"argv\"");
    return r;
  }
  if (r.op == "input") {
    r.eof = j.value("eof", false);
    if (!r.eof) {
      if (!j.contains("data") || !j["data"].is_string()) return Status::Error("agent: input needs \"data\" or \"eof\"");
      auto bytes = Base64Decode(j["data"].get<std::string>());
      if (!bytes) return Status::Error("agent: input's \"data\" is not base64");
      r.data = std::move(*bytes);
    }
    return r;
  }
  if (r.op == "resize") {
    if (!j.contains("rows") || !j["rows"].is_number_integer() || !j.contains("cols") || !j["cols"].is_number_integer())
      return Status::Error("agent: resize needs \"rows\" and \"cols\"");
    r.rows = j["rows"].get<int>();
    r.cols = j["cols"].get<int>();
    return r;
  }
  return Status::Error("agent: unknown op '" + r.op + "' (this agent knows ping, exec, hv, session, input, resize)");
}

json ToJson(const PingReply& reply) {
  return {{"v", kVersion}, {"ok", true}, {"kernel", reply.kernel}, {"cpu_flags", reply.cpu_flags}, {"kvm", reply.kvm}};
}

json ToJson(const ExecReply& reply) {
  return {{"v", kVersion}, {"ok", true}, {"exit_code", reply.exit_code}, {"output", reply.output}};
}

json ErrorReply(const std::string& message) { return {{"v", kVersion}, {"ok", false}, {"error", message}}; }

int64_t RequestId(const std::string& line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("id") || !j["id"].is_number_integer()) return -1;
  return j["id"].get<int64_t>();
}

json WithId(json reply, int64_t id) {
  if (id >= 0) reply["id"] = id;
  return reply;
}

namespace {

Status CheckReply(const json& reply) {
  if (!reply.is_object() || !reply.contains("ok") || !reply["ok"].is_boolean())
    return Status::Error("agent: the reply is not an agent reply: " + reply.dump());
  if (!reply.contains("v") || reply["v"] != kVersion)
    return Status::Error("agent: the reply speaks protocol version " + reply.value("v", json()).dump() +
                         ", not " + std::to_string(kVersion));
  if (!reply["ok"].get<bool>()) return Status::Error(reply.value("error", std::string("agent: request refused")));
  return Status::Ok();
}

}  // namespace

Result<PingReply> ParsePingReply(const json& reply) {
  LAB_RETURN_IF_ERROR(CheckReply(reply));
  try {
    PingReply p;
    p.kernel = reply.at("kernel").get<std::string>();
    p.cpu_flags = reply.at("cpu_flags").get<std::vector<std::string>>();
    p.kvm = reply.at("kvm").get<bool>();
    return p;
  } catch (const json::exception& e) {
    return Status::Error(std::string("agent: malformed ping reply: ") + e.what());
  }
}

Result<SessionEvent> ParseSessionMessage(const json& message) {
  SessionEvent e;
  if (message.is_object() && !message.contains("ok") && message.contains("out")) {
    auto bytes = message["out"].is_string() ? Base64Decode(message["out"].get<std::string>()) : std::nullopt;
    if (!bytes) return Status::Error("agent: a session's output is not base64");
    e.out = std::move(*bytes);
    return e;
  }
  LAB_RETURN_IF_ERROR(CheckReply(message));
  e.end = true;
  e.exit_code = message.value("exit_code", 1);
  return e;
}

Result<json> ParseHvReply(const json& reply) {
  LAB_RETURN_IF_ERROR(CheckReply(reply));
  return reply.value("result", json());
}

Result<ExecReply> ParseExecReply(const json& reply) {
  LAB_RETURN_IF_ERROR(CheckReply(reply));
  try {
    ExecReply x;
    x.exit_code = reply.at("exit_code").get<int>();
    x.output = reply.at("output").get<std::string>();
    return x;
  } catch (const json::exception& e) {
    return Status::Error(std::string("agent: malformed exec reply: ") + e.what());
  }
}

}  // namespace lab::hv::agent
