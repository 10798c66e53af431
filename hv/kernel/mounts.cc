// The runtime root, the shared base layer, and file helpers that never cross a mount.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {
namespace {

// mountinfo escapes blanks and backslashes as \ooo.
std::string UnescapeMountPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool InMountinfo(const std::string& path) {
  char real[PATH_MAX];
  if (!::realpath(path.c_str(), real)) return false;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mount_point;
    f >> id >> parent >> dev >> root >> mount_point;
    if (UnescapeMountPath(mount_point) == real) return true;
  }
  return false;
}

Status RemoveEntries(int dfd, const std::string& path, dev_t dev) {
  DIR* d = ::fdopendir(dfd);
  if (!d) {
    ::close(dfd);
    return ErrnoStatus("remove " + path);
  }
  Status result;
  while (dirent* e = ::readdir(d)) {
    const char* name = e->d_name;
    if (!std::strcmp(name, ".") || !std::strcmp(name, "..")) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    std::string child = path + "/" + name;
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) {  // another filesystem mounted here: never descend
        result = Status::Error("remove " + child + ": a mount point is in the way");
        continue;
      }
      int cfd = ::openat(::dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (cfd < 0) {
        result = ErrnoStatus("remove " + child);
        continue;
      }
      Status s = RemoveEntries(cfd, child, dev);
      if (!s.ok()) result = s;
      if (::unlinkat(::dirfd(d), name, AT_REMOVEDIR) != 0 && errno != ENOENT) result = ErrnoStatus("remove " + child);
    } else if (::unlinkat(::dirfd(d), name, 0) != 0 && errno != ENOENT) {
      result = ErrnoStatus("remove " + child);
    }
  }
  ::closedir(d);
  return result;
}

Status CopyTree(const std::string& src, const std::string& dst, int depth);

Status CopyEntry(const std::string& src, const std::string& dst, int depth) {
  struct stat st;
  if (::lstat(src.c_str(), &st) != 0) return Status::Ok();  // vanished meanwhile
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(dst.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("base layer: mkdir " + dst);
    LAB_RETURN_IF_ERROR(CopyTree(src, dst, depth + 1));
    ::lchown(dst.c_str(), st.st_uid, st.st_gid);
    ::chmod(dst.c_str(), st.st_mode & 07777);
  } else if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(src.c_str(), target, sizeof target - 1);
    if (n < 0) return Status::Ok();
    target[n] = '\0';
    if (::symlink(target, dst.c_str()) != 0) return ErrnoStatus("base layer: symlink " + dst);
    ::lchown(dst.c_str(), st.st_uid, st.st_gid);
  } else if (S_ISREG(st.st_mode)) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in.valid()) return Status::Ok();  // unreadable: skipped
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out.valid()) return ErrnoStatus("base layer: create " + dst);
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(out.get(), buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return ErrnoStatus("base layer: write " + dst);
        off += w;
      }
    }
    ::fchown(out.get(), st.st_uid, st.st_gid);
    ::fchmod(out.get(), st.st_mode & 07777);
  }
  // Sockets, fifos and devices are not part of a machine's configuration.
  return Status::Ok();
}

Status CopyTree(const std::string& src, const std::string& dst, int depth) {
  if (depth > 32) return Status::Ok();
  DIR* d = ::opendir(src.c_str());
  if (!d) return Status::Ok();
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.push_back(e->d_name);
  ::closedir(d);
  for (const std::string& n : names) LAB_RETURN_IF_ERROR(CopyEntry(src + "/" + n, dst + "/" + n, depth));
  return Status::Ok();
}

