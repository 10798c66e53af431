// `lab check`: judging probe answers against expectations, and running checks with retries.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "engine/checks.h"
#include "tests/engine/engine_support.h"

using lab::Result;
using lab::Status;
using lab::engine::CheckOutcome;
using lab::engine::Judge;
using lab::engine::RunChecks;
using lab::hv::PartitionSpec;
using lab::hv::ProbeAnswer;
using lab::schema::Check;
using lab::schema::CheckKind;
using lab::testing::FakeHypervisor;

namespace {

Check MakeCheck(CheckKind kind, const std::string& target, bool expect_success = true) {
  Check c;
  c.from = "nested1";
  c.kind = kind;
  c.target = target;
  c.expect_success = expect_success;
  c.retries = 0;
  return c;
}

ProbeAnswer Ok(const std::string& value) { return ProbeAnswer{true, "", value}; }
ProbeAnswer Failed(const std::string& detail) { return ProbeAnswer{false, detail, ""}; }

std::map<std::string, PartitionSpec> Machines() {
  std::map<std::string, PartitionSpec> m;
  for (const char* name : {"hv1", "middle", "nested1"}) {
    PartitionSpec p;
    p.name = name;
    m[name] = p;
  }
  return m;
}

}  // namespace

TEST_CASE("A check that expects success passes on success and fails with what happened", "[engine]") {
  auto c = MakeCheck(CheckKind::kPing, "www.example.test");
  auto good = Judge(c, Ok("10.10.0.1"));
  CHECK(good.passed);
  CHECK(good.observed == "reply from 10.10.0.1");
  CHECK(good.reason.empty());
  auto bad = Judge(c, Failed("timeout"));
  CHECK_FALSE(bad.passed);
  CHECK(bad.observed == "timeout");
  CHECK(bad.reason == "timeout");
}

TEST_CASE("A check that expects failure passes when the probe fails and fails when it succeeds", "[engine]") {
  auto c = MakeCheck(CheckKind::kPing, "192.168.100.2", false);
  auto hidden = Judge(c, Failed("timeout"));
  CHECK(hidden.passed);
  CHECK(hidden.reason.empty());
  auto reached = Judge(c, Ok("192.168.100.2"));
  CHECK_FALSE(reached.passed);
  CHECK(reached.reason == "expected failure, but it succeeded (reply from 192.168.100.2)");
}

TEST_CASE("A probe that could not run fails the check even when failure is expected", "[engine]") {
  auto c = MakeCheck(CheckKind::kPing, "192.168.100.2", false);
  auto o = Judge(c, Result<ProbeAnswer>(Status::Error("machine 'nested1' is not running")));
  CHECK_FALSE(o.passed);
  CHECK(o.observed == "error");
  CHECK(o.reason == "machine 'nested1' is not running");
}

TEST_CASE("An http check compares the source the stand-in saw", "[engine]") {
  auto c = MakeCheck(CheckKind::kHttp, "http://www.example.test/");
  c.expect_source = lab::Ipv4::Parse("10.10.0.10");
  CHECK(Judge(c, Ok("10.10.0.10")).passed);
  auto o = Judge(c, Ok("192.168.100.2"));
  CHECK_FALSE(o.passed);
  CHECK(o.observed == "source 192.168.100.2");
  CHECK(o.reason == "source 192.168.100.2, expected 10.10.0.10");
}

TEST_CASE("A resolve check compares the address it resolved to", "[engine]") {
  auto c = MakeCheck(CheckKind::kResolve, "www.example.test");
  c.expect_address = lab::Ipv4::Parse("10.10.0.1");
  CHECK(Judge(c, Ok("10.10.0.1")).passed);
  auto o = Judge(c, Ok("10.10.0.99"));
  CHECK_FALSE(o.passed);
  CHECK(o.observed == "resolves to 10.10.0.99");
  CHECK(o.reason == "address 10.10.0.99, expected 10.10.0.1");
  auto tcp = Judge(MakeCheck(CheckKind::kTcp, "10.10.0.1:80"), Ok(""));
  CHECK(tcp.passed);
  CHECK(tcp.observed == "connected");
}

