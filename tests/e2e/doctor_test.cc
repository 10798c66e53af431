// lab doctor as a user runs it: the table, the exit code, --json.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/support.h"

namespace {

std::pair<int, std::string> RunDoctor(const std::string& args) {
  std::string cmd = std::string(LAB_BINARY_DIR) + "/lab --no-color doctor " + args + " 2>/dev/null";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST_CASE("lab doctor as root here exits 0 and reports /dev/kvm", "[root][cli]") {
  LAB_REQUIRE_ROOT("lab doctor");
  auto [code, out] = RunDoctor("");
  INFO(out);
  CHECK(code == 0);
  CHECK(out.find("/dev/kvm") != std::string::npos);
  CHECK(out.find("processor") != std::string::npos);
  CHECK(out.find("network namespace") != std::string::npos);
  CHECK(out.find("Everything partitions need is here.") != std::string::npos);
}

TEST_CASE("lab doctor --json is an array of capabilities", "[root][cli]") {
  LAB_REQUIRE_ROOT("lab doctor");
  auto [code, out] = RunDoctor("--json");
  INFO(out);
  CHECK(code == 0);
  auto doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  REQUIRE(doc.is_array());
  bool kvm = false;
  for (const auto& c : doc) {
    REQUIRE(c.contains("name"));
    CHECK(c["state"].is_string());
    CHECK(c["detail"].is_string());
    CHECK(c["fix"].is_string());
    CHECK(c["required"].is_boolean());
    if (c["name"] == "/dev/kvm") {
      kvm = true;
      std::string state = c["state"];
      INFO("/dev/kvm: " << state << ": " << c["detail"].get<std::string>());
      if (auto expected = lab::testing::KvmStateByQemu())
        CHECK(state == *expected);
      else
        CHECK((state == "usable" || state == "unusable"));
      CHECK(c["required"] == false);
      // An unusable /dev/kvm says what to do instead.
      if (state == "unusable") CHECK(c["detail"].get<std::string>().find("(TCG) instead") != std::string::npos);
      if (state == "usable") CHECK(c["fix"] == "");
    }
  }
  CHECK(kvm);
}

TEST_CASE("lab doctor --json reports what the qemu driver needs, judged from its own /dev/kvm verdict", "[root][cli]") {
  LAB_REQUIRE_ROOT("lab doctor");
  std::string state = lab::testing::TempDir("lab-doctor-state");
  auto [code, out] = RunDoctor("--json --state-dir " + state);
  INFO(out);
  CHECK(code == 0);
  auto doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  REQUIRE(doc.is_array());
  std::map<std::string, nlohmann::json> rows;
  for (const auto& c : doc) rows[c["name"]] = c;
  for (const char* name : {"qemu", "qemu accelerator", "qemu nested", "vhost-net", "vhost-vsock", "guest kernel"}) {
    INFO(name);
    REQUIRE(rows.count(name));
    CHECK(rows[name]["required"] == false);  // partitions run without any of it
  }
  bool qemu_here = false;
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/bin/"})
    qemu_here = qemu_here || ::access((std::string(dir) + "qemu-system-x86_64").c_str(), X_OK) == 0;
  CHECK((rows["qemu"]["state"] == "ok") == qemu_here);
  // KVM only where the /dev/kvm line says a standard guest runs under it.
  std::string accel = rows["qemu accelerator"]["detail"];
  CHECK((accel.rfind("kvm", 0) == 0) == (rows["/dev/kvm"]["state"] == "usable"));
  if (accel.rfind("tcg", 0) == 0) CHECK(rows["qemu nested"]["state"] == "ok");  // TCG emulates SVM
  struct stat st;
  CHECK((rows["vhost-net"]["state"] == "ok") == (::stat("/dev/vhost-net", &st) == 0));
  CHECK((rows["vhost-vsock"]["state"] == "ok") == (::stat("/dev/vhost-vsock", &st) == 0));
  // A fresh state directory has no kernel cached: it is at most fetchable.
  CHECK(rows["guest kernel"]["detail"].get<std::string>().find("cached in") == std::string::npos);
  ::rmdir(state.c_str());
}
