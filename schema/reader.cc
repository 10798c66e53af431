// Reading YAML nodes into typed values while collecting diagnostics (see reader.h).
#include "schema/reader.h"

#include <cctype>
#include <charconv>

#include "base/text.h"

namespace lab::schema {

namespace {

std::string Quote(const std::string& s) { return "'" + s + "'"; }

/// How a non-scalar (or empty) value is named in "expected X, got Y".
std::string Got(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return Quote(n.Scalar());
    default: return "nothing";
  }
}

bool IsScalar(const YAML::Node& n) { return n.IsDefined() && n.Type() == YAML::NodeType::Scalar; }

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

void ParseContext::Error(Loc loc, std::string message) {
  diagnostics.push_back(Diagnostic{file, loc, std::move(message)});
}

Loc ParseContext::At(const std::string& path, Loc fallback) const {
  auto it = locs.find(path);
  return it == locs.end() ? fallback : it->second;
}

Loc LocOf(const YAML::Node& node, Loc fallback) {
  if (!node.IsDefined() || node.IsNull()) return fallback;
  YAML::Mark m = node.Mark();
  if (m.line < 0 || m.column < 0) return fallback;
  return Loc{m.line + 1, m.column + 1};
}

std::vector<Entry> Entries(ParseContext& ctx, const YAML::Node& map, const std::string& what) {
  std::vector<Entry> out;
  if (!map.IsDefined() || !map.IsMap()) return out;
  std::map<std::string, Loc> seen;
  for (const auto& kv : map) {
    YAML::Node k = kv.first;
    Loc key_loc = LocOf(k, Loc{});
    if (!IsScalar(k)) {
      ctx.Error(key_loc, what + ": expected a name as key, got " + Got(k));
      continue;
    }
    std::string key = k.Scalar();
    auto [pos, inserted] = seen.emplace(key, key_loc);
    if (!inserted) {
      std::string first = pos->second.line == key_loc.line ? "earlier on this line"
                                                          : "first on line " + std::to_string(pos->second.line);
      ctx.Error(key_loc, what + ": key " + Quote(key) + " is given twice (" + first + "); remove one of them");
      continue;
    }
    out.push_back(Entry{key, key_loc, kv.second});
  }
  return out;
}

MapReader::MapReader(ParseContext& ctx, const YAML::Node& node, std::string path, std::string what, Loc loc,
                     const std::vector<std::string>& known, const std::map<std::string, std::string>& misplaced)
    : ctx_(ctx), path_(std::move(path)), what_(std::move(what)), loc_(loc) {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) {
    ctx_.Error(LocOf(node, loc_), what_ + ": expected a map, got " + Got(node));
    ok_ = false;
    return;
  }
  for (auto& e : Entries(ctx_, node, what_)) {
    bool is_known = false;
    for (const auto& k : known) is_known = is_known || k == e.key;
    if (!is_known) {
      auto m = misplaced.find(e.key);
      if (m != misplaced.end()) {
        ctx_.Error(e.key_loc, what_ + ": " + m->second);
      } else if (auto close = ClosestMatch(e.key, known)) {
        ctx_.misspelled.insert(PathJoin(path_, *close));
        ctx_.Error(e.key_loc, what_ + ": unknown key " + Quote(e.key) + "; did you mean " + Quote(*close) + "?");
      } else {
        ctx_.Error(e.key_loc, what_ + ": unknown key " + Quote(e.key) + "; expected one of: " + Join(known, ", "));
      }
      continue;
    }
    entries_.emplace(e.key, std::move(e));
  }
}

std::optional<YAML::Node> MapReader::Get(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  ctx_.locs[PathJoin(path_, key)] = LocOf(it->second.value, it->second.key_loc);
  return it->second.value;
}

std::optional<YAML::Node> MapReader::Require(const std::string& key, const std::string& hint) {
  auto v = Get(key);
  if (!v && ok_ && !ctx_.misspelled.count(PathJoin(path_, key))) ctx_.Error(loc_, what_ + ": missing required key " + Quote(key) + " (" + hint + ")");
  return v;
}

Loc MapReader::KeyLoc(const std::string& key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? loc_ : it->second.key_loc;
}

Loc MapReader::ValueLoc(const std::string& key) const {
  auto it = entries_.find(key);
  return it == entries_.end() ? loc_ : LocOf(it->second.value, it->second.key_loc);
}

std::optional<std::string> ReadString(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
  if (!IsScalar(n)) {
    ctx.Error(LocOf(n, at), what + ": expected a string, got " + Got(n));
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<bool> ReadBool(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
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

std::optional<int> ReadInt(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what, int min,
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

std::optional<uint64_t> ReadSize(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = ParseSize(n.Scalar())) return v;
  }
  ctx.Error(LocOf(n, at), what + ": expected a size like 512MiB or 2GiB (KiB, MiB, GiB or bytes), got " + Got(n));
  return std::nullopt;
}

std::optional<Ipv4> ReadIpv4(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
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

std::optional<Cidr> ReadCidr(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
  if (IsScalar(n)) {
    if (auto v = Cidr::Parse(n.Scalar())) return v;
  }
  ctx.Error(LocOf(n, at),
            what + ": expected an address with a prefix length, like 192.168.100.2/24, got " + Got(n));
  return std::nullopt;
}

std::optional<Cidr> ReadNetwork(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
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

std::optional<std::string> ReadMac(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
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

std::vector<Ipv4> ReadIpv4List(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
  std::vector<Ipv4> out;
  if (IsScalar(n)) {
    if (auto v = ReadIpv4(ctx, n, at, what)) out.push_back(*v);
    return out;
  }
  if (!n.IsDefined() || !n.IsSequence()) {
    ctx.Error(LocOf(n, at), what + ": expected a list of IPv4 addresses, like [10.10.0.1], got " + Got(n));
    return out;
  }
  for (const auto& item : n)
    if (auto v = ReadIpv4(ctx, item, LocOf(n, at), what)) out.push_back(*v);
  return out;
}

std::vector<std::string> ReadStringList(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
  std::vector<std::string> out;
  if (!n.IsDefined() || !n.IsSequence()) {
    ctx.Error(LocOf(n, at), what + ": expected a list, like [a, b], got " + Got(n));
    return out;
  }
  for (const auto& item : n)
    if (auto v = ReadString(ctx, item, LocOf(n, at), what)) out.push_back(*v);
  return out;
}

std::optional<int> ReadDuration(ParseContext& ctx, const YAML::Node& n, Loc at, const std::string& what) {
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

std::string CheckMachineName(const std::string& name) { return CheckName(name, 32, true); }

std::string CheckSwitchName(const std::string& name) { return CheckName(name, 32, false); }

std::string CheckInterfaceName(const std::string& name) {
  if (name == "lo") return "is the loopback interface inside every machine; choose another name";
  if (name.size() > 15)
    return "is " + std::to_string(name.size()) +
           " characters long; interface names are at most 15 characters (the Linux kernel limit, IFNAMSIZ)";
  return CheckName(name, 15, false);
}

}  // namespace lab::schema
