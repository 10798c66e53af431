#include "base/net.h"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>

namespace lab {

std::optional<Ipv4> Ipv4::Parse(std::string_view text) {
  // inet_pton accepts exactly dotted quads, no leading zeros trickery beyond that.
  std::string s(text);
  in_addr a{};
  if (s.empty() || s.size() > 15 || inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return Ipv4{ntohl(a.s_addr)};
}

std::string Ipv4::ToString() const {
  return std::to_string(value >> 24) + "." + std::to_string((value >> 16) & 255) + "." +
         std::to_string((value >> 8) & 255) + "." + std::to_string(value & 255);
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = Ipv4::Parse(text.substr(0, slash));
  if (!ip) return std::nullopt;
  std::string_view len = text.substr(slash + 1);
  int prefix = -1;
  auto [ptr, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
  if (ec != std::errc() || ptr != len.data() + len.size() || len.empty() || prefix < 0 || prefix > 32)
    return std::nullopt;
  return Cidr{*ip, prefix};
}

std::string Cidr::ToString() const { return addr.ToString() + "/" + std::to_string(prefix); }

bool IsValidMac(std::string_view text) {
  if (text.size() != 17) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i % 3 == 2) {
      if (text[i] != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace lab
