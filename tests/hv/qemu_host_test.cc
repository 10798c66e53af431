// What this machine offers qemu VMs for the rules (hv/qemu_host.h): the accelerator cached per
// boot, the processor vendor and count read from the system (expectations read independently).
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "hv/kernel/doctor.h"
#include "hv/qemu_host.h"
#include "tests/support.h"

using lab::hv::ProbeQemuHost;
using lab::hv::VendorFromName;
using lab::hv::model::Accelerator;
using lab::hv::model::ProcessorVendor;

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string BootId() {
  std::string id = Slurp("/proc/sys/kernel/random/boot_id");
  while (!id.empty() && id.back() == '\n') id.pop_back();
  return id;
}

}  // namespace

TEST_CASE("Vendor names read as the rules' processor vendors", "[hv]") {
  CHECK(VendorFromName("intel") == ProcessorVendor::kIntel);
  CHECK(VendorFromName("amd") == ProcessorVendor::kAmd);
  CHECK(VendorFromName("") == ProcessorVendor::kNone);
  CHECK(VendorFromName("via") == ProcessorVendor::kOther);
}

TEST_CASE("The accelerator verdict of this boot is taken from the run dir without probing again", "[hv]") {
  std::string boot = BootId();
  if (boot.empty()) {
    WARN("SKIP: no /proc/sys/kernel/random/boot_id here");
    return;
  }
  std::string dir = lab::testing::TempDir("qemu-host");
  for (const char* accel : {"kvm", "tcg"}) {
    INFO(accel);
    {
      std::ofstream out(dir + "/qemu-accel");
      out << boot << " " << accel << "\n";
    }
    auto f = ProbeQemuHost(dir);
    CHECK(f.accel == (std::string(accel) == "kvm" ? Accelerator::kKvm : Accelerator::kTcg));
    CHECK(f.why.find(dir + "/qemu-accel") != std::string::npos);
    // The processor is the machine's, whatever the accelerator.
    CHECK(f.cpu == VendorFromName(lab::hv::kernel::CpuVendor(Slurp("/proc/cpuinfo"))));
    CHECK(f.cpus == static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)));
  }
  std::filesystem::remove_all(dir);
}
