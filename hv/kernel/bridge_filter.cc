// Bridge filters (see bridge_filter.h): bridge-family nftables through libnftables.
#include "hv/kernel/bridge_filter.h"

#include <algorithm>
#include <iterator>
#include <regex>
#include <vector>

#include <nlohmann/json.hpp>

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
                           {"netdev", "_egress", "egress", true},
                           {"bridge", "_out", "output", false},
                           {"bridge", "_pre", "prerouting", false}};

/// Chain names start with a letter whatever the interface name starts with.
std::string ChainName(const std::string& id, const Hook& h) { return "f_" + id + h.suffix; }

/// Rules per hook, in kHooks order: frames the bridge forwards, frames it delivers to the owner
/// (bridge family, by port); frames the bridge device passes up to the owner's stack and frames the
/// owner sends through it (netdev family, on the bridge device itself); frames the owner sends
/// out of the bridge's ports (bridge family). `sets`: declarations for the bridge table.
struct Rules {
  std::vector<std::string> forward, input, ingress, egress, output, prerouting;
  std::string sets;
};

/// The set of a team's local MACs.
std::string LocalSet(const std::string& bridge) { return "s_" + bridge + "_local"; }

bool Listed(const std::vector<std::string>& tables, const std::string& t) {
  return std::find(tables.begin(), tables.end(), t) != tables.end();
}

/// The declaration of table `t` ("bridge NAME"): the kernel refuses to change a table's comment,
/// so only a table not in `tables` (not made yet) gets one.
std::string DeclareTable(const std::vector<std::string>& tables, const std::string& t, const std::string& comment) {
  return "table " + t + (Listed(tables, t) ? " {}\n" : " { comment \"" + comment + "\"; }\n");
}

/// What libnftables lists of `family table` (its chains, sets, rules) as JSON items; none when
/// there is no such table.
Result<nlohmann::json> TableItems(const NetNs& ns, const std::string& family, const std::string& table) {
  auto listing = NftListTable(ns, family, table);
  if (!listing.ok()) return listing.status();
  if (!*listing) return nlohmann::json::array();
  auto doc = nlohmann::json::parse(**listing, nullptr, false);
  if (doc.is_discarded() || !doc.contains("nftables") || !doc["nftables"].is_array())
    return Status::Error("unexpected output from libnftables");
  return std::move(doc["nftables"]);
}

/// Declares the table and `id`'s chains for the hooks that have rules, flushes them and fills
/// them: one transaction.
Status SetChains(const NetNs& ns, const std::string& table, const std::string& comment, const std::string& id,
                 const Rules& rules) {
  const std::vector<std::string>* per_hook[] = {&rules.forward, &rules.input, &rules.ingress, &rules.egress,
                                                &rules.output, &rules.prerouting};
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status();
  std::string text;
  for (size_t i = 0; i < std::size(kHooks); ++i) {
    if (per_hook[i]->empty()) continue;
    const Hook& h = kHooks[i];
    std::string t = std::string(h.family) + " " + table;
    text += DeclareTable(*tables, t, comment);
    if (std::string(h.family) == "bridge" && !rules.sets.empty()) text += "table " + t + " {\n" + rules.sets + "}\n";
    std::string chain = ChainName(id, h);
    text += "table " + t + " {\n  chain " + chain + " {\n    type filter hook " + h.hook +
            (h.on_device ? " device \"" + id + "\"" : "") + " priority filter; policy accept;\n  }\n}\n" +
            "flush chain " + t + " " + chain + "\n";
    for (const auto& r : *per_hook[i]) text += "add rule " + t + " " + chain + " " + r + "\n";
  }
  return NftApply(ns, text);
}

}  // namespace

namespace {

constexpr const char* kFilteredSet = "mac_filtered";
constexpr const char* kPortMacSet = "port_macs";

/// The shared port filter's sets and chains, declared (a no-op when they exist), and each chain's
/// one rule, flushed and added again so it is there exactly once.
std::string PortFilterDeclaration(const std::string& t) {
  std::string text = "table " + t + " {\n  set " + kFilteredSet + " { type ifname; }\n  set " + kPortMacSet +
                     " { type ifname . ether_addr; }\n";
  const std::string rule =
      std::string("iifname @") + kFilteredSet + " iifname . ether saddr != @" + kPortMacSet + " drop";
  std::string rules;
  for (const char* hook : {"forward", "input"}) {
    std::string chain = std::string("ports_") + (hook[0] == 'f' ? "fwd" : "in");
    text += "  chain " + chain + " { type filter hook " + hook + " priority filter; policy accept; }\n";
    rules += "flush chain " + t + " " + chain + "\nadd rule " + t + " " + chain + " " + rule + "\n";
  }
  return text + "}\n" + rules;
}

/// The port's two elements, for `add element` / `delete element`.
std::string PortElements(const char* verb, const std::string& t, const std::string& port, const std::string& mac) {
  return std::string(verb) + " element " + t + " " + kFilteredSet + " { \"" + port + "\" }\n" + verb + " element " +
         t + " " + kPortMacSet + " { \"" + port + "\" . " + mac + " }\n";
}

}  // namespace

