// Every checked-in lab file (labs/*.yaml) parses and validates without a single diagnostic.
#include <catch2/catch.hpp>

#include <filesystem>

#include "schema/lab.h"
#include "tests/support.h"

namespace fs = std::filesystem;

TEST_CASE("Every lab file in labs/ loads without diagnostics", "[schema]") {
  int count = 0;
  for (const auto& e : fs::directory_iterator(lab::testing::Src("labs"))) {
    if (e.path().extension() != ".yaml") continue;
    ++count;
    auto result = lab::schema::LoadFile(e.path().string());
    INFO("lab file " << e.path().string());
    for (const auto& d : result.diagnostics) UNSCOPED_INFO(d.ToString());
    CHECK(result.diagnostics.empty());
    REQUIRE(result.ok());
    CHECK(result.lab->file == e.path().string());
    CHECK_FALSE(result.lab->machines.empty());
    CHECK_FALSE(result.lab->checks.empty());
  }
  CHECK(count >= 2);
}

TEST_CASE("The nested-nat lab reads as the seeds' NAT example", "[schema]") {
  auto result = lab::schema::LoadFile(lab::testing::Src("labs/nested-nat.yaml"));
  REQUIRE(result.ok());
  const auto& lab = *result.lab;
  CHECK(lab.name == "nested-nat");
  REQUIRE(lab.networks.size() == 1);
  CHECK(lab.networks[0].subnet.ToString() == "10.10.0.0/24");
  CHECK(lab.networks[0].dns_records.at("www.example.test").ToString() == "10.10.0.1");
  const auto* middle = lab.FindMachine("middle");
  REQUIRE(middle);
  CHECK(middle->processor.count == 2);
  CHECK(middle->processor.expose_virtualization_extensions);
  CHECK(middle->memory.startup == (2ull << 30));
  const auto* nat_switch = middle->FindSwitch("VmNAT");
  REQUIRE(nat_switch);
  CHECK(nat_switch->type == lab::schema::SwitchType::kInternal);
  REQUIRE(nat_switch->nat);
  CHECK(nat_switch->nat->name == "LocalNAT");
  CHECK(nat_switch->nat->prefix.ToString() == "192.168.100.0/24");
  CHECK(middle->vms == std::vector<std::string>{"nested1", "nested2"});
  REQUIRE(lab.checks.size() == 6);
  CHECK(lab.checks[1].Describe() == "nested1 http http://www.example.test/ (source 10.10.0.10)");
  CHECK(lab.checks[4].Describe() == "hv1 ping 192.168.100.2 (expect failure)");
}
