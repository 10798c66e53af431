// Cgroups of partitions on cgroup v2 (unified) and v1/hybrid layouts.
//
// v1: the partition's path exists under each controller hierarchy (memory, cpu, pids, freezer);
// processes join it in every hierarchy. v2: the path carries the limits and the processes live in
// its leaf child "_leaf" (the "no internal processes" rule would otherwise forbid enabling
// controllers for a nested partition below a running one). "_leaf" cannot clash with a machine
// name, which is [a-z0-9-].
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {
namespace {

constexpr const char* kV2Leaf = "_leaf";
const char* const kV1Controllers[] = {"memory", "cpu", "pids", "freezer"};

CgroupSetup Detect() {
  CgroupSetup s;
  struct stat st;
  if (::stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0) {
    s.v2 = true;
    s.v2_root = "/sys/fs/cgroup";
    return s;
  }
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, dev, root, mount_point, fstype, source, superopts;
    pre >> id >> parent >> dev >> root >> mount_point;
    post >> fstype >> source >> superopts;
    if (fstype != "cgroup") continue;
    for (const std::string& opt : Split(superopts, ',')) {
      for (const char* c : kV1Controllers) {
        if (opt != c) continue;
        bool known = false;
        for (const auto& [name, mp] : s.v1) known = known || name == c;
        if (!known) s.v1.emplace_back(c, mount_point);
      }
    }
  }
  return s;
}

std::string V1Dir(const std::string& controller, const std::string& relative) {
  for (const auto& [name, mp] : Cgroups().v1)
    if (name == controller) return mp + "/" + relative;
  return "";
}

Status WriteCgroupFile(const std::string& path, const std::string& value) {
  return WriteWholeFile(path, value).Prefixed("cgroup: write '" + value + "'");
}

// Pids in `dir` and below (cgroup.procs of each level).
void CollectProcs(const std::string& dir, std::vector<int>* pids) {
  if (auto procs = ReadFile(dir + "/cgroup.procs")) {
    std::istringstream in(*procs);
    int pid;
    while (in >> pid) pids->push_back(pid);
  }
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type == DT_DIR && name != "." && name != "..") CollectProcs(dir + "/" + name, pids);
  }
  ::closedir(d);
}

