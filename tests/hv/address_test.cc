// The hypervisor changes a NIC's address on the live link, and a change the kernel refuses
// halfway leaves the link as it was (a failed step undoes its own partial work). Root only: a
// private lab of one network and one host in a temp run root.
#include <catch2/catch.hpp>

#include <filesystem>
#include <set>
#include <string>
#include <tuple>

#include "base/text.h"
#include "hv/hypervisor.h"
#include "hv/kernel/netlink.h"
#include "tests/support.h"

namespace lab::hv {
namespace {

/// One lab network and one host with a NIC on it, taken down again at the end of the test.
struct OneHost {
  std::string dir = testing::TempDir("lab-addr");
  LabContext ctx;
  std::unique_ptr<Hypervisor> hv;
  NetworkSpec net{"lan", *Cidr::Parse("10.77.0.0/24"), Ipv4::Parse("10.77.0.1")};
  PartitionSpec host;
  NicSpec nic;
  std::string net_facts, host_facts;

  OneHost() {
    ctx.lab = "addrtest";
    ctx.uid = Hex(Fnv1a64(dir), 12);
    ctx.run_root = dir + "/run";
    ctx.state_root = dir + "/state";
    ctx.init_path = std::string(LAB_BINARY_DIR) + "/lab-init";
    hv = MakeLinuxHypervisor(ctx);
    host.name = "hv1";
    host.lineage = {"hv1"};
    host.is_host = true;
    nic.machine = "hv1";
    nic.name = "Ethernet";
    nic.network = "lan";
    nic.port = "nhv1eth";
    nic.mac = "00:15:5d:77:00:11";
    nic.ip = Cidr::Parse("10.77.0.11/24");
    nic.gateway = Ipv4::Parse("10.77.0.1");
    auto n = hv->CreateNetwork(net);
    INFO(n.message());
    REQUIRE(n.ok());
    net_facts = *n;
    auto h = hv->CreatePartition(host);
    INFO(h.message());
    REQUIRE(h.ok());
    host_facts = *h;
    auto c = hv->CreateNic(nic);
    INFO(c.message());
    REQUIRE(c.ok());
  }
  ~OneHost() {
    (void)hv->RemoveNic(nic, "{}");
    (void)hv->RemovePartition(host, host_facts);
    (void)hv->RemoveNetwork(net, net_facts);
    (void)hv->RemoveLabRoot();
    hv.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  /// The NIC as the kernel has it: ifindex, addresses, the default route's gateway ("" = none).
  std::tuple<int, std::set<std::string>, std::string> Look() {
    auto ns = kernel::NetNs::Open(ctx.run_root + "/" + ctx.Mark() + "/m/hv1/ns/net");
    REQUIRE(ns.ok());
    auto nl = kernel::Netlink::In(*ns);
    REQUIRE(nl.ok());
    auto link = nl->FindLink("Ethernet");
    REQUIRE(link.ok());
    REQUIRE(link->has_value());
    std::set<std::string> addrs;
    auto all = nl->Addresses();
    REQUIRE(all.ok());
    for (const auto& a : *all)
      if (a.index == (*link)->index) addrs.insert(a.address.ToString());
    std::string routes;
    REQUIRE(kernel::WithNetNs(*ns, [&] {
              routes = ReadFile("/proc/thread-self/net/route").value_or("");
              return Status::Ok();
            }).ok());
    std::string gateway;
    for (const auto& line : Split(routes, '\n')) {
      auto f = Split(line, '\t');
      if (f.size() > 2 && f[1] == "00000000") gateway = f[2];  // little-endian hex
    }
    return {(*link)->index, addrs, gateway};
  }
};

}  // namespace

TEST_CASE("A NIC's address and gateway change on the live link, and a refused change leaves it as it was",
          "[root][hv]") {
  LAB_REQUIRE_ROOT("bringing up a partition");
  OneHost one;
  auto [index, addrs, gateway] = one.Look();
  CHECK(addrs == std::set<std::string>{"10.77.0.11/24"});
  CHECK(gateway == "01004D0A");  // 10.77.0.1

  // In the same subnet (the new address starts as the old one's secondary), gateway moved too.
  NicSpec moved = one.nic;
  moved.ip = Cidr::Parse("10.77.0.12/24");
  moved.gateway = Ipv4::Parse("10.77.0.254");
  auto set = one.hv->SetNicAddress(moved, "{}");
  INFO(set.message());
  REQUIRE(set.ok());
  auto [index2, addrs2, gateway2] = one.Look();
  CHECK(index2 == index);  // the same link
  CHECK(addrs2 == std::set<std::string>{"10.77.0.12/24"});
  CHECK(gateway2 == "FE004D0A");  // 10.77.0.254

  // A gateway the new address cannot reach: the kernel refuses the route after the address
  // changed, and the NIC gets its address and default route back.
  NicSpec refused = moved;
  refused.ip = Cidr::Parse("10.78.0.12/24");
  refused.gateway = Ipv4::Parse("10.79.0.1");
  auto no = one.hv->SetNicAddress(refused, "{}");
  REQUIRE_FALSE(no.ok());
  CHECK(no.message().find("NIC 'Ethernet' of host 'hv1'") != std::string::npos);
  auto [index3, addrs3, gateway3] = one.Look();
  CHECK(index3 == index);
  CHECK(addrs3 == std::set<std::string>{"10.77.0.12/24"});
  CHECK(gateway3 == "FE004D0A");

  // No gateway any more: the default route through it goes.
  NicSpec bare = moved;
  bare.gateway.reset();
  REQUIRE(one.hv->SetNicAddress(bare, "{}").ok());
  auto [index4, addrs4, gateway4] = one.Look();
  CHECK(addrs4 == std::set<std::string>{"10.77.0.12/24"});
  CHECK(gateway4.empty());
}

}  // namespace lab::hv
