// lab move with a recording hypervisor: the moved VM is announced on its new switch, its MAC
// flushed from the bridges of the switch it left and of the one it joined; what only stops
// announces nothing. A running qemu VM on an image moves live (the hypervisor migrates it, the
// records follow), one on the host's software by quick migration.
#include <catch2/catch.hpp>

#include <filesystem>

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

/// Two hosts, each with an external switch of the same name; qemu VM `web` on hv1, on image
/// `tiny` (a directory beside the lab file) or on the host's software.
std::string TwoHostsWithQemuWeb(bool on_image) {
  std::string text = std::string(on_image ? "images:\n  tiny: {rootfs: ./tiny}\n" : "") + R"(lab: qmove
networks:
  lan: {subnet: 10.63.0.0/24, gateway: 10.63.0.1}
hosts:
  hv1:
    nics: {Ethernet: {network: lan, ip: 10.63.0.11/24, gateway: 10.63.0.1}}
    switches: {External: {type: external, nics: [Ethernet], allow_management_os: true}}
    vms:
      web:
        driver: qemu
        memory: {startup: 256MiB}
        adapters: [{switch: External, ip: 10.63.0.30/24, gateway: 10.63.0.1}]
  hv2:
    nics: {Ethernet: {network: lan, ip: 10.63.0.12/24, gateway: 10.63.0.1}}
    switches: {External: {type: external, nics: [Ethernet], allow_management_os: true}}
)";
  if (on_image) text = lab::testing::ReplaceOnce(text, "        driver: qemu\n", "        driver: qemu\n        image: tiny\n");
  return text;
}

std::unique_ptr<lab::engine::Engine> OpenQemuEngine(const StateDir& dir, FakeHypervisor& hv) {
  lab::engine::EngineOptions o;
  o.state_dir = dir.path;
  o.run_dir = dir.path + "/run";
  o.hypervisor = hv.Factory();
  o.qemu_host = lab::hv::QemuHostFacts{lab::hv::model::Accelerator::kTcg, lab::hv::model::ProcessorVendor::kIntel, 4, "test"};
  auto e = lab::engine::Engine::Open(o);
  INFO(e.message());
  REQUIRE(e);
  return std::move(e).value();
}

/// The kernel name of switch `name`'s bridge on `owner` in lab `lab`, as recorded.
std::string BridgeIn(lab::engine::Engine& engine, const std::string& lab, const std::string& owner,
                     const std::string& name) {
  auto snap = engine.store().Load(lab);
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

TEST_CASE("A running qemu VM on an image moves live: migrated by its hypervisor, nothing stopped or made again, and "
          "the next plan has no changes",
          "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  auto engine = OpenQemuEngine(dir, hv);
  std::filesystem::create_directories(dir.path + "/tiny/etc");
  REQUIRE(lab::WriteFileAtomic(dir.path + "/tiny/etc/image-name", "tiny\n"));
  const std::string file = dir.path + "/qmove.yaml";
  const std::string text = TwoHostsWithQemuWeb(true);
  REQUIRE(lab::WriteFileAtomic(file, text));
  auto up = engine->Up(lab::testing::ParseLab(text, file), nullptr, ExecOptions{2, nullptr});
  INFO(up.message());
  REQUIRE(up);
  REQUIRE(up->report.ok());
  const std::string from = "hv1/" + BridgeIn(*engine, "qmove", "hv1", "External");
  const std::string to = "hv2/" + BridgeIn(*engine, "qmove", "hv2", "External");

  // An earlier `lab move` of it killed part way left its action intended: this one finishes it.
  REQUIRE(engine->store().BeginAction("qmove", "move", "partition/web", "lab move web"));
  hv.ClearCalls();
  auto moved = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kMove, "qmove", "web", "", "hv2"},
                                         ExecOptions{2, nullptr});
  INFO(moved.message());
  REQUIRE(moved);
  CHECK(engine->store().Intended("qmove").empty());
  // The VM and its adapter as placed on hv2: the adapter on hv2's switch.
  CHECK(hv.Calls("MigratePartition") ==
        std::vector<std::string>{"MigratePartition web hv1->hv2 web/Ethernet@" + to});
  CHECK(hv.Calls("StopPartition").empty());
  CHECK(hv.Calls("CreatePartition").empty());
  CHECK(hv.Calls("ConnectAdapter").empty());
  CHECK_FALSE(moved->applied);
  const std::string out = lab::Join(moved->lines, "\n");
  CHECK(out.find("VM 'web' now runs on 'hv2' (was on 'hv1'): live migration in 420 ms (downtime 42 ms)") !=
        std::string::npos);
  auto calls = hv.Calls("AnnounceAdapter");
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].find(" flush " + to + "," + from) != std::string::npos);

  // The records follow: the VM on hv2 with the facts the migration returned, nothing left to do
  // (not even the interrupted move, which would restart it).
  auto snap = engine->store().Load("qmove");
  REQUIRE(snap);
  CHECK(snap->placements.at("web") == "hv2");
  auto vm = lab::engine::Resource::FromRecordJson("partition/web", snap->resources.at("partition/web").spec);
  REQUIRE(vm);
  CHECK(vm->spec["lineage"] == nlohmann::json::array({"hv2", "web"}));
  CHECK(snap->resources.at("partition/web").facts.find("\"pid\"") != std::string::npos);
  hv.ClearCalls();
  auto again = engine->Up(lab::testing::ParseLab(text, file), nullptr, ExecOptions{2, nullptr});
  INFO(again.message());
  REQUIRE(again);
  CHECK(again->plan.Summary() == "No changes.");
  CHECK(hv.Mutations().empty());

  // A failed migration changes no record: the VM is still on hv1's switch there.
  auto back_fail_line = "MigratePartition web hv2->hv1 web/Ethernet@" + from;
  hv.FailOn(back_fail_line, "Move-VM: QMP migrate: injected");
  auto failed = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kMove, "qmove", "web", "", "hv1"},
                                          ExecOptions{2, nullptr});
  CHECK_FALSE(failed);
  CHECK(failed.message().find("injected") != std::string::npos);
  auto kept = engine->store().Load("qmove");
  REQUIRE(kept);
  CHECK(kept->placements.at("web") == "hv2");
  CHECK(kept->resources.at("partition/web").spec == snap->resources.at("partition/web").spec);
}

TEST_CASE("A running qemu VM on the host's software moves by quick migration, and says why", "[engine]") {
  StateDir dir;
  FakeHypervisor hv;
  auto engine = OpenQemuEngine(dir, hv);
  const std::string file = dir.path + "/qmove.yaml";
  const std::string text = TwoHostsWithQemuWeb(false);
  REQUIRE(lab::WriteFileAtomic(file, text));
  auto up = engine->Up(lab::testing::ParseLab(text, file), nullptr, ExecOptions{2, nullptr});
  INFO(up.message());
  REQUIRE(up);
  hv.ClearCalls();
  auto moved = lab::engine::RunLifecycle(*engine, LifecycleRequest{LifecycleOp::kMove, "qmove", "web", "", "hv2"},
                                         ExecOptions{2, nullptr});
  INFO(moved.message());
  REQUIRE(moved);
  CHECK(hv.Calls("MigratePartition").empty());
  CHECK_FALSE(hv.Calls("StopPartition").empty());  // off at the source, started at the destination
  CHECK(hv.Calls("CreatePartition") == std::vector<std::string>{"CreatePartition web"});
  CHECK(lab::Join(moved->lines, "\n").find("cannot migrate live") != std::string::npos);
}