Status FilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& comment,
                           const std::string& port, const std::string& mac) {
  std::string what = "MAC address spoofing filter of port " + port;
  if (!IsPlainName(port) || !IsValidMac(mac)) return Status::Error(what + ": invalid port name or MAC " + mac);
  const std::string t = "bridge " + table;
  // Every port after the owner's first finds the sets and their rules in place (they are made in
  // one transaction), so the port is just its two elements. Listing the tables to declare them
  // costs more than the rest of the port (1.7 ms against 0.1 ms here, and it grows with the
  // ports), so it is done only when the elements cannot be added.
  if (NftApply(ns, PortElements("add", t, port, mac)).ok()) return Status::Ok();
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status().Prefixed(what);
  return NftApply(ns, DeclareTable(*tables, t, comment) + PortFilterDeclaration(t) + PortElements("add", t, port, mac))
      .Prefixed(what);
}

Status UnfilterPortSourceMac(const NetNs& ns, const std::string& table, const std::string& port,
                             const std::string& mac) {
  std::string what = "remove MAC address spoofing filter of port " + port;
  if (!IsPlainName(port) || !IsValidMac(mac)) return Status::Error(what + ": invalid port name or MAC " + mac);
  const std::string t = "bridge " + table;
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status().Prefixed(what);
  if (!Listed(*tables, t)) return Status::Ok();
  // Added first, so the delete never fails on an element that is not there: one transaction
  // that ends with the port unfiltered whatever it started from.
  return NftApply(ns, PortFilterDeclaration(t) + PortElements("add", t, port, mac) +
                          PortElements("delete", t, port, mac))
      .Prefixed(what);
}

Result<std::vector<std::pair<std::string, std::string>>> ReadPortSourceMacs(const NetNs& ns, const std::string& table) {
  std::string what = "read MAC address spoofing filters";
  auto items = TableItems(ns, "bridge", table);
  if (!items.ok()) return items.status().Prefixed(what);
  std::vector<std::string> filtered;
  std::vector<std::pair<std::string, std::string>> pairs, out;
  for (const auto& item : *items) {
    if (!item.contains("set") || !item["set"].contains("elem")) continue;
    const auto& set = item["set"];
    const std::string name = set.value("name", "");
    for (const auto& e : set["elem"]) {
      if (name == kFilteredSet && e.is_string()) filtered.push_back(e.get<std::string>());
      // {"concat": ["port", "00:15:5d:..."]}
      if (name == kPortMacSet && e.contains("concat") && e["concat"].size() == 2 && e["concat"][0].is_string() &&
          e["concat"][1].is_string())
        pairs.emplace_back(e["concat"][0].get<std::string>(), e["concat"][1].get<std::string>());
    }
  }
  for (auto& p : pairs)
    if (std::find(filtered.begin(), filtered.end(), p.first) != filtered.end()) out.push_back(std::move(p));
  std::sort(out.begin(), out.end());
  return out;
}

Status IsolateBridgeFromOwner(const NetNs& ns, const std::string& table, const std::string& comment,
                              const std::string& bridge) {
  std::string what = "private switch bridge " + bridge;
  if (!IsPlainName(bridge)) return Status::Error(what + ": invalid bridge name");
  return SetChains(ns, table, comment, bridge, Rules{{}, {}, {"drop"}, {"drop"}}).Prefixed(what);
}

namespace {

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

std::string AnySet(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + Quoted(n);
  return "{ " + out + " }";
}

}  // namespace

