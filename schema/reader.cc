// Reading YAML nodes into typed values while collecting diagnostics (see reader.h).
#include "schema/reader.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <unordered_map>

#include "base/text.h"

namespace lab::schema {

namespace {

std::string Quote(const std::string& s) { return "'" + s + "'"; }

/// How a non-scalar (or empty) value is named in "expected X, got Y".
std::string Got(const yaml::Node& n) {
  switch (n.Type()) {
    case yaml::NodeType::kMap: return "a map";
    case yaml::NodeType::kSequence: return "a list";
    case yaml::NodeType::kScalar: return Quote(n.Scalar());
    default: return "nothing";
  }
}

bool IsScalar(const yaml::Node& n) { return n.IsScalar(); }

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

std::string CheckName(const std::string& name, size_t max, bool lower_and_dash_only) {
  std::string rule = lower_and_dash_only
                         ? "use 1 to " + std::to_string(max) +
                               " characters from a-z, 0-9 and '-', starting with a letter or digit"
                         : "use 1 to " + std::to_string(max) +
                               " characters from A-Z, a-z, 0-9, '_', '.' and '-', starting with a letter or digit";
  if (name.empty() || name.size() > max) return "is " + std::to_string(name.size()) + " characters long; " + rule;
  if (lower_and_dash_only ? !IsLowerAlnum(name[0]) : !IsAlnum(name[0])) return "is invalid; " + rule;
  for (char c : name) {
    bool ok = lower_and_dash_only ? (IsLowerAlnum(c) || c == '-')
                                  : (IsAlnum(c) || c == '_' || c == '.' || c == '-');
    if (!ok) return "is invalid; " + rule;
  }
  return "";
}

}  // namespace

void LocTable::Set(std::string_view path, std::string_view key, Loc loc) {
  size_t offset = arena_.size();
  if (!path.empty()) {
    arena_.append(path);
    arena_.push_back('.');
  }
  arena_.append(key);
  std::string_view joined = std::string_view(arena_).substr(offset);
  uint64_t hash = Fnv1a64(joined);
  if (2 * (items_.size() + 1) > index_.size()) Grow();
  size_t slot = Slot(joined, hash);
  if (index_[slot] != 0) {  // recorded before: the later position wins, as in a map
    items_[index_[slot] - 1].loc = loc;
    arena_.resize(offset);
    return;
  }
  items_.push_back(Item{static_cast<uint32_t>(offset), static_cast<uint32_t>(joined.size()), hash, loc});
  index_[slot] = static_cast<uint32_t>(items_.size());
}

const Loc* LocTable::Find(std::string_view path) const {
  if (index_.empty()) return nullptr;
  size_t slot = Slot(path, Fnv1a64(path));
  return index_[slot] == 0 ? nullptr : &items_[index_[slot] - 1].loc;
}

size_t LocTable::Slot(std::string_view path, uint64_t hash) const {
  size_t mask = index_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint32_t at = index_[i];
    if (at == 0) return i;
    const Item& item = items_[at - 1];
    if (item.hash == hash && PathOf(item) == path) return i;
  }
}

void LocTable::Reserve(size_t values) {
  items_.reserve(values);
  arena_.reserve(values * 32);  // dotted paths of a VM's values are about 30 bytes
  if (index_.size() < 2 * values) Grow(2 * values);
}

void LocTable::Grow(size_t at_least) {
  std::vector<uint32_t> old = std::move(index_);
  size_t size = old.empty() ? 64 : 2 * old.size();
  while (size < at_least) size *= 2;
  index_.assign(size, 0);
  size_t mask = index_.size() - 1;
  for (uint32_t at : old) {
    if (at == 0) continue;
    size_t i = items_[at - 1].hash & mask;
    while (index_[i] != 0) i = (i + 1) & mask;
    index_[i] = at;
  }
}

void ParseContext::Error(Loc loc, std::string message) {
  diagnostics.push_back(Diagnostic{file, loc, std::move(message)});
}

void ParseContext::Warning(Loc loc, std::string message) {
  diagnostics.push_back(Diagnostic{file, loc, std::move(message), Severity::kWarning});
}

