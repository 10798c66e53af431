// `lab down` removes what its lab made and nothing else: not another lab of the same name kept
// by another state directory (another user, another project, a test sandbox).
#include <catch2/catch.hpp>
#include <filesystem>

#include "base/text.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

TEST_CASE("Taking a lab down leaves another installation's lab of the same name running", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  std::string file = lab::testing::Src("labs/nested-nat.yaml");
  Sandbox kept, gone;
  REQUIRE(kept.Lab("up " + file).code == 0);
  auto kept_pids = InitPids(kept, "nested-nat");
  REQUIRE(kept_pids.size() == 5);

  REQUIRE(gone.Lab("up " + file).code == 0);
  auto gone_pids = InitPids(gone, "nested-nat");
  Run down = gone.Lab("down nested-nat");
  INFO(down.out);
  REQUIRE(down.code == 0);
  auto left = Leftovers(gone, gone_pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());

  // The other lab: every machine still running, the same processes, its checks passing.
  for (int pid : kept_pids) CHECK_FALSE(ProcessGone(pid));
  CHECK(InitPids(kept, "nested-nat") == kept_pids);
  Run check = kept.Lab("check nested-nat");
  INFO(check.out);
  CHECK(check.code == 0);

  REQUIRE(kept.Lab("down nested-nat").code == 0);
  left = Leftovers(kept, kept_pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(kept.dir);
  std::filesystem::remove_all(gone.dir);
}
