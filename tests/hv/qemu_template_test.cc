// Templates of qemu VMs on images (hv/qemu/template.h): what a template's key is made of, the
// identity a VM resumed from one takes on (the script's bytes, read back by a real shell), and a
// VM's disk over a template's qcow2. No guest boots here: tests/e2e/qemu_lifecycle_test.cc starts
// VMs from a real template.
#include "hv/qemu/template.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "base/text.h"
#include "hv/qemu/command.h"
#include "hv/qemu/disk.h"

namespace lab::hv::qemu {
namespace {

namespace fs = std::filesystem;

QemuConfig Machine() {
  QemuConfig c;
  c.kernel = "/k/vmlinux-6.1";
  c.initrd = "/k/initramfs.img";
  c.memory_mib = 256;
  c.processors = 1;
  c.root = RootKind::kDisk;
  c.agent_binary = "/opt/lab/lab";
  return c;
}

std::string TempDir() {
  std::string dir = (fs::temp_directory_path() / ("lab-tpl-test-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST_CASE("A template's key changes with what a saved state must match and not with what each VM has of its own",
          "[hv][qemu]") {
  const std::string disk = "/s/qemu/disks/tiny.raw", qemu = "/usr/bin/qemu-system-x86_64:1:2.3";
  const std::string base = TemplateKey(Machine(), disk, qemu);
  CHECK(std::regex_match(base, std::regex("[0-9a-f]{16}")));
  CHECK(TemplateKey(Machine(), disk, qemu) == base);

  // Each VM's own: its run directory, disk, adapters, incoming state and niceness.
  QemuConfig own = Machine();
  own.run_dir = "/run/lab/x/q/vm2";
  own.disk = "/s/disks/x/q/vm2/disk.qcow2";
  own.nics.push_back(NicAtStart{"nA", 7, "00:15:5d:00:00:01", 1});
  own.incoming = "exec:cat /t/state.vm";
  own.nice = 5;
  CHECK(TemplateKey(own, disk, qemu) == base);

  // What the memory state depends on.
  std::vector<std::pair<std::string, QemuConfig>> differ;
  auto with = [&](const std::string& what, auto change) {
    QemuConfig c = Machine();
    change(c);
    differ.emplace_back(what, c);
  };
  with("memory", [](QemuConfig& c) { c.memory_mib = 512; });
  with("processors", [](QemuConfig& c) { c.processors = 2; });
  with("exposure", [](QemuConfig& c) { c.expose_virtualization_extensions = true; });
  with("accelerator", [](QemuConfig& c) { c.accel = Accel::kKvm; });
  with("kernel", [](QemuConfig& c) { c.kernel = "/k/vmlinux-6.2"; });
  with("initramfs", [](QemuConfig& c) { c.initrd = "/k/other.img"; });
  with("hot-plug ports", [](QemuConfig& c) { c.hotplug_ports = 4; });
  with("balloon", [](QemuConfig& c) { c.balloon = false; });
  for (const auto& [what, c] : differ) {
    INFO(what);
    CHECK(TemplateKey(c, disk, qemu) != base);
  }
  CHECK(TemplateKey(Machine(), "/s/qemu/disks/other.raw", qemu) != base);
  CHECK(TemplateKey(Machine(), disk, "/usr/bin/qemu-system-x86_64:1:9.9") != base);
}

TEST_CASE("The entropy a resumed guest is given is printed byte for byte by a real shell's printf", "[hv][qemu]") {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  std::string fmt = PrintfBytes(all);
  CHECK(fmt.find('\'') == std::string::npos);  // safe inside the script's single quotes
  CHECK(fmt.find('%') == std::string::npos);
  std::string dir = TempDir();
  std::string out = dir + "/bytes";
  auto ran = RunCommand({"sh", "-c", "printf '" + fmt + "' > " + out}, 10000);
  REQUIRE(ran.ok());
  REQUIRE(ran->exit_code == 0);
  auto back = ReadFile(out);
  REQUIRE(back.has_value());
  CHECK(*back == all);
  fs::remove_all(dir);
}

TEST_CASE("Each resumed guest gets its own entropy and machine id and the host's clock", "[hv][qemu]") {
  auto a = FreshIdentity(), b = FreshIdentity();
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->entropy.size() == 64);
  CHECK(std::regex_match(a->machine_id, std::regex("[0-9a-f]{32}")));
  CHECK(a->entropy != b->entropy);
  CHECK(a->machine_id != b->machine_id);
  CHECK(std::abs(a->epoch_seconds - static_cast<int64_t>(::time(nullptr))) <= 2);

  std::string script = IdentityScript(*a);
  CHECK(script.find("date -s @" + std::to_string(a->epoch_seconds) + " ") != std::string::npos);
  CHECK(script.find("printf '" + PrintfBytes(a->entropy) + "' >/dev/urandom") != std::string::npos);
  CHECK(script.find("echo " + a->machine_id + " >/etc/machine-id") != std::string::npos);
  CHECK(script.find("/var/lib/systemd/random-seed") != std::string::npos);
  // A shell reads it (syntax only: -n runs nothing).
  auto parsed = RunCommand({"sh", "-n", "-c", script}, 10000);
  REQUIRE(parsed.ok());
  CHECK(parsed->exit_code == 0);
}

TEST_CASE("A template is made only of a VM on an image's disk, under a key that names a directory", "[hv][qemu]") {
  std::string dir = TempDir();
  QemuConfig host = Machine();
  host.root = RootKind::k9p;
  auto t = EnsureTemplate(dir + "/templates", "0123456789abcdef", host, "/nope.raw", dir + "/run", 1000);
  REQUIRE_FALSE(t.ok());
  CHECK(t.message().find("image's disk") != std::string::npos);
  auto bad = EnsureTemplate(dir + "/templates", "../x", Machine(), "/nope.raw", dir + "/run", 1000);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.message().find("cannot name a directory") != std::string::npos);
  // A template that cannot be made leaves nothing but its lock.
  auto missing = EnsureTemplate(dir + "/templates", "0123456789abcdef", Machine(), dir + "/nope.raw", dir + "/run", 1000);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find(dir + "/nope.raw") != std::string::npos);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir + "/templates")) left.push_back(e.path().filename().string());
  CHECK(left == std::vector<std::string>{"0123456789abcdef.lock"});
  CHECK_FALSE(fs::exists(dir + "/run"));
  fs::remove_all(dir);
}

TEST_CASE("A VM's disk over a template's qcow2 names it as a qcow2 backing file", "[hv][qemu]") {
  if (FindInPath("qemu-img").empty()) {
    WARN("SKIP: qemu-img is not installed");
    return;
  }
  std::string dir = TempDir();
  std::string base = dir + "/template.qcow2";
  auto made = RunCommand({"qemu-img", "create", "-q", "-f", "qcow2", base, "64M"}, 30000);
  REQUIRE(made.ok());
  REQUIRE(made->exit_code == 0);
  std::string vm = dir + "/vm.qcow2";
  REQUIRE(CreateVmDisk(vm, base, "qcow2").ok());
  auto info = RunCommand({"qemu-img", "info", "--output=json", vm}, 30000);
  REQUIRE(info.ok());
  auto j = nlohmann::json::parse(info->output);
  CHECK(j["backing-filename"] == base);
  CHECK(j["backing-filename-format"] == "qcow2");
  CHECK(j["virtual-size"] == 64 << 20);
  fs::remove_all(dir);
}

}  // namespace lab::hv::qemu
