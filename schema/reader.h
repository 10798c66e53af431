// Reading YAML nodes into typed values while collecting diagnostics (internal to schema/).
//
// Every reader reports its own problem (with the position of the offending value) into a
// ParseContext and returns nullopt; callers carry on so that one run finds every problem.
// The context also remembers where each value was read, by its dotted path in the file
// ("hosts.hv1.vms.middle.adapters[0].ip"), so that the cross-object rules in validate.cc can
// point at the value they complain about. Nothing here throws: yaml-cpp is only asked about
// nodes whose type has been checked first.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/net.h"
#include "schema/lab.h"

namespace lab::schema {

struct ParseContext {
  std::string file;
  std::vector<Diagnostic> diagnostics;
  /// Dotted path of a value -> where the value is written.
  std::map<std::string, Loc> locs;
  /// Machine name -> its dotted path, e.g. "hosts.hv1.vms.middle".
  std::map<std::string, std::string> machine_path;
  /// "OWNER/SWITCH" of switches whose type could not be read: rules that depend on the type
  /// skip them so one typo does not cascade into several errors.
  std::set<std::string> broken_switches;
  /// Networks whose subnet could not be read: addresses on them are not checked.
  std::set<std::string> broken_networks;
  /// Dotted paths of keys that were misspelled (reported with "did you mean"): rules that
  /// would complain that they are missing stay quiet.
  std::set<std::string> misspelled;
  /// (VM, index in Machine::adapters) -> dotted path of the adapter ("...adapters[1]").
  std::map<std::pair<std::string, size_t>, std::string> adapter_paths;
  /// Dotted path of each entry of Lab::checks ("checks[3]").
  std::vector<std::string> check_paths;

  void Error(Loc loc, std::string message);
  /// Where the value at `path` is; `fallback` when it was not written in the file.
  Loc At(const std::string& path, Loc fallback) const;
};

/// 1-based position of a node; `fallback` for null (absent or empty) values, whose yaml-cpp
/// mark points at whatever token follows.
Loc LocOf(const YAML::Node& node, Loc fallback);

/// One `key: value` of a map, in file order.
struct Entry {
  std::string key;
  Loc key_loc;
  YAML::Node value;
};

/// The entries of a map, in file order; reports keys that are not plain names and keys that
/// repeat (yaml-cpp keeps both, and `node[key]` would silently take the first).
std::vector<Entry> Entries(ParseContext& ctx, const YAML::Node& map, const std::string& what);

/// Reads the fixed keys of one object (a VM, a switch, a check...). Unknown keys are reported at
/// construction, with a "did you mean" hint or with a message given for keys known to belong
/// elsewhere (e.g. `processor` on a host).
class MapReader {
 public:
  /// `node` must be a map (or null, read as empty); otherwise "expected a map" is reported and
  /// the reader is empty. `what` names the object in messages ("VM 'middle'").
  MapReader(ParseContext& ctx, const YAML::Node& node, std::string path, std::string what, Loc loc,
            const std::vector<std::string>& known,
            const std::map<std::string, std::string>& misplaced = {});

  /// The value of `key` (recording its position under path.key), or nullopt when absent.
  std::optional<YAML::Node> Get(const std::string& key);
  /// Like Get, but reports "missing required key" when absent.
  std::optional<YAML::Node> Require(const std::string& key, const std::string& hint);
  bool Has(const std::string& key) const { return entries_.count(key) != 0; }
  /// Position of `key` itself; the object's position when absent.
  Loc KeyLoc(const std::string& key) const;
  /// Position of the value of `key`; the key's when the value is empty.
  Loc ValueLoc(const std::string& key) const;
  bool ok() const { return ok_; }
  Loc loc() const { return loc_; }
  const std::string& path() const { return path_; }
  const std::string& what() const { return what_; }

 private:
  ParseContext& ctx_;
  std::string path_;
  std::string what_;
  Loc loc_;
  bool ok_ = true;
  std::map<std::string, Entry> entries_;
};

// Scalar readers: each reports "WHAT: expected ..." at the value and returns nullopt.
std::optional<std::string> ReadString(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
std::optional<bool> ReadBool(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
std::optional<int> ReadInt(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what, int min,
                           int max);
std::optional<uint64_t> ReadSize(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
std::optional<Ipv4> ReadIpv4(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
/// An interface address with its prefix length (192.168.100.2/24).
std::optional<Cidr> ReadCidr(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
/// A network in network form (192.168.100.0/24); host bits set is an error naming the fix.
std::optional<Cidr> ReadNetwork(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
/// A lower-case unicast MAC address aa:bb:cc:dd:ee:ff.
std::optional<std::string> ReadMac(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
/// A list of IPv4 addresses; a single address is accepted as a list of one.
std::vector<Ipv4> ReadIpv4List(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
std::vector<std::string> ReadStringList(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);
/// "2s", "500ms", "1m" -> milliseconds.
std::optional<int> ReadDuration(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what);

// Name rules. Each returns "" when `name` is valid, else the reason and the fix.
/// The lab: [a-z0-9][a-z0-9-]{0,23}.
std::string CheckLabName(const std::string& name);
/// Machines and networks: [a-z0-9][a-z0-9-]{0,31} (a machine's name is its hostname).
std::string CheckMachineName(const std::string& name);
/// Switches and NATs: [A-Za-z0-9][A-Za-z0-9_.-]{0,31}.
std::string CheckSwitchName(const std::string& name);
/// Interface names inside a machine: [A-Za-z0-9][A-Za-z0-9_.-]{0,14}, not "lo".
std::string CheckInterfaceName(const std::string& name);

/// "a.b" (or "b" when `path` is empty).
std::string PathJoin(const std::string& path, const std::string& key);

/// The cross-object rules (validate.cc): references, segments and addresses, nesting, NATs,
/// MACs, checks. Runs on what the decoder could read; reports into `ctx`.
void Validate(const Lab& lab, ParseContext& ctx);

}  // namespace lab::schema