Status FilterTeam(const NetNs& ns, const std::string& table, const std::string& comment, const std::string& bridge,
                  const TeamFilter& team) {
  std::string what = "SET team of switch bridge " + bridge;
  bool plain = IsPlainName(bridge) && !team.members.empty();
  for (const auto& m : team.members) plain = plain && IsPlainName(m);
  for (const auto& [port, member] : team.port_member) plain = plain && IsPlainName(port) && IsPlainName(member);
  for (const auto* n : {&team.primary, &team.owner_member}) plain = plain && (n->empty() || IsPlainName(*n));
  if (!plain) return Status::Error(what + ": invalid interface name");
  const std::string members = AnySet(team.members), local = "@" + LocalSet(bridge);
  Rules r;
  // Longer than the bridges' default FDB ageing (300 s), so a quiet VM's MAC stays known at
  // least as long as the wire remembers where it is.
  r.sets = "  set " + LocalSet(bridge) + " { type ether_addr; flags dynamic,timeout; timeout 10m; }\n";
  // In prerouting, before the switch learns from a frame: learn the local MACs from what our
  // ports send (nested VMs behind MAC spoofing included), and what the owner sends.
  r.prerouting.push_back("iifname != " + members + " update " + local + " { ether saddr }");
  r.output.push_back("update " + local + " { ether saddr }");
  // d) our own frames coming back from the wire.
  r.prerouting.push_back("iifname " + members + " ether saddr " + local + " drop");
  // c) flooded frames from the primary only: group addresses, and unicast for none of ours.
  for (const auto& m : team.members)
    if (m != team.primary) r.prerouting.push_back("iifname " + Quoted(m) + " ether daddr != " + local + " drop");
  // a) never from member to member.
  r.forward.push_back("iifname " + members + " oifname " + members + " drop");
  // b) each port through its member; a port not bound yet through the primary.
  for (const auto& [port, member] : team.port_member) {
    r.forward.push_back("iifname " + Quoted(port) + " oifname " + Quoted(member) + " accept");
    r.forward.push_back("iifname " + Quoted(port) + " oifname " + members + " drop");
  }
  r.forward.push_back("iifname != " + members + " oifname " + members +
                      (team.primary.empty() ? "" : " oifname != " + Quoted(team.primary)) + " drop");
  std::string owner = team.owner_member.empty() ? team.primary : team.owner_member;
  if (!owner.empty()) r.output.push_back("oifname " + Quoted(owner) + " accept");
  r.output.push_back("oifname " + members + " drop");
  return SetChains(ns, table, comment, bridge, r).Prefixed(what);
}

Result<TeamFilter> ReadTeamFilter(const NetNs& ns, const std::string& table, const std::string& bridge) {
  std::string what = "read SET team of switch bridge " + bridge;
  if (!IsPlainName(bridge)) return Status::Error(what + ": invalid bridge name");
  auto items = TableItems(ns, "bridge", table);
  if (!items.ok()) return items.status().Prefixed(what);
  TeamFilter team;
  // The accepts of b): `iifname "P" oifname "M" accept` (forward), `oifname "M" accept` (output).
  auto equal_to = [](const nlohmann::json& e, const char* key) -> std::string {
    if (!e.contains("match")) return "";
    const auto& m = e["match"];
    if (m.value("op", "") != "==" || !m["right"].is_string()) return "";
    const auto& left = m["left"];
    if (!left.contains("meta") || left["meta"].value("key", "") != key) return "";
    return m["right"].get<std::string>();
  };
  for (const auto& item : *items) {
    if (!item.contains("rule")) continue;
    const auto& rule = item["rule"];
    std::string chain = rule.value("chain", "");
    const auto& e = rule["expr"];
    if (!e.is_array() || !e.back().contains("accept")) continue;
    if (chain == ChainName(bridge, kHooks[0]) && e.size() == 3) {
      std::string port = equal_to(e[0], "iifname"), member = equal_to(e[1], "oifname");
      if (!port.empty() && !member.empty()) team.port_member.emplace_back(port, member);
    } else if (chain == ChainName(bridge, kHooks[4]) && e.size() == 2) {
      team.owner_member = equal_to(e[0], "oifname");
    }
  }
  return team;
}

Status RemoveBridgeFilter(const NetNs& ns, const std::string& table, const std::string& id) {
  std::string what = "remove bridge filter of " + id;
  if (!IsPlainName(id)) return Status::Error(what + ": invalid name");
  for (const char* family : {"bridge", "netdev"}) {
    // One listing gives the chains and the sets.
    auto items = TableItems(ns, family, table);
    if (!items.ok()) return items.status().Prefixed(what);
    if (items->empty()) continue;  // no such table
    std::vector<std::string> mine, others;
    bool local_set = false;
    for (const auto& item : *items) {
      if (item.contains("set") && item["set"].value("name", "") == LocalSet(id)) local_set = true;
      if (!item.contains("chain")) continue;
      std::string c = item["chain"].value("name", "");
      bool is_mine = std::any_of(std::begin(kHooks), std::end(kHooks), [&](const Hook& h) { return c == ChainName(id, h); });
      (is_mine ? mine : others).push_back(c);
    }
    if (others.empty()) {
      LAB_RETURN_IF_ERROR(NftDeleteTable(ns, family, table).Prefixed(what));
      continue;
    }
    std::string text;
    for (const auto& c : mine) text += "delete chain " + std::string(family) + " " + table + " " + c + "\n";
    if (local_set) text += "delete set " + std::string(family) + " " + table + " " + LocalSet(id) + "\n";
    if (!text.empty()) LAB_RETURN_IF_ERROR(NftApply(ns, text).Prefixed(what));
  }
  return Status::Ok();
}

}  // namespace lab::hv::kernel
