// End to end: the real `lab` binary, as a user runs it, on every lab file in labs/.
//
// Each lab is validated, brought up, checked, re-applied ("No changes."), taken down, and then
// the machine is searched for anything of it: processes, mounts (namespace handles, roots),
// cgroups, runtime and disk directories, interfaces or nft tables in the machine's own
// namespace. Root only; traffic stays inside the lab's own namespaces.
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

TEST_CASE("Every lab in labs/ comes up, passes its checks, re-applies as a no-op and leaves nothing when taken down",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(Src("labs")))
    if (e.path().extension() == ".yaml") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 2);
  for (const auto& file : files) {
    DYNAMIC_SECTION(fs::path(file).filename().string()) {
      // A lab on Debian-built images needs the archive for its first build; its builds are
      // shared with the other tests of this run.
      bool debian = std::regex_search(lab::ReadFile(file).value_or(""), std::regex("\n\\s+debian:"));
      if (debian && !ArchiveReachable()) {
        std::printf("SKIP: %s: the Debian archive (deb.debian.org) is unreachable: no Debian build\n", file.c_str());
        continue;
      }
      // Hardware VMs: tests/e2e/qemu_test.cc brings these labs up (once, with what only they have).
      if (std::regex_search(lab::ReadFile(file).value_or(""), std::regex("driver: qemu"))) {
        std::printf("SKIP here: %s has qemu VMs: tests/e2e/qemu_test.cc brings it up\n", file.c_str());
        continue;
      }
      Sandbox sb;
      if (debian) ShareImages(sb);
      std::string name = LabNameOf(file);
      REQUIRE_FALSE(name.empty());
      Run v = sb.Lab("validate " + file);
      INFO(v.out);
      REQUIRE(v.code == 0);

      Run up = sb.Lab("up " + file);
      INFO(up.out);
      REQUIRE(up.code == 0);
      CHECK(up.out.find("Apply complete") != std::string::npos);
      auto pids = InitPids(sb, name);
      CHECK(pids.size() >= 2);

      Run check = sb.Lab("check " + name);
      INFO(check.out);
      CHECK(check.code == 0);
      CHECK(check.out.find(" 0 failed") != std::string::npos);

      Run again = sb.Lab("up " + file);
      INFO(again.out);
      CHECK(again.code == 0);
      CHECK(again.out.find("No changes.") != std::string::npos);

      Run status = sb.Lab("status " + name);
      INFO(status.out);
      CHECK(status.code == 0);
      CHECK(status.out.find("no drift") != std::string::npos);

      TakeDownLeavingNothing(sb, name, pids);
      fs::remove_all(sb.dir);
    }
  }
}

TEST_CASE("lab exec shows the DNS servers of the lab file inside a nested VM and passes exit codes through",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = Src("labs/nested-nat.yaml");
  REQUIRE(sb.Lab("up " + file).code == 0);
  Run cat = sb.Lab("exec nested-nat nested1 -- cat /etc/resolv.conf");
  CHECK(cat.code == 0);
  CHECK(cat.out.find("nameserver 10.10.0.1") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat nested1 -- sh -c 'exit 7'").code == 7);
  Run host = sb.Lab("exec nested-nat nested1 -- cat /etc/hostname");
  CHECK(host.out.find("nested1") != std::string::npos);
  Run missing = sb.Lab("exec nested-nat nosuchvm -- true");
  CHECK(missing.code == 1);
  CHECK(missing.out.find("no machine 'nosuchvm'") != std::string::npos);
  auto pids = InitPids(sb, "nested-nat");
  REQUIRE(sb.Lab("down nested-nat").code == 0);
  CHECK(Leftovers(sb, pids).empty());
  fs::remove_all(sb.dir);
}

TEST_CASE("A failure in the middle of up is continued by the next up, and down after a failure leaves nothing",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = Src("labs/nested-nat.yaml");

  Run failed = sb.Lab("up " + file, "LAB_INJECT_FAILURE=adapter/nested1/Ethernet");
  INFO(failed.out);
  REQUIRE(failed.code == 1);
  CHECK(failed.out.find("injected failure") != std::string::npos);
  CHECK(failed.out.find("run the same command again to continue") != std::string::npos);

  // The next up does only what is missing: the failed adapter and what waits on it.
  Run plan = sb.Lab("plan " + file);
  INFO(plan.out);
  CHECK(plan.out.find("adapter 'Ethernet' of VM 'nested1'") != std::string::npos);
  CHECK(plan.out.find("VM 'middle'") == std::string::npos);
  CHECK(plan.out.find("Plan: 17 to add") == std::string::npos);

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(sb.Lab("check nested-nat").code == 0);
  auto pids = InitPids(sb, "nested-nat");

  // Fail again on the way down of a fresh attempt: the partial teardown is continued too.
  Run down_failed = sb.Lab("down nested-nat", "LAB_INJECT_FAILURE=partition/middle");
  INFO(down_failed.out);
  CHECK(down_failed.code == 1);
  Run down = sb.Lab("down nested-nat");
  INFO(down.out);
  CHECK(down.code == 0);
  auto left = Leftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());

  // A failed up followed directly by down leaves nothing either.
  REQUIRE(sb.Lab("up " + file, "LAB_INJECT_FAILURE=nat/middle/LocalNAT").code == 1);
  pids = InitPids(sb, "nested-nat");
  CHECK(sb.Lab("down " + file).code == 0);
  left = Leftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
  fs::remove_all(sb.dir);
}

TEST_CASE("A lab file with mistakes is refused before anything is made", "[root][e2e]") {
  LAB_REQUIRE_ROOT("running lab up");
  Sandbox sb;
  std::string bad = sb.dir + "/bad.yaml";
  lab::WriteFileAtomic(bad, "lab: bad\nhosts:\n  hv1:\n    vms:\n      a: {memory: {startup: lots}}\n");
  Run up = sb.Lab("up " + bad);
  INFO(up.out);
  CHECK(up.code == 1);
  CHECK(up.out.find("bad.yaml:5:") != std::string::npos);
  CHECK_FALSE(fs::exists(sb.run));
  CHECK(Leftovers(sb, {}).empty());
  fs::remove_all(sb.dir);
}
