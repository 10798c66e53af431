// lab move with a recording hypervisor: the moved VM is announced on its new switch, its MAC
// flushed from the bridges of the switch it left and of the one it joined; what only stops
// announces nothing.
#include <catch2/catch.hpp>

#include "engine/engine.h"
#include "engine/lifecycle.h"
#include "tests/engine/engine_support.h"

using lab::engine::ExecOptions;
using lab::engine::LifecycleOp;
using lab::engine::LifecycleRequest;
using lab::testing::FakeHypervisor;
using lab::testing::StateDir;

namespace {

std::string TwoHostsWithWeb() {
  return lab::testing::ReplaceOnce(lab::testing::LabText("two-hosts"), "  hv2:\n",
                                   "      web:\n        memory: {startup: 256MiB}\n        adapters:\n"
                                   "          - {switch: External, ip: 10.20.0.30/24, gateway: 10.20.0.1}\n"
                                   "  hv2:\n");
}

/// The kernel name of switch `name`'s bridge on `owner`, as recorded.
std::string BridgeOf(lab::engine::Engine& engine, const std::string& owner, const std::string& name) {
  auto snap = engine.store().Load("two-hosts");
  REQUIRE(snap);
  for (const auto& r : lab::engine::RecordedResources(*snap))
    if (r.kind == lab::engine::Kind::kSwitch && r.spec.value("owner", "") == owner && r.spec.value("name", "") == name)
      return r.spec.value("ifname", std::string());
  FAIL("no switch " << owner << "/" << name);
  return "";
}

}  // namespace

TEST_CASE("A running VM moved to another host is announced on its new switch, its MAC flushed from both switches",
          "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  auto engine = lab::testing::OpenEngine(dir, hv);
  const std::string file = dir.path + "/two-hosts.yaml";
  REQUIRE(lab::WriteFileAtomic(file, TwoHostsWithWeb()));
  auto up = engine->Up(lab::testing::ParseLab(TwoHostsWithWeb(), file), nullptr, ExecOptions{2, nullptr});
  REQUIRE(up);
  REQUIRE(up->report.ok());
  const std::string from = "hv1/" + BridgeOf(*engine, "hv1", "External");
  const std::string to = "hv2/" + BridgeOf(*engine, "hv2", "External");

  // Stopping announces nothing: nothing arrives anywhere.
  hv.ClearCalls();
  auto stop = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kStop, "two-hosts", "web", "", ""},
                                        ExecOptions{2, nullptr});
  REQUIRE(stop);
  CHECK(hv.Calls("AnnounceAdapter").empty());
  // Started again where it was: it says it is there, on the one switch it is on.
  auto start = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kStart, "two-hosts", "web", "", ""},
                                         ExecOptions{2, nullptr});
  INFO(start.message());
  REQUIRE(start);
  auto calls = hv.Calls("AnnounceAdapter");
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].find(" flush " + from) != std::string::npos);
  CHECK(calls[0].find(to) == std::string::npos);

  hv.ClearCalls();
  auto moved = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kMove, "two-hosts", "web", "", "hv2"},
                                         ExecOptions{2, nullptr});
  INFO(moved.message());
  REQUIRE(moved);
  calls = hv.Calls("AnnounceAdapter");
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].rfind("AnnounceAdapter web/", 0) == 0);
  CHECK(calls[0].find(" flush " + to + "," + from) != std::string::npos);
  // After its adapter is connected on the new switch, not before.
  auto all = hv.Calls();
  CHECK(lab::testing::IndexOf(all, calls[0]) > lab::testing::IndexOf(all, "CreatePartition web"));
  CHECK(lab::Join(moved->lines, "\n").find("VM 'web' announced on its new switch") != std::string::npos);
}
