// The lifecycle of one VM, through the real binary: save/resume, stop/start, checkpoint/restore.
#include <catch2/catch.hpp>
#include <filesystem>

#include "base/text.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

TEST_CASE("A VM is saved and resumed, stopped and started with its disk, and restored to a checkpoint",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  auto pids = InitPids(sb, "nested-nat");

  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo before > /root/kept'").code == 0);
  Run cp = sb.Lab("checkpoint nested-nat middle c1");
  INFO(cp.out);
  REQUIRE(cp.code == 0);
  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'echo after > /root/later'").code == 0);

  // Save: frozen; the VMs inside with it; exec is refused instead of hanging.
  REQUIRE(sb.Lab("save nested-nat middle").code == 0);
  Run st = sb.Lab("status nested-nat");
  CHECK(st.out.find("saved") != std::string::npos);
  Run frozen = sb.Lab("exec nested-nat middle -- true");
  CHECK(frozen.code == 1);
  CHECK(frozen.out.find("is saved; resume it first") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 1);
  REQUIRE(sb.Lab("resume nested-nat middle").code == 0);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Stop takes the nested VMs down with it; start brings all of them back, disk kept.
  Run stop = sb.Lab("stop nested-nat middle");
  INFO(stop.out);
  REQUIRE(stop.code == 0);
  CHECK(stop.out.find("stop VM 'nested1'") < stop.out.find("stop VM 'middle'"));
  CHECK(sb.Lab("status nested-nat").out.find("off") != std::string::npos);
  Run start = sb.Lab("start nested-nat middle");
  INFO(start.out);
  REQUIRE(start.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/later").out.find("after") != std::string::npos);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Restore: what was written after the checkpoint is gone, what was before is there.
  Run restore = sb.Lab("restore nested-nat middle c1");
  INFO(restore.out);
  REQUIRE(restore.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- cat /root/kept").out.find("before") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat middle -- test -e /root/later").code == 1);
  CHECK(sb.Lab("check nested-nat").code == 0);

  // Hosts are physical machines; unknown machines are named.
  CHECK(sb.Lab("stop nested-nat hv1").out.find("is a host") != std::string::npos);
  CHECK(sb.Lab("stop nested-nat nosuch").code == 1);

  auto all = InitPids(sb, "nested-nat");
  all.insert(all.end(), pids.begin(), pids.end());
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}