Loc ParseContext::At(const std::string& path, Loc fallback) const {
  const Loc* loc = locs.Find(path);
  return loc ? *loc : fallback;
}

Loc LocOf(const yaml::Node& node, Loc fallback) {
  if (!node.IsDefined() || node.IsNull()) return fallback;
  yaml::Mark m = node.GetMark();
  if (m.line < 0 || m.column < 0) return fallback;
  return Loc{m.line + 1, m.column + 1};
}

std::vector<Entry> Entries(ParseContext& ctx, const yaml::Node& map, const std::string& what) {
  std::vector<Entry> out;
  if (!map.IsDefined() || !map.IsMap()) return out;
  out.reserve(map.size());
  // The keys seen so far are the entries kept: a scan of them for the handful of keys of an
  // object, an index only for big maps (the VMs of a host), so a small map costs no tree.
  constexpr size_t kScanUpTo = 16;
  std::unordered_map<std::string_view, size_t> seen;  // key -> index in out (big maps)
  if (map.size() > kScanUpTo) seen.reserve(map.size());
  for (size_t i = 0; i < map.size(); ++i) {
    yaml::Node k = map.Key(i);
    // An empty key (`? ` alone, `{: x}`) has no text of its own: point at its value, or the map.
    Loc key_loc = LocOf(k, LocOf(map.Value(i), LocOf(map, Loc{1, 1})));
    if (!IsScalar(k)) {
      ctx.Error(key_loc, what + ": expected a name as key, got " + Got(k));
      continue;
    }
    const std::string& key = k.Scalar();  // lives in the document, as long as the map
    const Entry* first = nullptr;
    if (map.size() > kScanUpTo) {
      auto [pos, inserted] = seen.emplace(key, out.size());
      if (!inserted) first = &out[pos->second];
    } else {
      for (const auto& e : out)
        if (e.key == key) first = &e;
    }
    if (first) {
      std::string where = first->key_loc.line == key_loc.line ? "earlier on this line"
                                                              : "first on line " + std::to_string(first->key_loc.line);
      ctx.Error(key_loc, what + ": key " + Quote(key) + " is given twice (" + where + "); remove one of them");
      continue;
    }
    out.push_back(Entry{key, key_loc, map.Value(i)});
  }
  return out;
}

bool KeyList::Contains(std::string_view key) const {
  if (strings_) return std::find(strings_->begin(), strings_->end(), key) != strings_->end();
  return std::find(views_.begin(), views_.end(), key) != views_.end();
}

std::vector<std::string> KeyList::ToVector() const {
  if (strings_) return *strings_;
  return std::vector<std::string>(views_.begin(), views_.end());
}

MapReader::MapReader(ParseContext& ctx, const yaml::Node& node, std::string path, std::string what, Loc loc,
                     KeyList known, const std::map<std::string, std::string>& misplaced)
    : ctx_(ctx), path_(std::move(path)), what_(std::move(what)), loc_(loc) {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) {
    ctx_.Error(LocOf(node, loc_), what_ + ": expected a map, got " + Got(node));
    ok_ = false;
    return;
  }
  for (auto& e : Entries(ctx_, node, what_)) {
    if (!known.Contains(e.key)) {
      auto m = misplaced.find(e.key);
      if (m != misplaced.end()) {
        ctx_.Error(e.key_loc, what_ + ": " + m->second);
      } else if (auto close = ClosestMatch(e.key, known.ToVector())) {
        ctx_.misspelled.insert(PathJoin(path_, *close));
        ctx_.Error(e.key_loc, what_ + ": unknown key " + Quote(e.key) + "; did you mean " + Quote(*close) + "?");
      } else {
        ctx_.Error(e.key_loc, what_ + ": unknown key " + Quote(e.key) + "; expected one of: " + Join(known.ToVector(), ", "));
      }
      continue;
    }
    entries_.push_back(std::move(e));
  }
}

