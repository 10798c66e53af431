#include "schema/keys.h"

namespace lab::schema::keys {

const std::vector<std::string> kLab = {"lab",   "format", "compatibility", "defaults", "networks",
                                       "images", "image",  "hosts",         "checks",   "x-*"};
const std::vector<std::string> kDefaults = {"driver", "version", "generation", "processor", "memory", "image"};
const std::vector<std::string> kNetwork = {"subnet", "gateway", "dns_records", "uplink"};
const std::vector<std::string> kHost = {"processor", "nics", "switches", "vms", "run", "run_timeout", "hostname", "image"};
const std::vector<std::string> kHostProcessor = {"vendor"};
const std::vector<std::string> kNic = {"network", "ip", "gateway", "dns", "mac"};
const std::vector<std::string> kVm = {"driver", "version", "generation", "processor", "memory", "security", "adapters",
                                      "switches", "vms", "run", "run_timeout", "hostname", "image"};
const std::vector<std::string> kImage = {"debian",   "from",  "rootfs", "oci",  "docker_archive", "variant",
                                         "packages", "files", "run",    "slim", "mirror"};
const std::vector<std::string> kProcessor = {"count", "expose_virtualization_extensions"};
const std::vector<std::string> kMemory = {"startup", "dynamic", "minimum", "maximum"};
const std::vector<std::string> kSecurity = {"virtualization_based_security"};
const std::vector<std::string> kAdapter = {"name", "switch", "ip", "gateway", "dns", "mac", "mac_address_spoofing"};
const std::vector<std::string> kSwitch = {"type", "nics", "allow_management_os", "embedded_teaming", "teaming_mode",
                                          "ip", "nat"};
const std::vector<std::string> kNat = {"name", "prefix", "dns_proxy"};
const std::vector<std::string> kCheck = {"from", "ping", "resolve", "tcp", "http", "expect", "expect_address",
                                         "expect_source", "timeout", "retries"};

std::vector<std::string> Paths() {
  std::vector<std::string> out;
  auto add = [&](const std::string& prefix, const std::vector<std::string>& table) {
    for (const auto& k : table) out.push_back(prefix.empty() ? k : prefix + "." + k);
  };
  add("", kLab);
  add("defaults", kDefaults);
  add("defaults.processor", kProcessor);
  add("defaults.memory", kMemory);
  add("networks.NAME", kNetwork);
  add("images.NAME", kImage);
  add("hosts.NAME", kHost);
  add("hosts.NAME.processor", kHostProcessor);
  add("hosts.NAME.nics.NAME", kNic);
  add("vms.NAME", kVm);
  add("vms.NAME.processor", kProcessor);
  add("vms.NAME.memory", kMemory);
  add("vms.NAME.security", kSecurity);
  add("vms.NAME.adapters[]", kAdapter);
  add("switches.NAME", kSwitch);
  add("switches.NAME.nat", kNat);
  add("checks[]", kCheck);
  return out;
}

}  // namespace lab::schema::keys
