// Stop, save/resume (cgroup freezer) and checkpoints (exact copies of the overlay upper).
#include "hv/kernel/lifecycle.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>
#include <tuple>
#include <utility>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kFreezeTimeoutMs = 5000;

std::string What(const PartitionConfig& c) { return "partition '" + c.machine + "'"; }

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// ---- the freezer ----

// The directory of `relative` in the hierarchy that freezes: v1 freezer, or the v2 tree.
std::string FreezerDir(const std::string& relative) {
  const CgroupSetup& s = Cgroups();
  if (s.v2) return s.v2_root + "/" + relative;
  for (const auto& [controller, mount_point] : s.v1)
    if (controller == "freezer") return mount_point + "/" + relative;
  return "";
}

bool DirFrozen(const std::string& dir) {
  if (Cgroups().v2) {
    auto events = ReadFile(dir + "/cgroup.events");
    return events && events->find("frozen 1") != std::string::npos;
  }
  auto state = ReadFile(dir + "/freezer.state");
  return state && Trim(*state) == "FROZEN";
}

Status WriteFreeze(const std::string& dir, bool frozen) {
  std::string file = dir + (Cgroups().v2 ? "/cgroup.freeze" : "/freezer.state");
  std::string value = Cgroups().v2 ? (frozen ? "1" : "0") : (frozen ? "FROZEN" : "THAWED");
  return WriteWholeFile(file, value).Prefixed("cgroup freezer: write '" + value + "'");
}

void SubDirs(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (e->d_type == DT_DIR && name != "." && name != "..") out->push_back(dir + "/" + name);
  }
  ::closedir(d);
}

Status ThawTree(const std::string& dir) {
  Status s = WriteFreeze(dir, false);
  if (!s.ok() && Exists(dir)) return s;
  std::vector<std::string> children;
  SubDirs(dir, &children);
  for (const std::string& c : children) LAB_RETURN_IF_ERROR(ThawTree(c));
  return Status::Ok();
}

// ---- a saved partition's silent network ----