const Entry* MapReader::Find(const std::string& key) const {
  for (const auto& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}

std::optional<yaml::Node> MapReader::Get(const std::string& key) {
  const Entry* e = Find(key);
  if (!e) return std::nullopt;
  ctx_.locs.Set(path_, key, LocOf(e->value, e->key_loc));
  return e->value;
}

std::optional<yaml::Node> MapReader::Require(const std::string& key, const std::string& hint) {
  auto v = Get(key);
  if (!v && ok_ && !ctx_.misspelled.count(PathJoin(path_, key))) ctx_.Error(loc_, what_ + ": missing required key " + Quote(key) + " (" + hint + ")");
  return v;
}

Loc MapReader::KeyLoc(const std::string& key) const {
  const Entry* e = Find(key);
  return e ? e->key_loc : loc_;
}

Loc MapReader::ValueLoc(const std::string& key) const {
  const Entry* e = Find(key);
  return e ? LocOf(e->value, e->key_loc) : loc_;
}

std::optional<std::string> ReadString(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (!IsScalar(n)) {
    ctx.Error(LocOf(n, at), what + ": expected a string, got " + Got(n));
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<bool> ReadBool(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    // Only YAML 1.2's booleans: "yes"/"on" are strings there, and a lab file should not
    // depend on which YAML version the reader follows.
    const std::string& s = n.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
  }
  ctx.Error(LocOf(n, at), what + ": expected true or false, got " + Got(n));
  return std::nullopt;
}

std::optional<int> ReadInt(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what, int min,
                           int max) {
  std::string range = "from " + std::to_string(min) + " to " + std::to_string(max);
  if (IsScalar(n)) {
    const std::string& s = n.Scalar();
    int v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && ptr == s.data() + s.size() && !s.empty()) {
      if (v >= min && v <= max) return v;
      ctx.Error(LocOf(n, at), what + ": " + s + " is out of range; use a whole number " + range);
      return std::nullopt;
    }
  }
  ctx.Error(LocOf(n, at), what + ": expected a whole number " + range + ", got " + Got(n));
  return std::nullopt;
}

std::optional<uint64_t> ReadSize(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = ParseSize(n.Scalar())) return v;
  }
  ctx.Error(LocOf(n, at), what + ": expected a size like 512MiB or 2GiB (KiB, MiB, GiB or bytes), got " + Got(n));
  return std::nullopt;
}

std::optional<Ipv4> ReadIpv4(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = Ipv4::Parse(n.Scalar())) return v;
    if (Cidr::Parse(n.Scalar())) {
      ctx.Error(LocOf(n, at), what + ": expected an address without a prefix length, like 10.10.0.1, got " + Got(n));
      return std::nullopt;
    }
  }
  ctx.Error(LocOf(n, at), what + ": expected an IPv4 address, like 10.10.0.1, got " + Got(n));
  return std::nullopt;
}

std::optional<Cidr> ReadCidr(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = Cidr::Parse(n.Scalar())) return v;
  }
  ctx.Error(LocOf(n, at),
            what + ": expected an address with a prefix length, like 192.168.100.2/24, got " + Got(n));
  return std::nullopt;
}

std::optional<Cidr> ReadNetwork(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = Cidr::Parse(n.Scalar())) {
      if (v->Network() == *v) return v;
      ctx.Error(LocOf(n, at), what + ": " + v->ToString() + " has host bits set; write the network form " +
                                  v->Network().ToString());
      return std::nullopt;
    }
  }
  ctx.Error(LocOf(n, at), what + ": expected a network with a prefix length, like 192.168.100.0/24, got " + Got(n));
  return std::nullopt;
}

std::optional<std::string> ReadMac(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n) && IsValidMac(n.Scalar())) {
    std::string mac = n.Scalar();
    for (char& c : mac) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    int first = std::stoi(mac.substr(0, 2), nullptr, 16);
    if (first & 1) {
      ctx.Error(LocOf(n, at), what + ": " + mac +
                                  " is a multicast address (the first octet is odd); use a unicast address "
                                  "like 00:15:5d:00:00:01");
      return std::nullopt;
    }
    return mac;
  }
  ctx.Error(LocOf(n, at), what + ": expected a MAC address like 00:15:5d:00:00:01, got " + Got(n));
  return std::nullopt;
}

