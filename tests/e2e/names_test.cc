// End to end: a lab named as a Hyper-V admin names one (labs/hyperv-names.yaml, issue 18). Its
// names are shown as written, machines are found ignoring case, and each machine's hostname is
// its computer name. Root only; traffic stays inside the lab's own namespaces.
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

TEST_CASE("A lab with Hyper-V names comes up with computer names as hostnames and finds machines ignoring case",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  std::string file = Src("labs/hyperv-names.yaml");

  Run plan = sb.Lab("plan " + file);
  INFO(plan.out);
  REQUIRE(plan.code == 0);
  CHECK(plan.out.find("'135. Nested Virtualization 2022'") != std::string::npos);
  CHECK(plan.out.find("'Nested VM 1'") != std::string::npos);
  CHECK(plan.out.find("'Default Switch'") != std::string::npos);
  CHECK(plan.out.find("'Ethernet 2'") != std::string::npos);

  Run up = sb.Lab("up " + file);
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, "hyperv-names");

  Run host = sb.Lab("exec hyperv-names '135. Nested Virtualization 2022' -- hostname");
  INFO(host.out);
  CHECK(host.code == 0);
  CHECK(host.out == "135-Nested-Virtualization-2022\n");

  Run lower = sb.Lab("exec hyperv-names dc01 -- hostname");
  INFO(lower.out);
  CHECK(lower.code == 0);
  CHECK(lower.out == "DC01\n");

  // The adapter's kernel name is derived; its Hyper-V name is there as an altname.
  Run links = sb.Lab("exec hyperv-names 'Nested VM 1' -- ip link show");
  INFO(links.out);
  CHECK(links.code == 0);
  CHECK(links.out.find("Network-Adapter") != std::string::npos);
  Run nics = sb.Lab("exec hyperv-names HV01 -- ip link show Ethernet-2");
  INFO(nics.out);
  CHECK(nics.code == 0);

  // Lifecycle verbs find the VM ignoring case too, and checkpoints take Hyper-V names.
  Run stop = sb.Lab("stop hyperv-names dc01");
  INFO(stop.out);
  CHECK(stop.code == 0);
  CHECK(stop.out.find("VM 'DC01'") != std::string::npos);
  Run checkpoint = sb.Lab("checkpoint hyperv-names dc01 'Before update 1.2'");
  INFO(checkpoint.out);
  CHECK(checkpoint.code == 0);
  Run restore = sb.Lab("restore hyperv-names DC01 'Before update 1.2'");
  INFO(restore.out);
  CHECK(restore.code == 0);
  Run start = sb.Lab("start hyperv-names Dc01");
  INFO(start.out);
  CHECK(start.code == 0);

  Run check = sb.Lab("check hyperv-names");
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find(" 0 failed") != std::string::npos);

  Run status = sb.Lab("status hyperv-names");
  INFO(status.out);
  CHECK(status.code == 0);
  CHECK(status.out.find("135. Nested Virtualization 2022") != std::string::npos);
  CHECK(status.out.find("Nested VM 1") != std::string::npos);

  TakeDownLeavingNothing(sb, "hyperv-names", pids);
}

TEST_CASE("Drift, lab link and kernel refusals name NICs and adapters as written, never by their kernel names",
          "[root][e2e][drift]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Run up = sb.Lab("up " + lab::testing::Src("labs/hyperv-names.yaml"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  InitPids(sb, "hyperv-names");
  // The kernel names lab derives (docs/names.md): what no message may show.
  const std::vector<std::string> kernel = {"Ethernet-2", "Network-Adapter"};
  auto shows_kernel_name = [&kernel](const std::string& out) {
    for (const auto& k : kernel)
      if (out.find(k) != std::string::npos) return true;
    return false;
  };

  // A cable pulled: lab link by the written name, then the drift lab status reports.
  Run down = sb.Lab("link hyperv-names HV01 'Ethernet 2' down");
  INFO(down.out);
  REQUIRE(down.code == 0);
  CHECK_FALSE(shows_kernel_name(down.out));
  // The address of DC01's adapter gone, from inside (its own administrator does that).
  REQUIRE(sb.Lab("exec hyperv-names DC01 -- ip addr flush dev Network-Adapter").code == 0);
  Run status = sb.Lab("status hyperv-names");
  INFO(status.out);
  CHECK(status.code == 1);
  CHECK(status.out.find("link of veth 'Ethernet 2' of host 'HV01' is down") != std::string::npos);
  CHECK(status.out.find("address of 'Network Adapter' is none, not 10.30.0.20/24") != std::string::npos);
  CHECK_FALSE(shows_kernel_name(status.out));
  Run repaired = sb.Lab("up " + lab::testing::Src("labs/hyperv-names.yaml"));
  INFO(repaired.out);
  CHECK(repaired.code == 0);
  CHECK(repaired.out.find("'Ethernet 2'") != std::string::npos);
  CHECK_FALSE(shows_kernel_name(repaired.out));

  // The adapter deleted inside the VM: the kernel refuses lab link, and the refusal names it as written.
  REQUIRE(sb.Lab("exec hyperv-names DC01 -- ip link del Network-Adapter").code == 0);
  Run refused = sb.Lab("link hyperv-names dc01 'network adapter' down");
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("'Network Adapter'") != std::string::npos);
  CHECK_FALSE(shows_kernel_name(refused.out));
  status = sb.Lab("status hyperv-names");
  INFO(status.out);
  CHECK(status.out.find("veth 'Network Adapter' of VM 'DC01' is missing") != std::string::npos);
  CHECK_FALSE(shows_kernel_name(status.out));
  REQUIRE(sb.Lab("down hyperv-names").code == 0);
}
