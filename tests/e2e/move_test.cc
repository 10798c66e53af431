// Move-VM announces: after `lab move`, the moved VM is reachable at once from the hosts that knew
// it, as on Hyper-V, whose migrated VM's MAC is announced on its new switch. Without the
// announcement the lab network's wire still sends the VM's frames to its old host's NIC (the
// bridge forgets a MAC after 300 s) and the old host's own neighbour entry points nowhere: a ping
// from the other host fails until the VM happens to send a frame itself.
#include <catch2/catch.hpp>

#include "hv/kernel/netlink.h"
#include "hv/kernel/probe.h"
#include "tests/e2e/faults_support.h"

using namespace lab::testing::e2e;
namespace k = lab::hv::kernel;

namespace {

const char* kLab = "move-arp";

// Two hosts on one wire, each with an external switch over its NIC; 'web' on hv1.
const char* kText =
    "lab: move-arp\n"
    "networks:\n"
    "  lan: {subnet: 10.72.0.0/24, gateway: 10.72.0.1}\n"
    "hosts:\n"
    "  hv1:\n"
    "    nics:\n"
    "      Ethernet: {network: lan, ip: 10.72.0.11/24, gateway: 10.72.0.1}\n"
    "    switches:\n"
    "      External: {type: external, nics: [Ethernet], allow_management_os: true}\n"
    "    vms:\n"
    "      web:\n"
    "        memory: {startup: 256MiB}\n"
    "        adapters:\n"
    "          - {switch: External, ip: 10.72.0.30/24, gateway: 10.72.0.1}\n"
    "  hv2:\n"
    "    nics:\n"
    "      Ethernet: {network: lan, ip: 10.72.0.12/24, gateway: 10.72.0.1}\n"
    "    switches:\n"
    "      External: {type: external, nics: [Ethernet], allow_management_os: true}\n";

/// One ping from inside `machine` (its network namespace, this thread), answered within
/// `timeout_ms`. A single short try: what a neighbour that still has the VM's MAC sees at once.
bool PingFrom(const Sandbox& sb, const std::string& machine, const std::string& target, int timeout_ms) {
  auto ns = k::NetNs::Open(MachineRun(sb, kLab, machine) + "/ns/net");
  REQUIRE(ns.ok());
  k::ProbeResult r;
  REQUIRE(k::WithNetNs(*ns, [&] {
            r = k::ProbePing(target, timeout_ms);
            return lab::Status::Ok();
          }).ok());
  INFO(machine << " ping " << target << ": " << r.detail);
  return r.ok;
}

}  // namespace

TEST_CASE("A VM moved to another host is announced there: the other host reaches it at once", "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = sb.dir + "/move-arp.yaml";
  REQUIRE(lab::WriteFileAtomic(file, kText));
  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);
  NoteMarks(sb);

  // Both hosts know web where it is: their neighbour entries and every bridge on the way.
  REQUIRE(PingFrom(sb, "hv1", "10.72.0.30", 3000));
  REQUIRE(PingFrom(sb, "hv2", "10.72.0.30", 3000));

  Run moved = sb.Lab("move " + std::string(kLab) + " web --to hv2");
  INFO(moved.out);
  REQUIRE(moved.code == 0);
  CHECK(moved.out.find("VM 'web' announced on its new switch") != std::string::npos);
  // At once: one second, far below the 300 s a bridge keeps a MAC where it last saw it.
  CHECK(PingFrom(sb, "hv1", "10.72.0.30", 1000));
  CHECK(PingFrom(sb, "hv2", "10.72.0.30", 1000));

  // And back home: hv2, which just reached it on its own switch, reaches it on hv1's.
  Run back = sb.Lab("move " + std::string(kLab) + " web --to hv1");
  INFO(back.out);
  REQUIRE(back.code == 0);
  CHECK(PingFrom(sb, "hv2", "10.72.0.30", 1000));
  CHECK(PingFrom(sb, "hv1", "10.72.0.30", 1000));

  auto now = InitPids(sb, kLab);
  pids.insert(pids.end(), now.begin(), now.end());
  REQUIRE(sb.Lab("down " + std::string(kLab)).code == 0);
  auto left = OwnLeftovers(sb, pids);
  INFO(lab::Join(left, "\n"));
  CHECK(left.empty());
}
