// End to end: lab inside a VM. The hypervisor inside a middle VM is lab itself (/opt/lab), with
// its own state and run dirs inside the VM, its cgroups below the VM's, and a VM whose
// virtualization extensions are not exposed cannot run it at all. Root only; traffic stays
// inside the lab's own namespaces.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/text.h"
#include "hv/kernel/partition.h"
#include "tests/support.h"

namespace fs = std::filesystem;
using lab::testing::Src;

namespace {

struct Run {
  int code = -1;
  std::string out;  // stdout and stderr together
};

/// A private state and run directory, so the test never meets the machine's own labs.
struct Sandbox {
  std::string dir = lab::testing::TempDir("lab-nest");
  std::string state = dir + "/state";
  std::string run = dir + "/run";

  Run Lab(const std::string& args) const {
    std::string cmd = "LAB_STATE_DIR=" + state + " LAB_RUN_DIR=" + run + " " + LAB_BINARY_DIR + "/lab --no-color " +
                      args + " 2>&1";
    Run r;
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    size_t n;
    while ((n = ::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
  }

  std::map<std::string, int> InitPids(const std::string& lab) const {
    std::map<std::string, int> pids;
    auto j = nlohmann::json::parse(Lab("status " + lab + " --json").out, nullptr, false);
    if (j.is_discarded()) return pids;
    for (const auto& m : j["machines"]) pids[m.value("name", std::string())] = m.value("pid", 0);
    return pids;
  }
};

/// The cgroup directory (pids hierarchy, or v2) holding process `pid`, seen from the machine.
std::string CgroupOf(int pid) {
  const auto& cg = lab::hv::kernel::Cgroups();
  std::string root = cg.v2 ? cg.v2_root : "";
  for (const auto& [controller, mount_point] : cg.v1)
    if (controller == "pids") root = mount_point;
  for (const auto& line : lab::Split(lab::ReadFile("/proc/" + std::to_string(pid) + "/cgroup").value_or(""), '\n')) {
    auto parts = lab::Split(line, ':');
    if (parts.size() < 3) continue;
    bool match = cg.v2 ? parts[0] == "0" : lab::Split(parts[1], ',') == std::vector<std::string>{"pids"};
    if (!match) continue;
    std::string path = parts[2];
    if (path.size() > 6 && path.ends_with("/_leaf")) path.resize(path.size() - 6);
    return root + path;
  }
  return "";
}

/// Processes in the cgroup directory `dir` and below, counted from outside.
int ProcessesBelow(const std::string& dir) {
  int n = 0;
  auto count = [&n](const std::string& d) {
    std::istringstream in(lab::ReadFile(d + "/cgroup.procs").value_or(""));
    int pid;
    while (in >> pid) ++n;
  };
  count(dir);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec))
    if (it->is_directory()) count(it->path().string());
  return n;
}

/// A memory cgroup named `leaf` somewhere below `dir` (v1), with its limit; "" when none.
std::string MemoryLimitBelow(const std::string& dir, const std::string& leaf) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec))
    if (it->is_directory() && it->path().filename() == leaf)
      return lab::Trim(lab::ReadFile(it->path().string() + "/memory.limit_in_bytes").value_or(""));
  return "";
}

bool ProcessGone(int pid) {
  auto stat = lab::ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  auto close = stat->rfind(')');
  return close != std::string::npos && stat->size() > close + 2 && (*stat)[close + 2] == 'Z';
}

constexpr const char* kInner = R"(lab: inner
hosts:
  ihost:
    switches:
      Int: {type: internal, ip: 172.31.0.1/24}
    vms:
      ivm:
        memory: {startup: 256MiB}
        adapters:
          - {switch: Int, ip: 172.31.0.2/24}
checks:
  - {from: ivm, ping: 172.31.0.1}
)";

}  // namespace