std::vector<Ipv4> ReadIpv4List(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  std::vector<Ipv4> out;
  if (IsScalar(n)) {
    if (auto v = ReadIpv4(ctx, n, at, what)) out.push_back(*v);
    return out;
  }
  if (!n.IsDefined() || !n.IsSequence()) {
    ctx.Error(LocOf(n, at), what + ": expected a list of IPv4 addresses, like [10.10.0.1], got " + Got(n));
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i)
    if (auto v = ReadIpv4(ctx, n[i], LocOf(n, at), what)) out.push_back(*v);
  return out;
}

std::vector<std::string> ReadStringList(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  std::vector<std::string> out;
  if (!n.IsDefined() || !n.IsSequence()) {
    ctx.Error(LocOf(n, at), what + ": expected a list, like [a, b], got " + Got(n));
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i)
    if (auto v = ReadString(ctx, n[i], LocOf(n, at), what)) out.push_back(*v);
  return out;
}

std::optional<int> ReadDuration(ParseContext& ctx, const yaml::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    const std::string& s = n.Scalar();
    size_t digits = 0;
    while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
    std::string unit = s.substr(digits);
    long long v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + digits, v);
    long long mult = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : 0;
    if (digits > 0 && ec == std::errc() && mult != 0) {
      if (v > 0 && v <= 600000 / mult) return static_cast<int>(v * mult);
      ctx.Error(LocOf(n, at), what + ": " + s + " is out of range; use 1ms to 10m");
      return std::nullopt;
    }
  }
  ctx.Error(LocOf(n, at), what + ": expected a duration like 2s or 500ms, got " + Got(n));
  return std::nullopt;
}

std::string CheckLabName(const std::string& name) { return CheckName(name, 24, true); }

std::string PathJoin(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string CheckNetworkName(const std::string& name) { return CheckName(name, 32, true); }

std::string CheckImageName(const std::string& name) {
  static const std::string kRule = "use 1 to 64 lower-case letters, digits, '.', '_' and '-', starting with a letter or digit";
  if (name == kHostImage) return "is reserved for the host's own software (a machine without image:); pick another name";
  if (name.empty() || name.size() > 64) return "is " + std::to_string(name.size()) + " characters long; " + kRule;
  for (size_t i = 0; i < name.size(); ++i) {
    auto u = static_cast<unsigned char>(name[i]);
    bool ok = std::islower(u) || std::isdigit(u) || (i > 0 && (name[i] == '.' || name[i] == '_' || name[i] == '-'));
    if (!ok) return "has the character '" + std::string(1, name[i]) + "' there; " + kRule;
  }
  return "";
}

std::string CheckHyperVName(const std::string& name) {
  static const std::string kRule =
      "use 1 to 100 characters, without control characters or any of / \\ : * ? \" < > | (as Hyper-V takes names)";
  if (name.empty() || name.size() > 100) return "is " + std::to_string(name.size()) + " characters long; " + kRule;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return "has a control character; " + kRule;
    if (std::string_view("/\\:*?\"<>|").find(c) != std::string_view::npos)
      return "has the character '" + std::string(1, c) + "'; " + kRule;
  }
  return "";
}

std::string CheckMachineName(const std::string& name) { return CheckHyperVName(name); }

std::string CheckSwitchName(const std::string& name) { return CheckHyperVName(name); }

std::string CheckInterfaceName(const std::string& name) {
  if (FoldCase(name) == "lo") return "is the loopback interface inside every machine; choose another name";
  return CheckHyperVName(name);
}

std::string CheckComputerName(const std::string& name) {
  static const std::string kRule = "use 1 to 63 characters from A-Z, a-z, 0-9 and '-', not starting or ending with '-'";
  if (name.empty() || name.size() > 63) return "is " + std::to_string(name.size()) + " characters long; " + kRule;
  if (name.front() == '-' || name.back() == '-') return "starts or ends with '-'; " + kRule;
  for (char c : name)
    if (!IsAlnum(c) && c != '-') return "is invalid; " + kRule;
  return "";
}

}  // namespace lab::schema
