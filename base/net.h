// IPv4 addresses and prefixes as plain values (the lab speaks IPv4 only, as the seeds do).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lab {

struct Ipv4 {
  uint32_t value = 0;  // host byte order
  auto operator<=>(const Ipv4&) const = default;

  static std::optional<Ipv4> Parse(std::string_view text);
  std::string ToString() const;
};

/// An address with a prefix length, e.g. 192.168.100.1/24 (an interface address) or
/// 192.168.100.0/24 (a network).
struct Cidr {
  Ipv4 addr;
  int prefix = 32;
  auto operator<=>(const Cidr&) const = default;

  static std::optional<Cidr> Parse(std::string_view text);
  std::string ToString() const;
  uint32_t Mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  /// The network this address is on: 192.168.100.7/24 -> 192.168.100.0/24.
  Cidr Network() const { return Cidr{Ipv4{addr.value & Mask()}, prefix}; }
  bool Contains(Ipv4 ip) const { return (ip.value & Mask()) == (addr.value & Mask()); }
  /// True when every address of `other` is inside this prefix.
  bool Contains(const Cidr& other) const { return other.prefix >= prefix && Contains(other.addr); }
  bool IsNetworkAddress() const { return prefix < 31 && addr.value == Network().addr.value; }
  bool IsBroadcastAddress() const { return prefix < 31 && (addr.value | ~Mask()) == addr.value; }
};

/// A MAC address "00:15:5d:xx:xx:xx" (lower case).
bool IsValidMac(std::string_view text);

}  // namespace lab
