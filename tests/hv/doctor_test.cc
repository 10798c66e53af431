// lab doctor's probes against this machine, and the rule that decides its exit code.
#include "hv/kernel/doctor.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "hv/kernel/netlink.h"
#include "tests/support.h"

namespace lab::hv::kernel {
namespace {

const Capability* Find(const std::vector<Capability>& caps, const std::string& name) {
  for (const auto& c : caps)
    if (c.name == name) return &c;
  return nullptr;
}

std::vector<std::string> LinkNames() {
  auto ns = NetNs::Current();
  REQUIRE(ns.ok());
  auto nl = Netlink::In(*ns);
  REQUIRE(nl.ok());
  auto links = nl->Links();
  REQUIRE(links.ok());
  std::vector<std::string> names;
  for (const auto& l : *links) {
    names.push_back(l.name);
    for (const auto& a : l.altnames) names.push_back(a);
  }
  return names;
}

std::vector<std::string> Tables() {
  auto ns = NetNs::Current();
  REQUIRE(ns.ok());
  auto tables = NftListTables(*ns);
  REQUIRE(tables.ok());
  return *tables;
}

std::vector<std::string> DoctorTempDirs() {
  std::vector<std::string> dirs;
  if (DIR* d = ::opendir("/tmp")) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind("lab-doctor-", 0) == 0) dirs.push_back(e->d_name);
    ::closedir(d);
  }
  return dirs;
}

std::string MountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Capability Cap(const std::string& state, bool required) { return {"x", state, "", "", required}; }

/// What this machine has at /dev/kvm, asked apart from the doctor: the state the doctor must report.
std::string KvmDeviceStateHere() {
  struct stat st;
  if (::stat("/dev/kvm", &st) != 0) return kCapMissing;
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return kCapMissing;
  ::close(fd);
  return kCapOk;
}

}  // namespace

TEST_CASE("A missing required capability fails the doctor; a missing optional one does not", "[hv]") {
  CHECK(AllRequiredPresent({}));
  CHECK(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapOk, false)}));
  CHECK_FALSE(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapMissing, true)}));
  CHECK(AllRequiredPresent({Cap(kCapOk, true), Cap(kCapMissing, false)}));
  CHECK(AllRequiredPresent({Cap(kCapNotApplicable, false), Cap(kCapMissing, false)}));
}

TEST_CASE("As root here, everything partitions need is present and /dev/kvm is optional, reported as it is", "[root][hv]") {
  LAB_REQUIRE_ROOT("lab doctor's probes");
  auto caps = Diagnose(LAB_BINARY_DIR "/lab-init");
  for (const auto& c : caps) INFO(c.name << ": " << c.state << " " << c.detail << " fix: " << c.fix);
  std::string table;
  for (const auto& c : caps) table += c.name + ": " + c.state + " | " + c.detail + " | " + c.fix + "\n";
  INFO(table);

  for (const char* name : {"root", "network namespace", "mount namespace", "pid namespace", "uts namespace",
                           "ipc namespace", "cgroups", "cgroup memory", "cgroup cpu", "veth + bridge",
                           "nftables nat", "overlayfs", "dnsmasq", "lab-init"}) {
    const Capability* c = Find(caps, name);
    INFO(name);
    REQUIRE(c != nullptr);
    CHECK(c->required);
    CHECK(c->state == kCapOk);
  }
  CHECK(AllRequiredPresent(caps));
  for (const auto& c : caps) {
    CHECK((c.state == kCapOk || c.state == kCapMissing || c.state == kCapNotApplicable));
    CHECK(c.fix.empty() == (c.state != kCapMissing));
  }

  const Capability* kvm = Find(caps, "/dev/kvm");
  REQUIRE(kvm != nullptr);
  CHECK_FALSE(kvm->required);
  CHECK(kvm->state == KvmDeviceStateHere());
  REQUIRE(Find(caps, "kvm nested") != nullptr);
  CHECK_FALSE(Find(caps, "kvm nested")->required);
  REQUIRE(Find(caps, "virtualization extensions") != nullptr);
  CHECK_FALSE(Find(caps, "virtualization extensions")->required);
}

TEST_CASE("The doctor leaves nothing in the machine's own namespaces or /tmp", "[root][hv]") {
  LAB_REQUIRE_ROOT("lab doctor's probes");
  auto links_before = LinkNames();
  auto tables_before = Tables();
  auto dirs_before = DoctorTempDirs();
  auto caps = Diagnose(LAB_BINARY_DIR "/lab-init");
  REQUIRE(Find(caps, "veth + bridge")->state == kCapOk);  // so the probes really made their objects
  REQUIRE(Find(caps, "nftables nat")->state == kCapOk);

  for (const auto& name : LinkNames()) {
    INFO(name);
    CHECK(name.rfind("labdoc-", 0) != 0);
    CHECK(name != "vEthernet(doctor)");
  }
  for (const auto& t : Tables()) {
    INFO(t);
    CHECK(t.find("lab_doctor_") == std::string::npos);
  }
  CHECK(DoctorTempDirs() == dirs_before);
  CHECK(MountInfo().find("lab-doctor-") == std::string::npos);
  // The machine's namespace kept every link and table it had (others may add their own meanwhile).
  auto links_after = LinkNames();
  for (const auto& l : links_before) CHECK(std::find(links_after.begin(), links_after.end(), l) != links_after.end());
  auto tables_after = Tables();
  for (const auto& t : tables_before) CHECK(std::find(tables_after.begin(), tables_after.end(), t) != tables_after.end());
}

}  // namespace lab::hv::kernel
