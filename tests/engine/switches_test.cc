// Switch port settings in the planner and executor: MAC address spoofing changes a connected
// adapter in place (Set-VMNetworkAdapter), and a NAT's DNS proxy follows the owner's DNS servers.
#include <catch2/catch.hpp>

#include "engine/executor.h"
#include "engine/plan.h"
#include "engine/resources.h"
#include "hv/spec.h"
#include "tests/engine/engine_support.h"

using lab::engine::ActionType;
using lab::engine::ComputePlan;
using lab::engine::Desired;
using lab::engine::Plan;
using lab::testing::ByKey;
using lab::testing::kUid;
using lab::testing::LabText;
using lab::testing::LoadLab;
using lab::testing::ParseLab;
using lab::testing::Recorded;
using lab::testing::ReplaceOnce;

namespace {

const char* kEthernet2Off = "{name: Ethernet2, switch: External, mac_address_spoofing: false}";
const char* kEthernet2On = "{name: Ethernet2, switch: External, mac_address_spoofing: true}";

}  // namespace

TEST_CASE("Planner changes MAC address spoofing of a connected adapter in place, remaking nothing", "[engine]") {
  auto before = Desired(LoadLab("nested-mac-spoofing"), kUid);
  auto after = Desired(ParseLab(ReplaceOnce(LabText("nested-mac-spoofing"), kEthernet2Off, kEthernet2On)), kUid);
  Plan plan = ComputePlan(after, Recorded(before), {});
  REQUIRE(plan.actions.size() == 1);
  const auto& a = plan.actions[0];
  CHECK(a.resource.key == "adapter/middle/Ethernet2");
  CHECK(a.type == ActionType::kUpdate);
  CHECK(a.reason ==
        "mac_address_spoofing false -> true: in place, the adapter stays connected (Set-VMNetworkAdapter)");
  CHECK(plan.Summary() == "Plan: 0 to add, 1 to change, 0 to destroy.");

  lab::testing::FakeHypervisor hv;
  auto facts = lab::engine::UpdateResource(hv, a.resource, a.old, a.old_facts);
  REQUIRE(facts.ok());
  CHECK(hv.Calls() == std::vector<std::string>{"SetAdapter middle/Ethernet2 mac_address_spoofing=on"});  // no address
}

TEST_CASE("Planner still remakes an adapter when more than MAC address spoofing changes", "[engine]") {
  auto before = Desired(LoadLab("nested-mac-spoofing"), kUid);
  auto text = ReplaceOnce(LabText("nested-mac-spoofing"), kEthernet2Off,
                          "{name: Ethernet2, switch: External, mac_address_spoofing: true, mac: 00:15:5d:00:00:42}");
  Plan plan = ComputePlan(Desired(ParseLab(text), kUid), Recorded(before), {});
  auto by = ByKey(plan);
  REQUIRE(by.count("adapter/middle/Ethernet2"));
  CHECK(by["adapter/middle/Ethernet2"]->type == ActionType::kReplace);
}

TEST_CASE("A NAT's DNS proxy listens on the switch's address and waits for the owner's DNS servers", "[engine]") {
  auto rs = Desired(LoadLab("nested-mac-spoofing"), kUid);
  const lab::engine::Resource* nat = nullptr;
  for (const auto& r : rs)
    if (r.key == "nat/middle/LocalNAT") nat = &r;
  REQUIRE(nat);
  auto spec = nat->spec.get<lab::hv::NatSpec>();
  REQUIRE(spec.dns_proxy);
  CHECK(spec.dns_proxy->ToString() == "192.168.100.1");
  CHECK(spec.owner_lineage == std::vector<std::string>{"hv1", "middle"});
  CHECK(std::count(nat->deps.begin(), nat->deps.end(), "dns/middle") == 1);
  // Without dns_proxy the spec is what it always was.
  auto plain = Desired(LoadLab("nested-nat"), kUid);
  for (const auto& r : plain)
    if (r.key == "nat/middle/LocalNAT") CHECK_FALSE(r.spec.contains("dns_proxy"));
}

TEST_CASE("A DNS proxy without DNS servers on its owner is refused", "[engine]") {
  auto text = ReplaceOnce(LabText("nested-mac-spoofing"),
                          "ip: 10.40.0.10/24, gateway: 10.40.0.1, dns: [10.40.0.1]}",
                          "ip: 10.40.0.10/24, gateway: 10.40.0.1}");
  auto r = lab::schema::Parse(text, "lab.yaml");
  REQUIRE_FALSE(r.ok());
  REQUIRE(r.diagnostics.size() == 1);
  CHECK_THAT(r.diagnostics[0].message, Catch::Contains("DNS proxy of NAT 'LocalNAT' forwards to the DNS servers"));
}