std::string SavedTable(const PartitionConfig& c) {
  std::string name = "lab_" + c.lab_uid + "_saved";
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

const char* const kSilentFamilies[] = {"inet", "arp", "bridge"};

Status SilenceNetwork(const PartitionConfig& c) {
  auto ns = NetNs::Open(NsPath(c.run_dir, "net"));
  if (!ns) return ns.status();
  const std::string t = SavedTable(c);
  // Declared, deleted and made again in one transaction: applying twice never stacks chains.
  std::string rules;
  for (const char* family : kSilentFamilies)
    rules += std::string("table ") + family + " " + t + " {}\ndelete table " + family + " " + t + "\n";
  auto chain = [](const char* name, const char* hook, int priority) {
    return std::string("  chain ") + name + " { type filter hook " + hook + " priority " +
           std::to_string(priority) + "; policy drop; }\n";
  };
  rules += "table inet " + t + " {\n  comment \"Save-VM: a saved VM answers nothing\"\n" +
           chain("input", "input", -300) + chain("forward", "forward", -300) + chain("output", "output", -300) +
           "}\n";
  rules += "table arp " + t + " {\n" + chain("input", "input", 0) + chain("output", "output", 0) + "}\n";
  // Frames between the ports of the partition's own switches (nested VMs) stop too.
  rules += "table bridge " + t + " {\n" + chain("forward", "forward", -300) + "}\n";
  return NftApply(*ns, rules).Prefixed("silence the network");
}

Status UnsilenceNetwork(const PartitionConfig& c) {
  auto ns = NetNs::Open(NsPath(c.run_dir, "net"));
  if (!ns) return Status::Ok();  // no namespace, no table
  for (const char* family : kSilentFamilies)
    LAB_RETURN_IF_ERROR(NftDeleteTable(*ns, family, SavedTable(c)).Prefixed("let the network answer again"));
  return Status::Ok();
}

// ---- exact copies of a layer ----

class LayerCopier {
 public:
  Status Copy(const std::string& from, const std::string& to) {
    struct stat st;
    if (::lstat(from.c_str(), &st) != 0) return ErrnoStatus("copy " + from);
    if (!S_ISDIR(st.st_mode)) return Status::Error("copy " + from + ": not a directory");
    dev_ = st.st_dev;
    return Entry(from, to, st, 0);
  }

 private:
  Status Entry(const std::string& src, const std::string& dst, const struct stat& st, int depth) {
    if (depth > 256) return Status::Error("copy " + src + ": nested too deep");
    // A hard link inside the layer stays one link (overlay's index and hard-linked files).
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, fresh] = links_.try_emplace({st.st_dev, st.st_ino}, dst);
      if (!fresh) {
        if (::link(it->second.c_str(), dst.c_str()) != 0) return ErrnoStatus("copy: link " + dst);
        return Status::Ok();
      }
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev_) return Status::Error("copy " + src + ": another filesystem is mounted here");
      if (::mkdir(dst.c_str(), 0700) != 0) return ErrnoStatus("copy: mkdir " + dst);
      LAB_RETURN_IF_ERROR(Children(src, dst, depth));
    } else if (S_ISREG(st.st_mode)) {
      LAB_RETURN_IF_ERROR(Contents(src, dst));
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(src.c_str(), target.data(), target.size());
      if (n < 0 || static_cast<size_t>(n) >= target.size()) return ErrnoStatus("copy: readlink " + src);
      target.resize(static_cast<size_t>(n));
      if (::symlink(target.c_str(), dst.c_str()) != 0) return ErrnoStatus("copy: symlink " + dst);
    } else {
      // Devices (an overlay whiteout is a 0/0 character device), fifos, sockets.
      if (::mknod(dst.c_str(), st.st_mode, st.st_rdev) != 0) return ErrnoStatus("copy: mknod " + dst);
    }
    return Attributes(src, dst, st);
  }

  Status Children(const std::string& src, const std::string& dst, int depth) {
    DIR* d = ::opendir(src.c_str());
    if (!d) return ErrnoStatus("copy: open " + src);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
    ::closedir(d);
    for (const std::string& n : names) {
      struct stat st;
      std::string child = src + "/" + n;
      if (::lstat(child.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;  // removed meanwhile (a stopped copy source does not change)
        return ErrnoStatus("copy: " + child);
      }
      LAB_RETURN_IF_ERROR(Entry(child, dst + "/" + n, st, depth + 1));
    }
    return Status::Ok();
  }

  static Status Contents(const std::string& src, const std::string& dst) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in.valid()) return ErrnoStatus("copy: open " + src);
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out.valid()) return ErrnoStatus("copy: create " + dst);
    // copy_file_range shares or copies in the kernel; read/write where it is refused.
    bool kernel_copy = true;
    char buf[65536];
    for (;;) {
      ssize_t n;
      if (kernel_copy) {
        n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, size_t{1} << 30, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
          kernel_copy = false;
          continue;
        }
      } else {
        n = ::read(in.get(), buf, sizeof buf);
        for (ssize_t off = 0; n > 0 && off < n;) {
          ssize_t w = ::write(out.get(), buf + off, static_cast<size_t>(n - off));
          if (w < 0 && errno == EINTR) continue;
          if (w < 0) return ErrnoStatus("copy: write " + dst);
          off += w;
        }
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus("copy: read " + src);
      if (n == 0) return Status::Ok();
    }
  }

  // Order matters: chown clears set-id bits and file capabilities, so mode and extended
  // attributes come after it, and times last (every change above touches them).
  static Status Attributes(const std::string& src, const std::string& dst, const struct stat& st) {
    if (::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0) return ErrnoStatus("copy: chown " + dst);
    if (!S_ISLNK(st.st_mode) && ::chmod(dst.c_str(), st.st_mode & 07777) != 0) return ErrnoStatus("copy: chmod " + dst);
    LAB_RETURN_IF_ERROR(Xattrs(src, dst));
    const timespec times[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) return ErrnoStatus("copy: times " + dst);
    return Status::Ok();
  }

  static Status Xattrs(const std::string& src, const std::string& dst) {
    ssize_t size = ::llistxattr(src.c_str(), nullptr, 0);
    if (size < 0) return errno == ENOTSUP ? Status::Ok() : ErrnoStatus("copy: list xattrs " + src);
    std::string names(static_cast<size_t>(size), '\0');
    size = ::llistxattr(src.c_str(), names.data(), names.size());
    if (size < 0) return ErrnoStatus("copy: list xattrs " + src);
    names.resize(static_cast<size_t>(size));
    for (const std::string& name : Split(names, '\0')) {
      if (name.empty()) continue;
      ssize_t n = ::lgetxattr(src.c_str(), name.c_str(), nullptr, 0);
      std::string value(n > 0 ? static_cast<size_t>(n) : 0, '\0');
      if (n > 0) n = ::lgetxattr(src.c_str(), name.c_str(), value.data(), value.size());
      if (n < 0) {
        if (errno == ENODATA) continue;  // removed meanwhile
        return ErrnoStatus("copy: read xattr " + name + " of " + src);
      }
      value.resize(static_cast<size_t>(n));
      if (::lsetxattr(dst.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) {
        // Overlay's own attributes (opaque, redirect, origin...) are the layer's meaning: they must
        // be kept. Others the destination refuses (e.g. a security module's) are not the disk's.
        if (name.rfind("trusted.overlay.", 0) == 0) return ErrnoStatus("copy: xattr " + name + " of " + dst);
      }
    }
    return Status::Ok();
  }

  dev_t dev_ = 0;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

std::string CheckpointsDir(const PartitionConfig& c) { return c.disk_dir + "/checkpoints"; }

// A checkpoint's directory: its name with every byte outside [A-Za-z0-9_.-] (and '%') as %XX,
// so Hyper-V's names ("middle - (12/07/2026 - 07:05:31)") are safe file names and the names
// lab allowed before (that set only) keep their directories.
std::string CheckpointDirName(const std::string& name) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : name) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The name a checkpoint directory holds; nullopt for a directory that is not one.
std::optional<std::string> CheckpointNameOf(const std::string& dir_name) {
  std::string out;
  for (size_t i = 0; i < dir_name.size(); ++i) {
    char c = dir_name[i];
    if (c != '%') {
      out += c;
      continue;
    }
    if (i + 2 >= dir_name.size() || !std::isxdigit(static_cast<unsigned char>(dir_name[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(dir_name[i + 2])))
      return std::nullopt;
    out += static_cast<char>(std::stoi(dir_name.substr(i + 1, 2), nullptr, 16));
    i += 2;
  }
  if (!CheckCheckpointName(out).ok() || CheckpointDirName(out) != dir_name) return std::nullopt;
  return out;
}

std::string CheckpointPath(const PartitionConfig& c, const std::string& name) {
  return CheckpointsDir(c) + "/" + CheckpointDirName(name);
}

thread_local uint64_t g_tree_bytes = 0;
int AddBytes(const char*, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_F || type == FTW_SL) g_tree_bytes += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}
// The space a tree takes on disk (its files' blocks, as du counts them).
uint64_t TreeBytes(const std::string& dir) {
  g_tree_bytes = 0;
  (void)::nftw(dir.c_str(), AddBytes, 32, FTW_PHYS);
  return g_tree_bytes;
}

bool Running(const PartitionConfig& c) {
  return IsMountPoint(NsPath(c.run_dir, "mnt")) || IsMountPoint(NsPath(c.run_dir, "net"));
}

// Checkpoint-VM of a running partition: frozen while copied, thawed after unless saved before.
class FrozenForCopy {
 public:
  explicit FrozenForCopy(const std::string& cgroup) : cgroup_(cgroup) {}
  Status Freeze() {
    std::string dir = FreezerDir(cgroup_);
    if (dir.empty() || !Exists(dir) || CgroupFrozen(cgroup_)) return Status::Ok();
    LAB_RETURN_IF_ERROR(FreezeCgroup(cgroup_));
    froze_ = true;
    return Status::Ok();
  }
  ~FrozenForCopy() {
    if (froze_) (void)ThawCgroup(cgroup_);
  }
  FrozenForCopy(const FrozenForCopy&) = delete;
  FrozenForCopy& operator=(const FrozenForCopy&) = delete;

 private:
  std::string cgroup_;
  bool froze_ = false;
};

}  // namespace

