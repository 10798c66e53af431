// A machine's run: commands, for real: they run inside it once it is up with its address, route
// and DNS settings, in order, once; what they print is kept for `lab logs`; a failing command
// fails `lab up` with its exit code and output, and the next `lab up` runs them again.
#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>

#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

/// A host and a VM on its external switch; the VM's commands are `run` (YAML flow list).
std::string LabFile(const Sandbox& sb, const std::string& run, const std::string& extra = "") {
  std::string text = R"(lab: runlab
networks:
  lan: {subnet: 10.77.0.0/24, gateway: 10.77.0.1}
hosts:
  h1:
    nics:
      Ethernet: {network: lan, ip: 10.77.0.11/24, gateway: 10.77.0.1, dns: [10.77.0.1]}
    switches:
      External: {type: external, nics: [Ethernet], allow_management_os: true}
    vms:
      vm1:
        adapters:
          - {switch: External, ip: 10.77.0.20/24, gateway: 10.77.0.1, dns: [10.77.0.1]}
        run: )" + run + "\n" + extra;
  std::string path = sb.dir + "/runlab.yaml";
  REQUIRE(lab::WriteFileAtomic(path, text));
  return path;
}

const char* kCommands =
    R"x(["echo first > /tmp/order", "echo second >> /tmp/order", "echo hello from $(hostname)",)x"
    R"x( "cat /etc/resolv.conf", "cat /proc/net/route"])x";

}  // namespace

TEST_CASE("run: commands run in order once the VM is up with its address, route and DNS, and lab logs shows them",
          "[root][e2e][run]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = LabFile(sb, kCommands);
  Run plan = sb.Lab("plan " + file);
  INFO(plan.out);
  CHECK(plan.out.find("+    run VM 'vm1' (5 commands)") != std::string::npos);

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  CHECK(up.out.find("made run VM 'vm1' (5 commands)") != std::string::npos);
  auto pids = InitPids(sb, "runlab");

  Run order = sb.Lab("exec runlab vm1 -- cat /tmp/order");
  CHECK(order.out == "first\nsecond\n");

  Run logs = sb.Lab("logs runlab vm1");
  INFO(logs.out);
  CHECK(logs.code == 0);
  const std::string& log = logs.out;
  // Each command, then what it printed, in order.
  auto first = log.find("$ echo first > /tmp/order\n");
  auto hello = log.find("$ echo hello from $(hostname)\nhello from vm1\n");
  auto resolv = log.find("$ cat /etc/resolv.conf\n");
  CHECK(first != std::string::npos);
  CHECK(hello != std::string::npos);
  CHECK(resolv != std::string::npos);
  CHECK(first < hello);
  CHECK(hello < resolv);
  // Its DNS servers and its default route (destination 00000000 on Ethernet) were there.
  CHECK(log.find("nameserver 10.77.0.1\n", resolv) != std::string::npos);
  CHECK(std::regex_search(log, std::regex("\nEthernet\t00000000\t")));

  // A no-op up runs nothing.
  Run again = sb.Lab("up " + file);
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("No changes.") != std::string::npos);
  CHECK(sb.Lab("exec runlab vm1 -- cat /tmp/order").out == "first\nsecond\n");
  CHECK(sb.Lab("logs runlab vm1").out == log);

  // The host has no run: commands; an unknown machine is named with the ones there are.
  Run none = sb.Lab("logs runlab h1");
  CHECK(none.code == 0);
  CHECK(none.out.find("nothing logged for 'h1'") != std::string::npos);
  Run unknown = sb.Lab("logs runlab vm9");
  CHECK(unknown.code == 1);
  CHECK(unknown.out.find("lab 'runlab' has no machine 'vm9' (it has: h1, vm1)") != std::string::npos);

  // Changed commands run again, appended to the log.
  file = LabFile(sb, R"(["echo third >> /tmp/order"])");
  Run changed = sb.Lab("up " + file);
  INFO(changed.out);
  CHECK(changed.code == 0);
  CHECK(sb.Lab("exec runlab vm1 -- cat /tmp/order").out == "first\nsecond\nthird\n");
  CHECK(sb.Lab("logs runlab vm1").out.rfind(log, 0) == 0);

  TakeDownLeavingNothing(sb, "runlab", pids);
  CHECK_FALSE(std::filesystem::exists(sb.state + "/logs/runlab"));
}

TEST_CASE("A failing run: command fails lab up with its exit code and output, and the next up runs them again",
          "[root][e2e][run]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = LabFile(sb, R"(["echo ran >> /tmp/runs", "echo about to fail; exit 3", "echo never > /tmp/never"])");
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  CHECK(up.code == 1);
  CHECK(up.out.find("VM 'vm1': run: command 2 of 3 (echo about to fail; exit 3) exited with code 3; its last output:\n"
                    "    about to fail\n") != std::string::npos);
  auto pids = InitPids(sb, "runlab");
  CHECK(sb.Lab("exec runlab vm1 -- cat /tmp/never").code != 0);  // stopped at the failure
  CHECK(sb.Lab("logs runlab vm1").out.find("# exited with code 3\n") != std::string::npos);

  // The next up runs them again (and fails again: the file still says so).
  Run retry = sb.Lab("up " + file);
  INFO(retry.out);
  CHECK(retry.code == 1);
  CHECK(retry.out.find("+    run VM 'vm1' (3 commands)") != std::string::npos);
  CHECK(sb.Lab("exec runlab vm1 -- cat /tmp/runs").out == "ran\nran\n");

  // Fixed: it converges.
  file = LabFile(sb, R"(["echo ran >> /tmp/runs"])");
  CHECK(sb.Lab("up " + file).code == 0);
  CHECK(sb.Lab("plan " + file).out.find("No changes.") != std::string::npos);

  // A command that outlives its run_timeout is killed, and says so.
  file = LabFile(sb, R"(["echo sleeping; sleep 30"])", "        run_timeout: 1s\n");
  Run slow = sb.Lab("up " + file);
  INFO(slow.out);
  CHECK(slow.code == 1);
  CHECK(slow.out.find("command 1 of 1 (echo sleeping; sleep 30) did not finish within its run_timeout of 1 s and was "
                      "killed; its last output:\n    sleeping\n") != std::string::npos);
  // Killed with its group: no sleep is left in the VM.
  Run comms = sb.Lab("exec runlab vm1 -- sh -c 'cat /proc/[0-9]*/comm 2>/dev/null'");
  CHECK(comms.out.find("sleep\n") == std::string::npos);

  TakeDownLeavingNothing(sb, "runlab", pids);
}
