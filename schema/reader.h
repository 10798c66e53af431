// Reading YAML nodes into typed values while collecting diagnostics (internal to schema/).
//
// Every reader reports its own problem (with the position of the offending value) into a
// ParseContext and returns nullopt; callers carry on so that one run finds every problem.
// The context also remembers where each value was read, by its dotted path in the file
// ("hosts.hv1.vms.middle.adapters[0].ip"), so that the cross-object rules in validate.cc can
// point at the value they complain about. Nothing here throws.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/net.h"
#include "schema/lab.h"
#include "schema/yaml.h"

namespace lab::schema {

/// Dotted path of a value -> where the value is written. Every value read is recorded (tens of
/// thousands in a big lab) and few are looked up, so the paths go into one growing arena and an
/// open-addressing index instead of a node and a string of their own each.
class LocTable {
 public:
  /// Records `path.key` (or `key` when `path` is empty) at `loc`; a later record of the same path
  /// replaces the earlier one.
  void Set(std::string_view path, std::string_view key, Loc loc);
  const Loc* Find(std::string_view path) const;
  size_t size() const { return items_.size(); }
  /// Room for about `values` records without growing.
  void Reserve(size_t values);

 private:
  struct Item {
    uint32_t offset;
    uint32_t length;
    uint64_t hash;
    Loc loc;
  };
  std::string_view PathOf(const Item& item) const { return std::string_view(arena_).substr(item.offset, item.length); }
  /// The slot of `index_` holding `path`, or the empty slot where it would go.
  size_t Slot(std::string_view path, uint64_t hash) const;
  void Grow(size_t at_least = 0);
  std::string arena_;
  std::vector<Item> items_;
  std::vector<uint32_t> index_;  // size a power of two; 0 = empty, else 1 + index into items_
};

struct ParseContext {
  std::string file;
  std::vector<Diagnostic> diagnostics;
  /// Dotted path of a value -> where the value is written.
  LocTable locs;
  /// Machine name -> its dotted path, e.g. "hosts.hv1.vms.middle".
  std::unordered_map<std::string, std::string> machine_path;
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
  /// Images whose kind could not be read: references to them are not checked further.
  std::set<std::string> broken_images;
  /// Every `image:` written (the lab's and machines'): the name, who wrote it, where.
  struct ImageRef {
    std::string image, who;
    Loc loc;
  };
  std::vector<ImageRef> image_refs;
  /// Dotted path of each entry of Lab::checks ("checks[3]").
  std::vector<std::string> check_paths;

  void Error(Loc loc, std::string message);
  /// A problem that does not make the lab invalid (`FILE:LINE:COL: warning: ...`).
  void Warning(Loc loc, std::string message);
  /// Where the value at `path` is; `fallback` when it was not written in the file.
  Loc At(const std::string& path, Loc fallback) const;
};

/// 1-based position of a node; `fallback` for null (absent or empty) values, which have no
/// text of their own to point at.
Loc LocOf(const yaml::Node& node, Loc fallback);

/// One `key: value` of a map, in file order.
struct Entry {
  std::string key;
  Loc key_loc;
  yaml::Node value;
};

/// The entries of a map, in file order; reports keys that are not plain names and keys that
/// repeat (the tree keeps both, and `node[key]` would silently take the first).
std::vector<Entry> Entries(ParseContext& ctx, const yaml::Node& map, const std::string& what);

/// The keys an object may have, as written at the call: a brace list of literals (no vector of
/// strings built per object read) or a vector.
class KeyList {
 public:
  KeyList(std::initializer_list<std::string_view> keys) : views_(keys.begin(), keys.size()) {}
  KeyList(const std::vector<std::string>& keys) : strings_(&keys) {}
  bool Contains(std::string_view key) const;
  std::vector<std::string> ToVector() const;

 private:
  std::span<const std::string_view> views_;
  const std::vector<std::string>* strings_ = nullptr;
};

/// Reads the fixed keys of one object (a VM, a switch, a check...). Unknown keys are reported at
/// construction, with a "did you mean" hint or with a message given for keys known to belong
/// elsewhere (e.g. `processor` on a host).
class MapReader {
 public:
  /// `node` must be a map (or null, read as empty); otherwise "expected a map" is reported and
  /// the reader is empty. `what` names the object in messages ("VM 'middle'").
  MapReader(ParseContext& ctx, const yaml::Node& node, std::string path, std::string what, Loc loc,
            KeyList known, const std::map<std::string, std::string>& misplaced = {});

  /// The value of `key` (recording its position under path.key), or nullopt when absent.
  std::optional<yaml::Node> Get(const std::string& key);
  /// Like Get, but reports "missing required key" when absent.
  std::optional<yaml::Node> Require(const std::string& key, const std::string& hint);
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
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
  const Entry* Find(const std::string& key) const;
  std::vector<Entry> entries_;  // a handful per object: a scan beats a tree
};

// Scalar readers: each reports "WHAT: expected ..." at the value and returns nullopt.
std::optional<std::string> ReadString(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
std::optional<bool> ReadBool(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
std::optional<int> ReadInt(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what, int min,
                           int max);
std::optional<uint64_t> ReadSize(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
std::optional<Ipv4> ReadIpv4(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
/// An interface address with its prefix length (192.168.100.2/24).
std::optional<Cidr> ReadCidr(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
/// A network in network form (192.168.100.0/24); host bits set is an error naming the fix.
std::optional<Cidr> ReadNetwork(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
/// A lower-case unicast MAC address aa:bb:cc:dd:ee:ff.
std::optional<std::string> ReadMac(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
/// A list of IPv4 addresses; a single address is accepted as a list of one.
std::vector<Ipv4> ReadIpv4List(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
std::vector<std::string> ReadStringList(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);
/// "2s", "500ms", "1m" -> milliseconds.
std::optional<int> ReadDuration(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what);

// Name rules. Each returns "" when `name` is valid, else the reason and the fix.
/// The lab: [a-z0-9][a-z0-9-]{0,23}.
std::string CheckLabName(const std::string& name);
/// Networks (a lab concept, not Hyper-V's): [a-z0-9][a-z0-9-]{0,31}.
std::string CheckNetworkName(const std::string& name);
/// Any name Hyper-V takes (hosts, VMs, switches, NICs, adapters, NATs, checkpoints): 1 to 100
/// characters, no control characters and none of / \ : * ? " < > |. Spaces, dots and capitals
/// are fine; the kernel-facing names are derived from it (engine/resources.cc).
std::string CheckHyperVName(const std::string& name);
/// Hosts and VMs: CheckHyperVName (the computer name is derived, schema::ComputerName).
std::string CheckMachineName(const std::string& name);
/// Switches and NATs: CheckHyperVName.
std::string CheckSwitchName(const std::string& name);
/// NICs and adapters: CheckHyperVName, and not "lo" in any case.
std::string CheckInterfaceName(const std::string& name);
/// A computer name (hostname:): [A-Za-z0-9-]{1,63}, not starting or ending with '-'.
std::string CheckComputerName(const std::string& name);

/// "a.b" (or "b" when `path` is empty).
std::string PathJoin(const std::string& path, const std::string& key);

/// The cross-object rules (validate.cc): references, segments and addresses, nesting, NATs,
/// MACs, checks. Runs on what the decoder could read; reports into `ctx`.
void Validate(const Lab& lab, ParseContext& ctx);

}  // namespace lab::schema