TEST_CASE("A resolve check passes when the expected address is one of several", "[engine]") {
  auto c = MakeCheck(CheckKind::kResolve, "middle");
  c.expect_address = lab::Ipv4::Parse("192.168.100.1");
  auto both = Judge(c, Ok("10.10.0.10 192.168.100.1"));
  CHECK(both.passed);
  CHECK(both.observed == "resolves to 10.10.0.10, 192.168.100.1");
  // A longer address that merely starts with the expected one is not it.
  c.expect_address = lab::Ipv4::Parse("192.168.100.11");
  CHECK_FALSE(Judge(c, Ok("10.10.0.10 192.168.100.1")).passed);
  c.expect_address = lab::Ipv4::Parse("10.10.0.1");
  CHECK_FALSE(Judge(c, Ok("10.10.0.10 192.168.100.1")).passed);
}

TEST_CASE("Checks are retried until they pass, and the attempts are counted", "[engine]") {
  FakeHypervisor hv;
  auto flaky = MakeCheck(CheckKind::kPing, "www.example.test");
  flaky.retries = 2;
  hv.SetProbe("nested1", "ping", "www.example.test",
              std::vector<Result<ProbeAnswer>>{Failed("timeout"), Status::Error("exec failed"), Ok("10.10.0.1")});
  auto never = MakeCheck(CheckKind::kPing, "10.10.0.99");
  never.from = "middle";
  never.retries = 1;
  hv.SetProbe("middle", "ping", "10.10.0.99", Failed("timeout"));
  auto hidden = MakeCheck(CheckKind::kPing, "192.168.100.2", false);
  hidden.from = "hv1";
  hidden.retries = 3;
  hv.SetProbe("hv1", "ping", "192.168.100.2", Ok("192.168.100.2"));
  auto nowhere = MakeCheck(CheckKind::kPing, "10.10.0.1");
  nowhere.from = "ghost";

  auto out = RunChecks({flaky, never, hidden, nowhere}, Machines(), hv, 4);
  REQUIRE(out.size() == 4);
  CHECK(out[0].passed);
  CHECK(out[0].attempts == 3);
  CHECK_FALSE(out[1].passed);
  CHECK(out[1].attempts == 2);
  CHECK(out[1].reason == "timeout");
  // An expected failure that succeeded is not retried: retrying would only wait longer.
  CHECK_FALSE(out[2].passed);
  CHECK(out[2].attempts == 1);
  CHECK(hv.Calls("Probe hv1").size() == 1);
  CHECK_FALSE(out[3].passed);
  CHECK(out[3].reason == "machine 'ghost' is not running in this lab");
  CHECK(out[3].attempts == 0);
  CHECK(hv.Calls("Probe").size() == 3 + 2 + 1);
  for (size_t i = 0; i < out.size(); ++i) CHECK(out[i].check.target == std::vector<Check>{flaky, never, hidden, nowhere}[i].target);
}

TEST_CASE("Checks of the nested-nat lab read from its file are judged as the file says", "[engine]") {
  auto lab = lab::testing::LoadLab("nested-nat");
  REQUIRE(lab.checks.size() == 6);
  const Check& http = lab.checks[1];
  CHECK(http.kind == CheckKind::kHttp);
  REQUIRE(http.expect_source);
  CHECK(Judge(http, Ok("10.10.0.10")).passed);
  CHECK(Judge(http, Ok("192.168.100.2")).reason == "source 192.168.100.2, expected 10.10.0.10");
  const Check& hidden = lab.checks[4];
  CHECK_FALSE(hidden.expect_success);
  CHECK(Judge(hidden, Failed("timeout")).passed);
}

TEST_CASE("A check that fails its last attempt reports at once, without waiting to retry", "[engine]") {
  FakeHypervisor hv;
  auto c = MakeCheck(CheckKind::kPing, "10.10.0.99");
  c.retries = 0;
  hv.SetProbe("nested1", "ping", "10.10.0.99", Failed("timeout"));
  auto once = RunChecks({c}, Machines(), hv, 1);
  REQUIRE(once.size() == 1);
  CHECK_FALSE(once[0].passed);
  CHECK(once[0].attempts == 1);
  // The fake answers at once; the pause between attempts (200 ms) must not follow the last one.
  CHECK(once[0].millis < 150);

  c.retries = 1;
  auto twice = RunChecks({c}, Machines(), hv, 1);
  CHECK(twice[0].attempts == 2);
  CHECK(twice[0].millis >= 150);  // one pause, between the two attempts
  CHECK(twice[0].millis < 350);
}