// ---- stop ----

Status StopPartition(const PartitionConfig& config, const std::optional<ProcessId>& init) {
  // Destroy (which thaws a saved partition first) without a disk_dir keeps the disk: same kill, handles and cgroup, one code path.
  PartitionConfig keep_disk = config;
  keep_disk.disk_dir.clear();
  return DestroyPartition(keep_disk, init);
}

// ---- save / resume ----

bool CgroupFrozen(const std::string& relative) {
  std::string dir = FreezerDir(relative);
  return !dir.empty() && DirFrozen(dir);
}

Status FreezeCgroup(const std::string& relative) {
  std::string dir = FreezerDir(relative);
  if (dir.empty()) return Status::Error("no cgroup freezer on this machine (cgroup v1 freezer or v2 cgroup.freeze)");
  if (!Exists(dir)) return Status::Error("cgroup " + relative + " does not exist (is it running?)");
  auto deadline = Clock::now() + std::chrono::milliseconds(kFreezeTimeoutMs);
  for (;;) {
    // v1 may stay FREEZING while a task is busy in the kernel; writing again retries it.
    LAB_RETURN_IF_ERROR(WriteFreeze(dir, true));
    if (DirFrozen(dir)) return Status::Ok();
    if (Clock::now() >= deadline) {
      (void)WriteFreeze(dir, false);
      return Status::Error("cgroup " + relative + " did not freeze within " + std::to_string(kFreezeTimeoutMs / 1000) +
                           " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status ThawCgroup(const std::string& relative) {
  std::string dir = FreezerDir(relative);
  if (dir.empty() || !Exists(dir)) return Status::Ok();
  return WriteFreeze(dir, false);
}

Status ThawCgroupTree(const std::string& relative) {
  std::string dir = FreezerDir(relative);
  if (dir.empty() || !Exists(dir)) return Status::Ok();
  return ThawTree(dir);
}

Status SavePartition(const PartitionConfig& config) {
  const std::string what = What(config) + ": save";
  if (!Running(config)) return Status::Error(what + ": it is not running (Start-VM)");
  if (CgroupFrozen(config.cgroup)) return Status::Ok();
  LAB_RETURN_IF_ERROR(SilenceNetwork(config).Prefixed(what));
  Status frozen = FreezeCgroup(config.cgroup);
  if (!frozen.ok()) {
    (void)UnsilenceNetwork(config);
    return frozen.Prefixed(what);
  }
  return Status::Ok();
}

Status ResumePartition(const PartitionConfig& config) {
  const std::string what = What(config) + ": resume";
  LAB_RETURN_IF_ERROR(ThawCgroup(config.cgroup).Prefixed(what));
  return UnsilenceNetwork(config).Prefixed(what);
}

// ---- checkpoints ----

Status CheckCheckpointName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= kMaxCheckpointName && name != "." && name != ".." &&
            name.front() != ' ' && name.back() != ' ';
  for (char c : name) ok = ok && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  if (ok) return Status::Ok();
  return Status::Error("checkpoint name '" + name + "' is not valid: use 1 to " + std::to_string(kMaxCheckpointName) +
                       " characters without control characters or spaces at either end, not '.' or '..' "
                       "(Checkpoint-VM -SnapshotName)");
}

Result<std::vector<CheckpointInfo>> CheckpointDetails(const PartitionConfig& config) {
  std::string dir = CheckpointsDir(config);
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return std::vector<CheckpointInfo>{};
    return ErrnoStatus(What(config) + ": list checkpoints in " + dir);
  }
  // Oldest first, by the modification time CreateCheckpoint gives each checkpoint from the
  // fine-grained clock (file times the kernel sets itself are kernel ticks: two checkpoints made
  // within one tick would tie). Nothing writes into a checkpoint after it is made.
  std::vector<std::tuple<int64_t, int64_t, std::string, std::string>> found;
  while (dirent* e = ::readdir(d)) {
    std::string entry = e->d_name;
    auto name = CheckpointNameOf(entry);
    if (entry == "." || entry == ".." || !name) continue;
    struct statx stx;
    if (::statx(::dirfd(d), entry.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MTIME, &stx) != 0) continue;
    found.emplace_back(stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec, *name, entry);
  }
  ::closedir(d);
  std::sort(found.begin(), found.end());
  std::vector<CheckpointInfo> out;
  for (auto& f : found) out.push_back(CheckpointInfo{std::get<2>(f), std::get<0>(f), TreeBytes(dir + "/" + std::get<3>(f))});
  return out;
}

Result<std::vector<std::string>> ListCheckpoints(const PartitionConfig& config) {
  std::string dir = CheckpointsDir(config);
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return std::vector<std::string>{};
    return ErrnoStatus(What(config) + ": list checkpoints in " + dir);
  }
  std::vector<std::tuple<int64_t, int64_t, std::string>> found;
  while (dirent* e = ::readdir(d)) {
    std::string entry = e->d_name;
    auto name = CheckpointNameOf(entry);
    if (entry == "." || entry == ".." || !name) continue;
    struct statx stx;
    if (::statx(::dirfd(d), entry.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MTIME, &stx) != 0) continue;
    found.emplace_back(stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec, *name);
  }
  ::closedir(d);
  std::sort(found.begin(), found.end());
  std::vector<std::string> names;
  for (auto& f : found) names.push_back(std::get<2>(f));
  return names;
}

