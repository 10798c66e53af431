#include <catch2/catch.hpp>

#include "base/net.h"
#include "base/text.h"

using lab::Cidr;
using lab::Ipv4;

TEST_CASE("Cidr parses an interface address and knows its network", "[base]") {
  auto c = Cidr::Parse("192.168.100.7/24");
  REQUIRE(c);
  CHECK(c->ToString() == "192.168.100.7/24");
  CHECK(c->Network().ToString() == "192.168.100.0/24");
  CHECK(c->Contains(*Ipv4::Parse("192.168.100.200")));
  CHECK_FALSE(c->Contains(*Ipv4::Parse("192.168.101.1")));
  CHECK(Cidr::Parse("10.0.0.0/8")->Contains(*Cidr::Parse("10.2.0.0/16")));
  CHECK_FALSE(Cidr::Parse("10.2.0.0/16")->Contains(*Cidr::Parse("10.0.0.0/8")));
}

TEST_CASE("Cidr and Ipv4 reject malformed text", "[base]") {
  CHECK_FALSE(Cidr::Parse("192.168.100.1"));
  CHECK_FALSE(Cidr::Parse("192.168.100.1/33"));
  CHECK_FALSE(Cidr::Parse("192.168.100.1/"));
  CHECK_FALSE(Cidr::Parse("300.1.1.1/24"));
  CHECK_FALSE(Ipv4::Parse("1.2.3"));
  CHECK_FALSE(Ipv4::Parse("1.2.3.4 "));
}

TEST_CASE("Sizes parse with binary units and print back exactly", "[base]") {
  CHECK(lab::ParseSize("2GiB") == (2ull << 30));
  CHECK(lab::ParseSize("512MiB") == (512ull << 20));
  CHECK(lab::ParseSize("4096") == 4096u);
  CHECK_FALSE(lab::ParseSize("2 parsecs"));
  CHECK_FALSE(lab::ParseSize("GiB"));
  CHECK(lab::FormatSize(2ull << 30) == "2GiB");
  CHECK(lab::FormatSize(1536ull << 20) == "1536MiB");
}

TEST_CASE("ClosestMatch suggests a near key and nothing for a far one", "[base]") {
  std::vector<std::string> keys = {"switches", "vms", "nics", "adapters"};
  CHECK(lab::ClosestMatch("swiches", keys) == "switches");
  CHECK_FALSE(lab::ClosestMatch("completely-different", keys));
}