Status BuildBaseLayer(const std::string& dir) {
  LAB_RETURN_IF_ERROR(MakeDirs(dir));
  struct Dir {
    const char* path;
    mode_t mode;
  };
  for (Dir d : {Dir{"proc", 0555}, Dir{"sys", 0555}, Dir{"dev", 0755}, Dir{"run", 0755}, Dir{"tmp", 01777},
                Dir{"var", 0755}, Dir{"var/tmp", 01777}, Dir{"var/log", 0755}, Dir{"root", 0700},
                Dir{"home", 0755}, Dir{"etc", 0755}, Dir{"mnt", 0755}, Dir{"usr", 0755},
                // Mount points a start may need (lab's tools, its state inside a VM that nests):
                // present in the base, so no start copies them up into the VM's disk.
                Dir{"opt", 0755}, Dir{"opt/lab", 0755}, Dir{"var/lib", 0755}, Dir{"var/lib/lab", 0700}}) {
    std::string p = dir + "/" + d.path;
    if (::mkdir(p.c_str(), d.mode) != 0 && errno != EEXIST) return ErrnoStatus("base layer: mkdir " + p);
    ::chmod(p.c_str(), d.mode);  // umask
  }
  // The machine's /etc is the partitions' starting configuration.
  LAB_RETURN_IF_ERROR(CopyTree("/etc", dir + "/etc", 0));
  // The files every start rewrites live in the partition's /run: nothing on its disk to write
  // at each start and remove with the VM.
  for (const char* name : kRuntimeConfigFiles) {
    std::string here = dir + "/etc/" + name;
    if (::unlink(here.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("base layer: remove " + here);
    std::string target = std::string("../") + kRuntimeConfigDir + "/" + name;
    if (::symlink(target.c_str(), here.c_str()) != 0) return ErrnoStatus("base layer: symlink " + here);
  }
  std::string etc_lab = dir + "/etc/lab";
  if (::mkdir(etc_lab.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("base layer: mkdir " + etc_lab);
  // Merged /usr: /bin, /lib... are symlinks into /usr on the machine, so the same links work over
  // the partition's read-only /usr. Real directories (a split layout) are bound at start instead.
  for (const char* top : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
    std::string machine = std::string("/") + top, here = dir + "/" + top;
    struct stat st;
    if (::lstat(machine.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = ::readlink(machine.c_str(), target, sizeof target - 1);
      if (n < 0) continue;
      target[n] = '\0';
      if (::symlink(target, here.c_str()) != 0 && errno != EEXIST) return ErrnoStatus("base layer: symlink " + here);
    } else if (S_ISDIR(st.st_mode)) {
      if (::mkdir(here.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("base layer: mkdir " + here);
    }
  }
  return Status::Ok();
}

/// Lab's own small layer over an image: the mount points a start needs and the links of the
/// files lab manages (/etc/hostname, /etc/hosts, /etc/resolv.conf) into the partition's /run.
/// Nothing of the machine: the image brings /etc, /usr and everything else.
Status BuildImageBaseLayer(const std::string& dir) {
  LAB_RETURN_IF_ERROR(MakeDirs(dir));
  struct Dir {
    const char* path;
    mode_t mode;
  };
  for (Dir d : {Dir{"proc", 0555}, Dir{"sys", 0555}, Dir{"dev", 0755}, Dir{"run", 0755}, Dir{"tmp", 01777},
                Dir{"etc", 0755}, Dir{"opt", 0755}, Dir{"opt/lab", 0755}, Dir{"var", 0755}, Dir{"var/lib", 0755},
                Dir{"var/lib/lab", 0700}}) {
    std::string p = dir + "/" + d.path;
    if (::mkdir(p.c_str(), d.mode) != 0 && errno != EEXIST) return ErrnoStatus("image base layer: mkdir " + p);
    ::chmod(p.c_str(), d.mode);
  }
  for (const char* name : kRuntimeConfigFiles) {
    std::string here = dir + "/etc/" + name;
    std::string target = std::string("../") + kRuntimeConfigDir + "/" + name;
    if (::symlink(target.c_str(), here.c_str()) != 0 && errno != EEXIST)
      return ErrnoStatus("image base layer: symlink " + here);
  }
  return Status::Ok();
}

/// Builds a layer with `build` aside and renames it into place once.
Status EnsureLayer(const std::string& base_dir, Status (*build)(const std::string&)) {
  struct stat st;
  if (::stat(base_dir.c_str(), &st) == 0) return Status::Ok();
  std::string parent = base_dir.substr(0, base_dir.rfind('/'));
  if (!parent.empty()) LAB_RETURN_IF_ERROR(MakeDirs(parent).Prefixed("base layer"));
  // Built aside and renamed into place: a concurrent caller or an interrupted build never leaves
  // a half-made base behind the final name.
  std::string tmp = base_dir + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(::gettid());
  (void)RemoveTree(tmp);
  Status built = build(tmp);
  if (!built.ok()) {
    (void)RemoveTree(tmp);
    return built.Prefixed(base_dir);
  }
  if (::rename(tmp.c_str(), base_dir.c_str()) != 0) {
    int err = errno;
    (void)RemoveTree(tmp);
    if ((err == EEXIST || err == ENOTEMPTY) && ::stat(base_dir.c_str(), &st) == 0) return Status::Ok();
    errno = err;
    return ErrnoStatus("base layer " + base_dir + ": rename into place");
  }
  return Status::Ok();
}

}  // namespace

bool IsMountPoint(const std::string& path) {
  struct statx stx;
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) != 0) return false;
  if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
  return InMountinfo(path);
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return Status::Error("mkdir: empty path");
  // Nearly always the parent exists: one mkdir. Only on ENOENT are the missing parents made,
  // from the deepest one that exists (a walk from / cost ~90 failing mkdirs per partition start).
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    if (errno != ENOENT) return ErrnoStatus("mkdir " + path);
    size_t slash = path.find_last_not_of('/');
    slash = slash == std::string::npos ? std::string::npos : path.rfind('/', slash);
    if (slash == std::string::npos || slash == 0) return ErrnoStatus("mkdir " + path);
    LAB_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), mode));
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus("mkdir " + path);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("mkdir " + path);
  if (!S_ISDIR(st.st_mode)) return Status::Error("mkdir " + path + ": not a directory");
  return Status::Ok();
}

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT ? Status::Ok() : ErrnoStatus("remove " + path);
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + path);
    return Status::Ok();
  }
  if (IsMountPoint(path)) return Status::Error("remove " + path + ": is a mount point");
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("remove " + path);
  Status s = RemoveEntries(fd, path, st.st_dev);
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return s.ok() ? ErrnoStatus("remove " + path) : s;
  return Status::Ok();
}