Status RemoveCheckpoint(const PartitionConfig& config, const std::string& name) {
  const std::string what = What(config) + ": remove checkpoint '" + name + "'";
  LAB_RETURN_IF_ERROR(CheckCheckpointName(name).Prefixed(What(config)));
  std::string path = CheckpointPath(config, name);
  // A removal cut short left it here, out of the list: finished first.
  std::string doomed = config.disk_dir + "/checkpoint.removing";
  LAB_RETURN_IF_ERROR(RemoveTree(doomed).Prefixed(what));
  if (!Exists(path)) {
    auto known = ListCheckpoints(config);
    std::string list = known && !known->empty() ? "its checkpoints are: " + Join(*known, ", ") : "it has no checkpoints";
    return Status::Error(what + ": no such checkpoint; " + list + " (Get-VMSnapshot)");
  }
  // Out of the list in one step, then deleted: an interruption never leaves half a checkpoint listed.
  if (::rename(path.c_str(), doomed.c_str()) != 0) return ErrnoStatus(what + ": move it out of " + CheckpointsDir(config));
  return RemoveTree(doomed).Prefixed(what);
}

Status CreateCheckpoint(const PartitionConfig& config, const std::string& name) {
  const std::string what = What(config) + ": checkpoint '" + name + "'";
  LAB_RETURN_IF_ERROR(CheckCheckpointName(name).Prefixed(What(config)));
  std::string upper = config.disk_dir + "/upper";
  if (!Exists(upper)) return Status::Error(what + ": it has no disk at " + upper);
  std::string final_dir = CheckpointPath(config, name);
  if (Exists(final_dir))
    return Status::Error(what + ": a checkpoint of that name exists already; choose another name");
  LAB_RETURN_IF_ERROR(MakeDirs(CheckpointsDir(config), 0700).Prefixed(what));
  // Copied beside the checkpoints (not among them: a name may start with '.'), then renamed in.
  std::string tmp = config.disk_dir + "/checkpoint.partial";
  LAB_RETURN_IF_ERROR(RemoveTree(tmp).Prefixed(what));
  {
    FrozenForCopy frozen(config.cgroup);
    LAB_RETURN_IF_ERROR(frozen.Freeze().Prefixed(what));
    Status copied = CopyLayer(upper, tmp);
    if (!copied.ok()) {
      (void)RemoveTree(tmp);
      return copied.Prefixed(what);
    }
  }
  // Its place in the list of checkpoints (ListCheckpoints).
  struct timespec made[2];
  ::clock_gettime(CLOCK_REALTIME, &made[0]);
  made[1] = made[0];
  if (::utimensat(AT_FDCWD, tmp.c_str(), made, AT_SYMLINK_NOFOLLOW) != 0) {
    Status s = ErrnoStatus(what + ": set its creation time");
    (void)RemoveTree(tmp);
    return s;
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    Status s = ErrnoStatus(what + ": rename into " + final_dir);
    (void)RemoveTree(tmp);
    return s;
  }
  return Status::Ok();
}

