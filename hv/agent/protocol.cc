#include "hv/agent/protocol.h"

namespace lab::hv::agent {

using nlohmann::json;

json PingRequest() { return {{"v", kVersion}, {"op", "ping"}}; }

json ExecRequest(const std::vector<std::string>& argv) { return {{"v", kVersion}, {"op", "exec"}, {"argv", argv}}; }

json HvRequest(const std::string& method, json args) {
  return {{"v", kVersion}, {"op", "hv"}, {"method", method}, {"args", std::move(args)}};
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
  return Status::Error("agent: unknown op '" + r.op + "' (this agent knows ping, exec, hv)");
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
