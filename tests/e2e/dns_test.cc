// End to end: what the lab's DNS answers for machines with several addresses.
//
// labs/multi-homed.yaml: hyperv-01 has addresses on corp, on node-a's internal switch and on its
// own NAT switch. Asked of the corp stand-in, its name is its corp address, and only that, every
// time: a client elsewhere on corp has no route to the others. Root only; traffic stays inside
// the lab's own namespaces.
#include "base/text.h"
#include "tests/e2e/e2e_support.h"

using namespace lab::testing::e2e;

namespace {

const std::string kLab = "multi-homed";

/// The IPv4 addresses `name` resolves to inside `machine`, through its resolver (glibc, the lab's
/// DNS servers in its resolv.conf), sorted and without duplicates.
std::string Addresses(const Sandbox& sb, const std::string& machine, const std::string& name) {
  Run r = sb.Lab("exec " + kLab + " " + machine + " -- getent ahostsv4 " + name);
  std::set<std::string> out;
  for (const auto& line : lab::Split(r.out, '\n'))
    if (!lab::Trim(line).empty()) out.insert(lab::Split(lab::Trim(line), ' ')[0]);
  return lab::Join(std::vector<std::string>(out.begin(), out.end()), " ");
}

}  // namespace

TEST_CASE("A machine with several addresses is answered with its address on the network asked, every time",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Run up = sb.Lab("up " + lab::testing::Src("labs/" + kLab + ".yaml"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = InitPids(sb, kLab);

  for (int i = 0; i < 6; ++i) {
    INFO("query " << i);
    CHECK(Addresses(sb, "client", "hyperv-01") == "172.16.5.20");  // not 10.50.0.20, not 10.99.0.1
    CHECK(Addresses(sb, "client", "files") == "172.16.5.40");      // not 10.50.0.40
    CHECK(Addresses(sb, "web01", "files") == "172.16.5.40");       // asked through DevNAT
  }
  // A machine with no address on corp is still answered, with what it has.
  CHECK(Addresses(sb, "client", "web01") == "10.99.0.10");
  // dns_records are answered as written.
  CHECK(Addresses(sb, "db01", "intranet.acme.test") == "172.16.5.254");

  TakeDownLeavingNothing(sb, kLab, pids);
}
