#include "hv/sweep.h"

#include <dirent.h>
#include <signal.h>
#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "base/text.h"
#include "hv/kernel/lifecycle.h"
#include "hv/kernel/partition.h"
#include "hv/qemu/process.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv {
namespace {

namespace fs = std::filesystem;

bool IsUid(const std::string& s) {
  return s.size() == 12 && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) && !std::isupper(static_cast<unsigned char>(c)); });
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::all_of(s.begin() + i + 1, s.begin() + i + 4, [](char c) {
          return c >= '0' && c <= '7';
        })) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
      continue;
    }
    out += s[i];
  }
  return out;
}

/// Mount points at or below any of `dirs`, deepest first.
std::vector<std::string> MountsUnder(const std::vector<std::string>& dirs) {
  std::vector<std::string> out;
  for (const auto& line : Split(ReadFile("/proc/self/mountinfo").value_or(""), '\n')) {
    auto fields = Split(line, ' ');
    if (fields.size() < 5) continue;
    std::string where = Unescape(fields[4]);
    for (const auto& d : dirs)
      if (where == d || where.rfind(d + "/", 0) == 0) out.push_back(where);
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') > std::count(b.begin(), b.end(), '/');
  });
  return out;
}

int CountProcs(const std::string& relative) {
  int n = 0;
  for (const auto& dir : kernel::CgroupDirs(relative)) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
      if (it->path().filename() == "cgroup.procs")
        for (const auto& l : Split(ReadFile(it->path().string()).value_or(""), '\n')) n += !Trim(l).empty();
    if (auto top = ReadFile(dir + "/cgroup.procs"))
      for (const auto& l : Split(*top, '\n')) n += !Trim(l).empty();
    break;  // one hierarchy holds every process of the lab
  }
  return n;
}

}  // namespace

std::vector<std::string> FindLabUids(const std::string& lab, const std::vector<std::string>& dirs) {
  std::set<std::string> uids;
  const std::string prefix = lab + "-";
  for (const std::string& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      std::string name = e.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && IsUid(name.substr(prefix.size()))) uids.insert(name.substr(prefix.size()));
    }
  }
  return {uids.begin(), uids.end()};
}

std::string Swept::Describe() const {
  return std::to_string(processes) + " process" + (processes == 1 ? "" : "es") + ", " + std::to_string(mounts) +
         " mount" + (mounts == 1 ? "" : "s");
}

Status SweepLab(const LabContext& ctx, Swept* swept) {
  if (ctx.lab.empty() || !IsUid(ctx.uid)) return Status::Error("sweep: not a lab mark: '" + ctx.Mark() + "'");
  const std::string cgroup = "lab/" + ctx.Mark();
  const std::string run = ctx.run_root + "/" + ctx.Mark();
  const std::string disks = ctx.state_root + "/disks/" + ctx.Mark();
  Status first;
  auto note = [&](const Status& s) {
    if (!s.ok() && first.ok()) first = s.Prefixed("removing lab '" + ctx.lab + "' by its mark " + ctx.Mark());
  };
  // After a clean teardown the lab's cgroups are empty, and one rmdir each (deepest first) is all
  // there is to do: counting, thawing and ending processes reads every cgroup's files (90 ms for
  // the 2,000 cgroups of 500 VMs on cgroup v1). That is for what a killed run or a lost state
  // left behind, processes first: a saved partition is frozen and dies of SIGKILL only once thawed.
  int procs = 0;
  if (!kernel::RemoveIdleCgroup(cgroup)) {
    procs = CountProcs(cgroup);
    note(kernel::ThawCgroupTree(cgroup));
    kernel::CgroupKillAll(cgroup);
  }
  // qemu VMs: each QEMU recorded under run/q/<vm>/qemu.pid, by that pid and its start time.
  std::error_code ec;
  for (const auto& vm : std::filesystem::directory_iterator(run + "/q", ec))
    if (auto p = qemu::FindQemu(vm.path().string())) {
      note(qemu::StopQemu(*p, 0, 3000));
      ++procs;
    }
  auto mounts = MountsUnder({run, disks});
  for (const auto& m : mounts)
    if (::umount2(m.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 && errno != EINVAL && errno != ENOENT)
      note(ErrnoStatus("unmount " + m));
  note(kernel::RemoveTree(run));
  note(kernel::RemoveTree(disks));
  note(kernel::RemoveCgroup(cgroup));
  if (swept) *swept = Swept{procs, mounts.size()};
  return first;
}

}  // namespace lab::hv