TEST_CASE("lab runs inside a VM with exposed virtualization extensions, and not inside one without",
          "[root][e2e]") {
  LAB_REQUIRE_ROOT("bringing up labs");
  Sandbox sb;
  Run up = sb.Lab("up " + Src("labs/nested-nat.yaml"));
  INFO(up.out);
  REQUIRE(up.code == 0);
  auto pids = sb.InitPids("nested-nat");
  REQUIRE(pids["middle"] > 0);

  // The kernel enforces the setting: nested1 (not exposed) cannot make namespaces, middle can.
  Run closed = sb.Lab("exec nested-nat nested1 -- unshare -n true");
  INFO(closed.out);
  CHECK(closed.code != 0);
  CHECK(sb.Lab("exec nested-nat middle -- unshare -n true").code == 0);

  // lab itself is the hypervisor inside middle, with its own state and run dirs there.
  std::string inner = sb.dir + "/inner.yaml";
  lab::WriteFileAtomic(inner, kInner);
  REQUIRE(sb.Lab("exec nested-nat middle -- sh -c 'cat > /root/inner.yaml' < " + inner).code == 0);
  std::string middle_cgroup = CgroupOf(pids["middle"]);
  REQUIRE_FALSE(middle_cgroup.empty());
  int baseline = ProcessesBelow(middle_cgroup);

  Run inner_up = sb.Lab("exec nested-nat middle -- lab up /root/inner.yaml");
  INFO(inner_up.out);
  REQUIRE(inner_up.code == 0);
  CHECK(inner_up.out.find("Apply complete") != std::string::npos);
  Run inner_exec = sb.Lab("exec nested-nat middle -- lab exec inner ivm -- cat /etc/hostname");
  INFO(inner_exec.out);
  CHECK(inner_exec.code == 0);
  CHECK(inner_exec.out.find("ivm") != std::string::npos);
  Run inner_check = sb.Lab("exec nested-nat middle -- lab check inner");
  INFO(inner_check.out);
  CHECK(inner_check.code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- test -s /var/lib/lab/state.db").code == 0);
  CHECK(sb.Lab("exec nested-nat middle -- test -d /run/lab").code == 0);
  // Its VMs run below middle, under middle's limits: the nested cgroup holds the inner limit.
  CHECK(ProcessesBelow(middle_cgroup) > baseline);
  if (!lab::hv::kernel::Cgroups().v2) {
    std::string memory_root;
    for (const auto& [controller, mount_point] : lab::hv::kernel::Cgroups().v1)
      if (controller == "memory") memory_root = mount_point;
    std::string pids_root;
    for (const auto& [controller, mount_point] : lab::hv::kernel::Cgroups().v1)
      if (controller == "pids") pids_root = mount_point;
    std::string middle_memory = memory_root + middle_cgroup.substr(pids_root.size());
    CHECK(MemoryLimitBelow(middle_memory, "ivm") == std::to_string(256ull << 20));
  }

  Run inner_down = sb.Lab("exec nested-nat middle -- lab down inner");
  INFO(inner_down.out);
  CHECK(inner_down.code == 0);
  CHECK(ProcessesBelow(middle_cgroup) == baseline);

  // nested1 does not expose its extensions: lab refuses before touching anything.
  REQUIRE(sb.Lab("exec nested-nat nested1 -- sh -c 'cat > /root/inner.yaml' < " + inner).code == 0);
  Run refused = sb.Lab("exec nested-nat nested1 -- lab up /root/inner.yaml");
  INFO(refused.out);
  CHECK(refused.code == 1);
  CHECK(refused.out.find("this machine's virtualization extensions are not exposed, so it cannot run VMs; on its "
                         "host: Set-VMProcessor -VMName nested1 -ExposeVirtualizationExtensions $true (lab file: "
                         "processor.expose_virtualization_extensions: true)") != std::string::npos);
  CHECK(sb.Lab("exec nested-nat nested1 -- test -e /run/lab").code != 0);

  Run down = sb.Lab("down nested-nat");
  INFO(down.out);
  CHECK(down.code == 0);
  for (const auto& [name, pid] : pids) CHECK(ProcessGone(pid));
  CHECK_FALSE(fs::exists(middle_cgroup));
  std::error_code ec;
  if (fs::exists(sb.run, ec))
    for (const auto& e : fs::directory_iterator(sb.run, ec)) FAIL("left in the run dir: " << e.path());
  if (fs::exists(sb.state + "/disks", ec))
    for (const auto& e : fs::directory_iterator(sb.state + "/disks", ec)) FAIL("left on disk: " << e.path());
  auto mounts = lab::ReadFile("/proc/self/mountinfo").value_or("");
  CHECK(mounts.find(sb.dir) == std::string::npos);
  fs::remove_all(sb.dir);
}