Status RestoreCheckpoint(const PartitionConfig& config, const std::string& name) {
  const std::string what = What(config) + ": restore checkpoint '" + name + "'";
  LAB_RETURN_IF_ERROR(CheckCheckpointName(name).Prefixed(What(config)));
  std::string source = CheckpointPath(config, name);
  if (!Exists(source)) {
    auto known = ListCheckpoints(config);
    std::string list = known && !known->empty() ? "its checkpoints are: " + Join(*known, ", ") : "it has no checkpoints";
    return Status::Error(what + ": no such checkpoint; " + list + " (Get-VMSnapshot)");
  }
  if (Running(config)) return Status::Error(what + ": it is running; stop it first (Stop-VM)");
  std::string upper = config.disk_dir + "/upper", work = config.disk_dir + "/work";
  std::string fresh = config.disk_dir + "/upper.restoring";
  LAB_RETURN_IF_ERROR(RemoveTree(fresh).Prefixed(what));
  Status copied = CopyLayer(source, fresh);
  if (!copied.ok()) {
    (void)RemoveTree(fresh);
    return copied.Prefixed(what);
  }
  // Swapped in one step: an interruption leaves either the old upper or the restored one.
  if (Exists(upper)) {
    if (::renameat2(AT_FDCWD, fresh.c_str(), AT_FDCWD, upper.c_str(), RENAME_EXCHANGE) != 0) {
      Status s = ErrnoStatus(what + ": swap in the restored disk");
      (void)RemoveTree(fresh);
      return s;
    }
  } else if (::rename(fresh.c_str(), upper.c_str()) != 0) {
    Status s = ErrnoStatus(what + ": move in the restored disk");
    (void)RemoveTree(fresh);
    return s;
  }
  LAB_RETURN_IF_ERROR(RemoveTree(fresh).Prefixed(what + ": remove the replaced disk"));
  // overlayfs' work dir belongs to the upper it was used with.
  LAB_RETURN_IF_ERROR(RemoveTree(work).Prefixed(what));
  return MakeDirs(work).Prefixed(what);
}

Status CopyLayer(const std::string& from, const std::string& to) {
  if (Exists(to)) return Status::Error("copy " + from + ": " + to + " exists already");
  LayerCopier copier;
  return copier.Copy(from, to);
}

}  // namespace lab::hv::kernel