// rmdir of `dir`'s subtree, deepest first, retrying while a level still has processes; with
// `wait` false, the first level that still has processes (EBUSY) ends the walk with an error.
Status RemoveCgroupDir(const std::string& dir, std::chrono::steady_clock::time_point deadline, bool wait = true) {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> children;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (e->d_type == DT_DIR && name != "." && name != "..") children.push_back(dir + "/" + name);
    }
    ::closedir(d);
    for (const std::string& c : children) LAB_RETURN_IF_ERROR(RemoveCgroupDir(c, deadline, wait));
  } else if (errno == ENOENT) {
    return Status::Ok();
  }
  bool killed = false;
  for (;;) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return Status::Ok();
    if (errno != EBUSY || !wait) return ErrnoStatus("remove cgroup " + dir);
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return ErrnoStatus("remove cgroup " + dir + " (processes still inside)");
    // Processes left in a cgroup marked as the lab's are the lab's: after a grace period, end them.
    if (!killed && deadline - now < std::chrono::milliseconds(1500)) {
      std::vector<int> pids;
      CollectProcs(dir, &pids);
      for (int pid : pids) ::kill(pid, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string CgroupSetup::Describe() const {
  if (v2) return "cgroup v2 (memory cpu pids) at " + v2_root;
  std::string out = "cgroup v1 (";
  for (size_t i = 0; i < v1.size(); ++i) out += (i ? " " : "") + v1[i].first;
  return out + ")";
}

const CgroupSetup& Cgroups() {
  static const CgroupSetup setup = Detect();
  return setup;
}

std::vector<std::string> CgroupDirs(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  if (s.v2) return {s.v2_root + "/" + relative};
  std::vector<std::string> dirs;
  std::set<std::string> seen;  // co-mounted controllers share one directory
  for (const auto& [name, mp] : s.v1)
    if (seen.insert(mp).second) dirs.push_back(mp + "/" + relative);
  return dirs;
}

std::vector<std::string> CgroupProcsFiles(const std::string& relative) {
  std::vector<std::string> files;
  for (const std::string& dir : CgroupDirs(relative))
    files.push_back(dir + (Cgroups().v2 ? std::string("/") + kV2Leaf : "") + "/cgroup.procs");
  return files;
}

Status CgroupSetMemoryLimit(const std::string& relative, uint64_t bytes) {
  std::string limit = CgroupMemoryLimitPath(relative);
  if (limit.empty()) return Status::Error("cgroup: no memory controller for the memory limit");
  std::string dir = limit.substr(0, limit.rfind('/'));
  // v1 refuses (EBUSY) a limit it cannot reclaim down to; v2 would OOM-kill instead. Ask first.
  auto usage = ReadFile(dir + (Cgroups().v2 ? "/memory.current" : "/memory.usage_in_bytes"));
  if (!usage) return Status::Error("cgroup: " + relative + " does not exist (is the VM running?)");
  uint64_t used = std::strtoull(Trim(*usage).c_str(), nullptr, 10);
  if (used > bytes)
    return Status::Error("memory cannot shrink to " + std::to_string(bytes >> 20) + " MiB: the VM uses " +
                         std::to_string(used >> 20) + " MiB now (Set-VMMemory -StartupBytes: a larger value)");
  return WriteCgroupFile(limit, std::to_string(bytes));
}

std::string CgroupMemoryLimitPath(const std::string& relative) {
  if (Cgroups().v2) return Cgroups().v2_root + "/" + relative + "/memory.max";
  std::string dir = V1Dir("memory", relative);
  return dir.empty() ? "" : dir + "/memory.limit_in_bytes";
}

Status CgroupCreate(const std::string& relative, uint64_t memory_limit, int cpu_count, bool* created) {
  const CgroupSetup& s = Cgroups();
  *created = false;
  if (relative.empty() || relative.front() == '/' || relative.find("..") != std::string::npos)
    return Status::Error("cgroup: invalid path '" + relative + "'");
  if (!s.v2 && s.v1.empty()) return Status::Error("cgroup: no cgroup v2 and no v1 controllers found");
  struct stat st;
  *created = ::stat(CgroupDirs(relative).front().c_str(), &st) != 0;
  for (const std::string& dir : CgroupDirs(relative))
    LAB_RETURN_IF_ERROR(MakeDirs(dir).Prefixed("cgroup: create"));

  if (s.v2) {
    // Controllers must be enabled on every level above the one that uses them.
    std::string dir = s.v2_root;
    std::vector<std::string> levels = Split(relative, '/');
    for (size_t i = 0; i <= levels.size(); ++i) {
      for (const char* c : {"+memory", "+cpu", "+pids"})
        (void)WriteWholeFile(dir + "/cgroup.subtree_control", c);  // absent controllers: limits fail below
      if (i < levels.size()) dir += "/" + levels[i];
    }
    LAB_RETURN_IF_ERROR(MakeDirs(dir + "/" + kV2Leaf).Prefixed("cgroup: create"));
    if (memory_limit) LAB_RETURN_IF_ERROR(WriteCgroupFile(dir + "/memory.max", std::to_string(memory_limit)));
    if (cpu_count > 0)
      LAB_RETURN_IF_ERROR(WriteCgroupFile(dir + "/cpu.max", std::to_string(cpu_count * 100000) + " 100000"));
    return Status::Ok();
  }

  if (memory_limit) {
    std::string dir = V1Dir("memory", relative);
    if (dir.empty()) return Status::Error("cgroup: no v1 memory controller for the memory limit");
    LAB_RETURN_IF_ERROR(WriteCgroupFile(dir + "/memory.limit_in_bytes", std::to_string(memory_limit)));
  }
  if (cpu_count > 0) {
    std::string dir = V1Dir("cpu", relative);
    if (dir.empty()) return Status::Error("cgroup: no v1 cpu controller for the CPU quota");
    // The period is the kernel's default one of a new cgroup (100 ms): only the quota is written.
    int64_t quota = int64_t{cpu_count} * 100000;
    Status st_quota = WriteCgroupFile(dir + "/cpu.cfs_quota_us", std::to_string(quota));
    if (!st_quota.ok()) {
      // v1 refuses a quota above the parent's (a nested VM with more processors than its host):
      // the parent's quota is the effective limit anyway.
      std::string parent = dir.substr(0, dir.rfind('/'));
      auto pq = ReadFile(parent + "/cpu.cfs_quota_us");
      int64_t parent_quota = pq ? std::stoll(Trim(*pq)) : -1;
      if (parent_quota <= 0 || parent_quota >= quota) return st_quota;
      LAB_RETURN_IF_ERROR(WriteCgroupFile(dir + "/cpu.cfs_quota_us", std::to_string(parent_quota)));
    }
  }
  return Status::Ok();
}

void CgroupKillAll(const std::string& relative) {
  std::vector<int> pids;
  for (const std::string& dir : CgroupDirs(relative)) CollectProcs(dir, &pids);
  for (int pid : pids) ::kill(pid, SIGKILL);
}

std::vector<int> CgroupPids(const std::string& relative) {
  std::vector<int> pids;
  std::set<int> seen;
  for (const std::string& dir : CgroupDirs(relative)) {
    std::vector<int> here;
    CollectProcs(dir, &here);
    for (int p : here)
      if (seen.insert(p).second) pids.push_back(p);
  }
  return pids;
}

void RemoveCgroupIfEmpty(const std::string& relative) {
  // rmdir alone: a cgroup with child cgroups or processes stays (EBUSY), and nothing is killed.
  for (const std::string& dir : CgroupDirs(relative)) (void)::rmdir(dir.c_str());
}

bool RemoveIdleCgroup(const std::string& relative) {
  if (relative.empty() || relative.front() == '/' || relative.find("..") != std::string::npos) return false;
  for (const std::string& dir : CgroupDirs(relative))
    if (!RemoveCgroupDir(dir, {}, /*wait=*/false).ok()) return false;
  return true;
}

Status RemoveCgroup(const std::string& relative) {
  if (relative.empty() || relative.front() == '/' || relative.find("..") != std::string::npos)
    return Status::Error("cgroup: invalid path '" + relative + "'");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  for (const std::string& dir : CgroupDirs(relative)) LAB_RETURN_IF_ERROR(RemoveCgroupDir(dir, deadline));
  return Status::Ok();
}

}  // namespace lab::hv::kernel
