// driver: qemu as a user meets it at lab validate: a qemu VM is judged by the processor this
// machine's QEMU really offers, which the test works out on its own from lab doctor's accelerator
// line and /proc/cpuinfo (never assuming this machine's hardware).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/support.h"

namespace {

std::pair<int, std::string> Run(const std::string& dir, const std::string& args) {
  std::string cmd = "LAB_STATE_DIR=" + dir + "/state LAB_RUN_DIR=" + dir + "/run " + LAB_BINARY_DIR +
                    "/lab --no-color " + args + " 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// "intel", "amd" or "other" from /proc/cpuinfo's first vendor_id.
std::string CpuinfoVendor() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("vendor_id", 0) != 0) continue;
    if (line.find("GenuineIntel") != std::string::npos) return "intel";
    if (line.find("AuthenticAMD") != std::string::npos || line.find("HygonGenuine") != std::string::npos) return "amd";
    return "other";
  }
  return "other";
}

std::string QemuLab(const std::string& compatibility, const std::string& version, const std::string& driver) {
  return "lab: qemu-validate\n" + compatibility +
         "hosts:\n"
         "  hv1:\n"
         "    vms:\n"
         "      middle:\n"
         "        driver: " + driver + "\n"
         "        version: \"" + version + "\"\n"
         "        processor: {count: 1, expose_virtualization_extensions: true}\n"
         "        memory: {startup: 1GiB}\n"
         "        vms:\n"
         "          nested1: {}\n";
}

}  // namespace

TEST_CASE("lab validate judges a qemu VM by the processor QEMU offers here: AMD under TCG, this CPU's under KVM",
          "[root][cli]") {
  LAB_REQUIRE_ROOT("lab doctor's /dev/kvm probe");
  std::string dir = lab::testing::TempDir("lab-drivers");
  // What the doctor says QEMU will use here, and so the processor a qemu VM gets.
  auto [dcode, dout] = Run(dir, "doctor --json --state-dir " + dir + "/state");
  auto doc = nlohmann::json::parse(dout.substr(dout.find('[')), nullptr, false);
  REQUIRE(doc.is_array());
  std::string accel;
  for (const auto& c : doc)
    if (c["name"] == "qemu accelerator") accel = c["detail"].get<std::string>().substr(0, 3);
  REQUIRE((accel == "kvm" || accel == "tcg"));
  std::string vendor = accel == "tcg" ? "amd" : CpuinfoVendor();
  INFO("accelerator " << accel << ", so a qemu VM gets processor vendor " << vendor);

  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  // The seeds' profile: Intel only.
  auto [v8, v8_out] = Run(dir, "validate " + write("v8.yaml", QemuLab("", "9.0", "qemu")));
  INFO(v8_out);
  if (vendor == "intel") {
    CHECK(v8 == 0);
  } else {
    CHECK(v8 == 1);
    CHECK(v8_out.find("v8.yaml:5:7: error: VM 'middle': expose_virtualization_extensions needs an Intel processor") !=
          std::string::npos);
    CHECK(v8_out.find("\"nesting is currently Intel-only\"") != std::string::npos);
    CHECK(v8_out.find(vendor == "amd" ? "as a qemu VM it gets an AMD processor" : "as a qemu VM it gets a processor") !=
          std::string::npos);
  }
  // ws2022 nests on Intel and on AMD from version 10.0.
  auto [ws, ws_out] = Run(dir, "validate " + write("ws.yaml", QemuLab("compatibility: ws2022\n", "10.0", "qemu")));
  INFO(ws_out);
  CHECK(ws == (vendor == "other" ? 1 : 0));
  // The same VM as a partition is judged by the lab file's host (Intel by default), as before.
  auto [part, part_out] = Run(dir, "validate " + write("part.yaml", QemuLab("", "9.0", "partition")));
  INFO(part_out);
  CHECK(part == 0);
  std::string rm = "rm -rf " + dir;
  (void)::system(rm.c_str());
}

TEST_CASE("lab validate refuses driver: on a host and a qemu VM below 128MB, at their keys", "[cli]") {
  std::string dir = lab::testing::TempDir("lab-drivers");
  std::ofstream(dir + "/bad.yaml") << "lab: bad\n"
                                      "hosts:\n"
                                      "  hv1:\n"
                                      "    driver: qemu\n"
                                      "    vms:\n"
                                      "      small: {driver: qemu, memory: {startup: 64MiB}}\n";
  auto [code, out] = Run(dir, "validate " + dir + "/bad.yaml");
  INFO(out);
  CHECK(code == 1);
  CHECK(out.find("bad.yaml:4:5: error: host 'hv1': hosts are physical machines: 'driver' applies to VMs only") !=
        std::string::npos);
  CHECK(out.find("bad.yaml:6:47: error: VM 'small': memory.startup 64MiB is too little for a qemu VM") !=
        std::string::npos);
  CHECK(out.find("at least 128MB") != std::string::npos);
  std::string rm = "rm -rf " + dir;
  (void)::system(rm.c_str());
}
