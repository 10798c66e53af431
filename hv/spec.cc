#include "hv/spec.h"

#include <nlohmann/json.hpp>

namespace lab::hv {
namespace {

using nlohmann::json;

json Opt(const std::optional<Cidr>& c) { return c ? json(c->ToString()) : json(nullptr); }
json Opt(const std::optional<Ipv4>& a) { return a ? json(a->ToString()) : json(nullptr); }

void Get(const json& j, const char* key, std::optional<Cidr>& out) {
  out.reset();
  if (j.contains(key) && j[key].is_string()) out = Cidr::Parse(j[key].get<std::string>());
}
void Get(const json& j, const char* key, std::optional<Ipv4>& out) {
  out.reset();
  if (j.contains(key) && j[key].is_string()) out = Ipv4::Parse(j[key].get<std::string>());
}
void Get(const json& j, const char* key, Cidr& out) {
  if (auto c = Cidr::Parse(j.value(key, std::string()))) out = *c;
}
void Get(const json& j, const char* key, Ipv4& out) {
  if (auto a = Ipv4::Parse(j.value(key, std::string()))) out = *a;
}
template <typename T>
void Get(const json& j, const char* key, T& out) {
  if (j.contains(key)) out = j[key].get<T>();
}
json Addrs(const std::vector<Ipv4>& v) {
  json a = json::array();
  for (auto ip : v) a.push_back(ip.ToString());
  return a;
}
/// `within` is written only when the object lives inside a qemu VM, so that every record made
/// before drivers existed keeps its spec (and hash).
void PutWithin(json& j, const std::vector<std::string>& within) {
  if (!within.empty()) j["within"] = within;
}
std::vector<std::string> GetWithin(const json& j) { return j.value("within", std::vector<std::string>()); }

std::vector<Ipv4> Addrs(const json& j) {
  std::vector<Ipv4> out;
  if (j.is_array())
    for (const auto& e : j)
      if (auto ip = Ipv4::Parse(e.get<std::string>())) out.push_back(*ip);
  return out;
}

}  // namespace

const std::string& PartitionSpec::parent() const {
  static const std::string kNone;
  return lineage.size() >= 2 ? lineage[lineage.size() - 2] : kNone;
}

void to_json(json& j, const NetworkSpec& s) {
  j = {{"name", s.name}, {"subnet", s.subnet.ToString()}, {"gateway", Opt(s.gateway)}};
}
void from_json(const json& j, NetworkSpec& s) {
  Get(j, "name", s.name);
  Get(j, "subnet", s.subnet);
  Get(j, "gateway", s.gateway);
}

void to_json(json& j, const PartitionSpec& s) {
  j = {{"name", s.name},
       {"lineage", s.lineage},
       {"is_host", s.is_host},
       {"processor_count", s.processor_count},
       {"memory_bytes", s.memory_bytes},
       {"dynamic_memory", s.dynamic_memory},
       {"expose_virtualization_extensions", s.expose_virtualization_extensions},
       {"version", s.version},
       {"hosts_file", s.hosts_file}};
  // Written only when false (a lab that validates never has it), so the specs and hashes of
  // labs recorded before the field existed stay the same.
  if (!s.parent_exposes) j["parent_exposes"] = false;
  if (!s.hostname.empty() && s.hostname != s.name) j["hostname"] = s.hostname;
  // Only on an image: a machine on the host's software keeps the spec (and hash) it had.
  if (!s.image.empty()) {
    j["image"] = s.image;
    j["image_key"] = s.image_key;
    j["image_layers"] = s.image_layers;
  }
  // Only for qemu VMs and what is inside them: partitions keep the spec (and hash) they had.
  if (!s.driver.empty()) j["driver"] = s.driver;
  PutWithin(j, s.within);
}
void from_json(const json& j, PartitionSpec& s) {
  Get(j, "name", s.name);
  Get(j, "lineage", s.lineage);
  Get(j, "is_host", s.is_host);
  Get(j, "processor_count", s.processor_count);
  Get(j, "memory_bytes", s.memory_bytes);
  Get(j, "dynamic_memory", s.dynamic_memory);
  Get(j, "expose_virtualization_extensions", s.expose_virtualization_extensions);
  Get(j, "version", s.version);
  Get(j, "hosts_file", s.hosts_file);
  s.parent_exposes = j.value("parent_exposes", true);
  s.hostname = j.value("hostname", std::string());
  s.image = j.value("image", std::string());
  s.image_key = j.value("image_key", std::string());
  s.image_layers = j.value("image_layers", std::vector<std::string>());
  s.driver = j.value("driver", std::string());
  s.within = GetWithin(j);
}

void to_json(json& j, const NicSpec& s) {
  j = {{"machine", s.machine}, {"name", s.name}, {"network", s.network}, {"port", s.port},
       {"mac", s.mac}, {"ip", Opt(s.ip)}, {"gateway", Opt(s.gateway)}};
  if (!s.alias.empty()) j["alias"] = s.alias;
}
void from_json(const json& j, NicSpec& s) {
  s.alias = j.value("alias", std::string());
  Get(j, "machine", s.machine);
  Get(j, "name", s.name);
  Get(j, "network", s.network);
  Get(j, "port", s.port);
  Get(j, "mac", s.mac);
  Get(j, "ip", s.ip);
  Get(j, "gateway", s.gateway);
}

void to_json(json& j, const SwitchSpec& s) {
  j = {{"owner", s.owner},     {"name", s.name},
       {"type", s.type},       {"ifname", s.ifname},
       {"uplinks", s.uplinks}, {"management_port", s.management_port},
       {"ip", Opt(s.ip)},      {"gateway", Opt(s.gateway)},
       {"forwarding", s.forwarding}};
  // Only for SET switches, so the specs (and hashes) of other switches stay as they were.
  if (s.embedded_teaming) j["embedded_teaming"] = true;
  PutWithin(j, s.within);
}
void from_json(const json& j, SwitchSpec& s) {
  Get(j, "owner", s.owner);
  Get(j, "name", s.name);
  Get(j, "type", s.type);
  Get(j, "ifname", s.ifname);
  Get(j, "uplinks", s.uplinks);
  Get(j, "management_port", s.management_port);
  Get(j, "ip", s.ip);
  Get(j, "gateway", s.gateway);
  Get(j, "forwarding", s.forwarding);
  s.embedded_teaming = j.value("embedded_teaming", false);
  s.within = GetWithin(j);
}

void to_json(json& j, const AdapterSpec& s) {
  j = {{"vm", s.vm},
       {"name", s.name},
       {"owner", s.owner},
       {"switch_name", s.switch_name},
       {"switch_ifname", s.switch_ifname},
       {"port", s.port},
       {"mac", s.mac},
       {"mac_address_spoofing", s.mac_address_spoofing},
       {"ip", Opt(s.ip)},
       {"gateway", Opt(s.gateway)}};
  if (!s.alias.empty()) j["alias"] = s.alias;
  if (!s.vm_driver.empty()) j["vm_driver"] = s.vm_driver;
  PutWithin(j, s.within);
}
void from_json(const json& j, AdapterSpec& s) {
  s.alias = j.value("alias", std::string());
  s.vm_driver = j.value("vm_driver", std::string());
  s.within = GetWithin(j);
  Get(j, "vm", s.vm);
  Get(j, "name", s.name);
  Get(j, "owner", s.owner);
  Get(j, "switch_name", s.switch_name);
  Get(j, "switch_ifname", s.switch_ifname);
  Get(j, "port", s.port);
  Get(j, "mac", s.mac);
  Get(j, "mac_address_spoofing", s.mac_address_spoofing);
  Get(j, "ip", s.ip);
  Get(j, "gateway", s.gateway);
}

void to_json(json& j, const NatSpec& s) {
  j = {{"owner", s.owner}, {"name", s.name}, {"prefix", s.prefix.ToString()}, {"table", s.table}};
  // Only when asked for, so NATs without a proxy keep their spec (and hash).
  if (s.dns_proxy) j["dns_proxy"] = s.dns_proxy->ToString(), j["owner_lineage"] = s.owner_lineage;
  PutWithin(j, s.within);
}
void from_json(const json& j, NatSpec& s) {
  Get(j, "owner", s.owner);
  Get(j, "name", s.name);
  Get(j, "prefix", s.prefix);
  Get(j, "table", s.table);
  Get(j, "dns_proxy", s.dns_proxy);
  Get(j, "owner_lineage", s.owner_lineage);
  s.within = GetWithin(j);
}

void to_json(json& j, const DnsSpec& s) {
  j = {{"machine", s.machine}, {"servers", Addrs(s.servers)}};
  PutWithin(j, s.within);
}
void from_json(const json& j, DnsSpec& s) {
  Get(j, "machine", s.machine);
  s.servers = Addrs(j.value("servers", json::array()));
  s.within = GetWithin(j);
}

void to_json(json& j, const StandInSpec& s) {
  json records = json::object();
  for (const auto& [name, addrs] : s.records) records[name] = Addrs(addrs);
  j = {{"network", s.network}, {"address", s.address.ToString()}, {"records", records}};
}
void from_json(const json& j, StandInSpec& s) {
  Get(j, "network", s.network);
  Get(j, "address", s.address);
  s.records.clear();
  if (j.contains("records"))
    for (const auto& [name, addrs] : j["records"].items()) s.records[name] = Addrs(addrs);
}

void to_json(json& j, const RunSpec& s) {
  j = {{"machine", s.machine},   {"lineage", s.lineage},       {"is_host", s.is_host},
       {"commands", s.commands}, {"timeout_ms", s.timeout_ms}};
  PutWithin(j, s.within);
}
void from_json(const json& j, RunSpec& s) {
  Get(j, "machine", s.machine);
  Get(j, "lineage", s.lineage);
  Get(j, "is_host", s.is_host);
  Get(j, "commands", s.commands);
  Get(j, "timeout_ms", s.timeout_ms);
  s.within = GetWithin(j);
}

}  // namespace lab::hv
