// Changing a running VM's settings through the real binary: what the rules allow happens in
// place (Set-VMMemory on a VM without a hypervisor inside), what needs the VM off is planned as
// stop, set, start, and `lab up --no-restart` refuses that before anything changes.
#include <catch2/catch.hpp>
#include <filesystem>

#include "base/text.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

/// The memory limit of the cgroup that process `pid` runs in, as the kernel holds it.
uint64_t MemoryLimitOf(int pid) {
  auto cg = lab::ReadFile("/proc/" + std::to_string(pid) + "/cgroup");
  REQUIRE(cg);
  std::string v1, v2;  // the memory controller's v1 hierarchy wins where it exists (hybrid)
  for (const auto& line : lab::Split(*cg, '\n')) {
    auto f = lab::Split(line, ':');
    if (f.size() < 3 || f[2].empty()) continue;
    if (f[1] == "memory") v1 = f[2].substr(1);
    if (f[0] == "0" && f[1].empty()) v2 = f[2].substr(1);
  }
  std::string relative = v1.empty() ? v2 : v1;
  INFO(*cg);
  REQUIRE(!relative.empty());
  auto text = lab::ReadFile(lab::hv::kernel::CgroupMemoryLimitPath(relative));
  REQUIRE(text);
  return std::stoull(*text);
}

/// labs/nested-nat.yaml with `from` replaced by `to`, written over the sandbox's copy of the lab
/// file (one lab, one file: edits are made to the file the lab is up from).
std::string WriteVariant(const Sandbox& sb, const std::string& from = "", const std::string& to = "") {
  auto text = lab::ReadFile(lab::testing::Src("labs/nested-nat.yaml"));
  REQUIRE(text);
  if (!from.empty()) {
    auto at = text->find(from);
    REQUIRE(at != std::string::npos);
    text->replace(at, from.size(), to);
  }
  std::string path = sb.dir + "/nested-nat.yaml";
  REQUIRE(lab::WriteFileAtomic(path, *text));
  return path;
}

}  // namespace

TEST_CASE("A running VM's memory is resized in place, and a restart is planned only where the rules need one",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  REQUIRE(sb.Lab("up " + WriteVariant(sb)).code == 0);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(pids.size() == 5);  // lan, hv1, middle, nested1, nested2
  const int nested1 = pids[3];
  CHECK(MemoryLimitOf(nested1) == 512ull << 20);

  // nested1 runs no hypervisor: Set-VMMemory while it runs; the same processes keep running.
  auto resized = WriteVariant(sb, "nested1:\n            memory: {startup: 512MiB}",
                              "nested1:\n            memory: {startup: 768MiB}");
  Run up = sb.Lab("up " + resized);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("in place, the VM keeps running") != std::string::npos);
  CHECK(up.out.find("Plan: 0 to add, 1 to change, 0 to destroy.") != std::string::npos);
  CHECK(InitPids(sb, "nested-nat") == pids);
  CHECK(MemoryLimitOf(nested1) == 768ull << 20);
  CHECK(sb.Lab("up " + resized).out.find("No changes.") != std::string::npos);

  // middle runs a hypervisor (nested1, nested2): its resize needs it off. --no-restart refuses
  // before anything changes; without it, the plan says why it stops and starts middle.
  auto bigger = WriteVariant(sb, "startup: 2GiB", "startup: 3GiB");
  Run refused = sb.Lab("up --no-restart " + bigger);
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("a hypervisor runs inside") != std::string::npos);
  CHECK(InitPids(sb, "nested-nat") == pids);
  Run plan = sb.Lab("plan " + bigger);
  CHECK(plan.code == 0);
  CHECK(plan.out.find("memory.startup can only change while the VM is off (a hypervisor runs inside): stop, set, start") !=
        std::string::npos);

  auto all = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  auto left = Leftovers(sb, all);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  std::filesystem::remove_all(sb.dir);
}
