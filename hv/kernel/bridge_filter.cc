// Bridge filters (see bridge_filter.h): bridge-family nftables through libnftables.
#include "hv/kernel/bridge_filter.h"

#include <algorithm>
#include <iterator>
#include <regex>
#include <vector>

#include "base/net.h"

namespace lab::hv::kernel {
namespace {

// Names go into nft text: only plain interface names (which are also valid chain name parts),
// so a name can never smuggle commands in.
bool IsPlainName(const std::string& s) {
  static const std::regex kName("[A-Za-z0-9][A-Za-z0-9_.-]{0,14}");
  return std::regex_match(s, kName);
}

struct Hook {
  const char* family;
  const char* suffix;
  const char* hook;
  bool on_device;  // a netdev hook, on the device named by the object's id
};
constexpr Hook kHooks[] = {{"bridge", "_fwd", "forward", false},
                           {"bridge", "_in", "input", false},
                           {"netdev", "_ingress", "ingress", true},
                           {"netdev", "_egress", "egress", true}};

/// Chain names start with a letter whatever the interface name starts with.
std::string ChainName(const std::string& id, const Hook& h) { return "f_" + id + h.suffix; }

/// Rules per hook, in kHooks order: frames the bridge forwards, frames it delivers to the owner
/// (bridge family, by port); frames the bridge device passes up to the owner's stack and frames the
/// owner sends through it (netdev family, on the bridge device itself).
struct Rules {
  std::vector<std::string> forward, input, ingress, egress;
};

/// Declares the table and `id`'s chains for the hooks that have rules, flushes them and fills
/// them: one transaction.
Status SetChains(const NetNs& ns, const std::string& table, const std::string& comment, const std::string& id,
                 const Rules& rules) {
  const std::vector<std::string>* per_hook[] = {&rules.forward, &rules.input, &rules.ingress, &rules.egress};
  // The kernel refuses to change a table's comment, so only a new table gets one.
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status();
  std::string text;
  for (size_t i = 0; i < std::size(kHooks); ++i) {
    if (per_hook[i]->empty()) continue;
    const Hook& h = kHooks[i];
    std::string t = std::string(h.family) + " " + table;
    bool exists = std::find(tables->begin(), tables->end(), t) != tables->end();
    text += "table " + t + (exists ? " {}\n" : " { comment \"" + comment + "\"; }\n");
    std::string chain = ChainName(id, h);
    text += "table " + t + " {\n  chain " + chain + " {\n    type filter hook " + h.hook +
            (h.on_device ? " device \"" + id + "\"" : "") + " priority filter; policy accept;\n  }\n}\n" +
            "flush chain " + t + " " + chain + "\n";
    for (const auto& r : *per_hook[i]) text += "add rule " + t + " " + chain + " " + r + "\n";
  }
  return NftApply(ns, text);
}

}  // namespace

Status FilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& comment,
                           const std::string& port, const std::string& mac) {
  std::string what = "MAC address spoofing filter of port " + port;
  if (!IsPlainName(port) || !IsValidMac(mac)) return Status::Error(what + ": invalid port name or MAC " + mac);
  std::string rule = "iifname \"" + port + "\" ether saddr != " + mac + " drop";
  return SetChains(ns, table, comment, port, Rules{{rule}, {rule}, {}, {}}).Prefixed(what);
}

Status IsolateBridgeFromOwner(const NetNs& ns, const std::string& table, const std::string& comment,
                              const std::string& bridge) {
  std::string what = "private switch bridge " + bridge;
  if (!IsPlainName(bridge)) return Status::Error(what + ": invalid bridge name");
  return SetChains(ns, table, comment, bridge, Rules{{}, {}, {"drop"}, {"drop"}}).Prefixed(what);
}

Status RemoveBridgeFilter(const NetNs& ns, const std::string& table, const std::string& id) {
  std::string what = "remove bridge filter of " + id;
  if (!IsPlainName(id)) return Status::Error(what + ": invalid name");
  for (const char* family : {"bridge", "netdev"}) {
    auto chains = NftListChains(ns, family, table);
    if (!chains.ok()) return chains.status().Prefixed(what);
    std::vector<std::string> mine, others;
    for (const auto& c : *chains) {
      bool is_mine = std::any_of(std::begin(kHooks), std::end(kHooks), [&](const Hook& h) { return c == ChainName(id, h); });
      (is_mine ? mine : others).push_back(c);
    }
    if (others.empty()) {
      LAB_RETURN_IF_ERROR(NftDeleteTable(ns, family, table).Prefixed(what));
      continue;
    }
    std::string text;
    for (const auto& c : mine) text += "delete chain " + std::string(family) + " " + table + " " + c + "\n";
    if (!text.empty()) LAB_RETURN_IF_ERROR(NftApply(ns, text).Prefixed(what));
  }
  return Status::Ok();
}

}  // namespace lab::hv::kernel