Status WriteWholeFile(const std::string& path, const std::string& content, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid()) return ErrnoStatus(path);
  size_t off = 0;
  while (off < content.size()) {
    ssize_t w = ::write(fd.get(), content.data() + off, content.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ErrnoStatus(path);
    off += w;
  }
  return Status::Ok();
}

Status EnsureRunRoot(const std::string& run_root) {
  LAB_RETURN_IF_ERROR(MakeDirs(run_root).Prefixed("run root"));
  // A tmpfs, as /run is on most machines: what lives here lasts until reboot, and a partition's
  // run directory costs no inode of the machine's disk to make and none to remove (on an ext4
  // mounted with `discard`, each rmdir waited for a discard). A run root already mounted (a bind
  // of itself, made by an older lab with labs still up) is kept as it is.
  if (!IsMountPoint(run_root) &&
      ::mount("tmpfs", run_root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755") != 0)
    return ErrnoStatus("run root " + run_root + ": mount a tmpfs");
  if (::mount(nullptr, run_root.c_str(), nullptr, MS_PRIVATE | MS_REC, nullptr) != 0)
    return ErrnoStatus("run root " + run_root + ": make private");
  return Status::Ok();
}

Status ReleaseRunRoot(const std::string& run_root) {
  std::error_code ec;
  if (!std::filesystem::is_directory(run_root, ec)) return Status::Ok();
  if (!std::filesystem::is_empty(run_root, ec) || ec) return Status::Ok();  // a lab still lives here
  if (IsMountPoint(run_root) && ::umount2(run_root.c_str(), MNT_DETACH) != 0)
    return ErrnoStatus("run root " + run_root + ": unmount");
  if (::rmdir(run_root.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    return ErrnoStatus("run root " + run_root + ": remove");
  return Status::Ok();
}

Status EnsureBaseLayer(const std::string& base_dir) { return EnsureLayer(base_dir, BuildBaseLayer); }

Status EnsureImageBaseLayer(const std::string& base_dir) { return EnsureLayer(base_dir, BuildImageBaseLayer); }

}  // namespace lab::hv::kernel
