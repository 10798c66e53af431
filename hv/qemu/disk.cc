#include "hv/qemu/disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "hv/qemu/command.h"

namespace lab::hv::qemu {

FileLock::FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
  while (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

namespace fs = std::filesystem;

namespace {

/// `program` from PATH, else from /usr/sbin and /sbin (root's tools, where PATH may not look).
std::string Tool(const std::string& program) {
  std::string found = FindInPath(program);
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/"})
    if (found.empty() && ::access((dir + program).c_str(), X_OK) == 0) found = dir + program;
  return found;
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
    ::closedir(d);
  }
  return names;
}

bool Opaque(const std::string& dir) {
  char v[2] = {};
  return ::lgetxattr(dir.c_str(), "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y';
}

void RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

/// Copies a file's contents (hard links cannot cross file systems).
Status CopyContents(const std::string& src, const std::string& dst, const struct stat& st) {
  std::error_code ec;
  if (!fs::copy_file(src, dst, ec)) return Status::Error("copy " + src + ": " + ec.message());
  if (::lchown(dst.c_str(), st.st_uid, st.st_gid) != 0 || ::chmod(dst.c_str(), st.st_mode & 07777) != 0)
    return ErrnoStatus("set the owner and mode of " + dst);
  return Status::Ok();
}

/// Puts layer directory `src` over the staging directory `dst` as overlayfs would show it.
Status Merge(const std::string& src, const std::string& dst) {
  for (const std::string& name : Names(src)) {
    std::string from = src + "/" + name, to = dst + "/" + name;
    struct stat st;
    if (::lstat(from.c_str(), &st) != 0) return ErrnoStatus("read " + from);
    struct stat below;
    bool exists = ::lstat(to.c_str(), &below) == 0;
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {  // a whiteout
      if (exists) RemoveAll(to);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (exists && (!S_ISDIR(below.st_mode) || Opaque(from))) {
        RemoveAll(to);
        exists = false;
      }
      if (!exists && ::mkdir(to.c_str(), 0700) != 0) return ErrnoStatus("mkdir " + to);
      LAB_RETURN_IF_ERROR(Merge(from, to));
      if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0 || ::chmod(to.c_str(), st.st_mode & 07777) != 0)
        return ErrnoStatus("set the owner and mode of " + to);
      timespec times[2] = {st.st_atim, st.st_mtim};
      ::utimensat(AT_FDCWD, to.c_str(), times, AT_SYMLINK_NOFOLLOW);
      continue;
    }
    if (exists) RemoveAll(to);
    if (S_ISREG(st.st_mode)) {
      // A hard link: no content is copied (the staging tree is only read, by mkfs.ext4).
      if (::link(from.c_str(), to.c_str()) != 0) {
        if (errno != EXDEV && errno != EPERM && errno != EMLINK) return ErrnoStatus("link " + from);
        LAB_RETURN_IF_ERROR(CopyContents(from, to, st));
      }
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(from.c_str(), target.data(), target.size());
      if (n < 0) return ErrnoStatus("readlink " + from);
      target.resize(static_cast<size_t>(n));
      if (::symlink(target.c_str(), to.c_str()) != 0) return ErrnoStatus("symlink " + to);
      if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0) return ErrnoStatus("chown " + to);
    } else {  // devices, fifos, sockets
      if (::mknod(to.c_str(), st.st_mode, st.st_rdev) != 0) return ErrnoStatus("mknod " + to);
      if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0) return ErrnoStatus("chown " + to);
    }
  }
  return Status::Ok();
}

/// Bytes and inodes the tree at `dir` takes (each inode counted once).
void Measure(const std::string& dir, std::set<std::pair<dev_t, ino_t>>& seen, long long& bytes, long long& inodes) {
  for (const std::string& name : Names(dir)) {
    std::string path = dir + "/" + name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) continue;
    ++inodes;
    bytes += std::max<long long>(static_cast<long long>(st.st_blocks) * 512, 4096);
    if (S_ISDIR(st.st_mode)) Measure(path, seen, bytes, inodes);
  }
}

Status BuildImageDisk(const std::string& stage, const std::string& tmp, const std::vector<std::string>& layers,
                      const std::string& tools_dir) {
  std::string mkfs = Tool("mkfs.ext4");
  if (mkfs.empty()) return Status::Error("mkfs.ext4 is not installed (apt-get install e2fsprogs)");
  if (::mkdir(stage.c_str(), 0755) != 0) return ErrnoStatus("mkdir " + stage);
  for (auto layer = layers.rbegin(); layer != layers.rend(); ++layer) {
    struct stat st;
    if (::stat(layer->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return ErrnoStatus("image layer " + *layer);
    LAB_RETURN_IF_ERROR(Merge(*layer, stage).Prefixed("image layer " + *layer));
  }
  if (!tools_dir.empty()) {
    std::error_code ec;
    fs::create_directories(stage + "/opt/lab", ec);
    if (ec) return Status::Error("mkdir " + stage + "/opt/lab: " + ec.message());
    LAB_RETURN_IF_ERROR(Merge(tools_dir, stage + "/opt/lab").Prefixed("lab's tools " + tools_dir));
  }
  std::set<std::pair<dev_t, ino_t>> seen;
  long long bytes = 0, inodes = 0;
  Measure(stage, seen, bytes, inodes);
  // Content + a quarter (ext4's metadata, the journal) + what the VM may write, in whole MiB.
  long long size = ((bytes + bytes / 4 + (32LL << 20) + kImageDiskHeadroomBytes) >> 20) << 20;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (fd < 0) return ErrnoStatus("create " + tmp);
  bool sized = ::ftruncate(fd, size) == 0;
  ::close(fd);
  if (!sized) return ErrnoStatus("size " + tmp);
  // Inode tables and journal written now, once, into the shared file: lazily, every VM's kernel
  // would zero them into its own qcow2.
  auto out = RunCommand({mkfs, "-q", "-F", "-t", "ext4", "-m", "0", "-L", "lab-image", "-N",
                         std::to_string(inodes + inodes / 4 + 65536), "-E", "lazy_itable_init=0,lazy_journal_init=0",
                         "-d", stage, tmp},
                        600000);
  if (!out.ok()) return out.status().Prefixed("mkfs.ext4");
  if (out->exit_code != 0) return Status::Error("mkfs.ext4 -d " + stage + " " + tmp + " failed: " + out->output);
  return Status::Ok();
}

}  // namespace

std::string DiskCacheDir(const std::string& state_dir) { return state_dir + "/qemu/disks"; }

std::string ImageDiskName(const std::string& image_key, const std::string& tools_dir) {
  if (tools_dir.empty()) return image_key;
  return image_key + "+" + fs::path(tools_dir).lexically_normal().filename().string();
}

Result<std::string> EnsureImageDisk(const std::string& cache_dir, const std::string& image_key,
                                    const std::vector<std::string>& layers, const std::string& tools_dir) {
  if (image_key.empty() || image_key.find('/') != std::string::npos || image_key[0] == '.')
    return Status::Error("image key '" + image_key + "' cannot name a disk file");
  if (layers.empty()) return Status::Error("image " + image_key + " has no layers to make a disk of");
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return Status::Error("cannot create " + cache_dir + ": " + ec.message());
  std::string name = ImageDiskName(image_key, tools_dir);
  std::string raw = cache_dir + "/" + name + ".raw";
  FileLock lock(cache_dir + "/" + name + ".lock");
  if (!lock.ok()) return ErrnoStatus("lock " + cache_dir + "/" + name + ".lock");
  if (::access(raw.c_str(), F_OK) == 0) return raw;  // made by an earlier lab, or the one we waited for
  // Under the lock nobody else builds this disk: what a killed build left goes.
  for (const std::string& n : Names(cache_dir))
    if (n.rfind(name + ".raw.tmp-", 0) == 0 || n.rfind(name + ".stage-", 0) == 0) RemoveAll(cache_dir + "/" + n);
  std::string suffix = std::to_string(::getpid());
  std::string tmp = raw + ".tmp-" + suffix, stage = cache_dir + "/" + name + ".stage-" + suffix;
  Status built = BuildImageDisk(stage, tmp, layers, tools_dir);
  RemoveAll(stage);
  if (built.ok() && ::rename(tmp.c_str(), raw.c_str()) != 0) built = ErrnoStatus("rename " + tmp + " into place");
  if (!built.ok()) {
    ::unlink(tmp.c_str());
    return built.Prefixed("disk of image " + image_key);
  }
  return raw;
}

Status CreateVmDisk(const std::string& path, const std::string& backing_file, const std::string& backing_format) {
  std::string qemu_img = Tool("qemu-img");
  if (qemu_img.empty()) return Status::Error("qemu-img is not installed (apt-get install qemu-utils)");
  if (::access(path.c_str(), F_OK) == 0) return Status::Error("VM disk " + path + " already exists");
  std::string backing = fs::absolute(backing_file).lexically_normal().string();
  if (::access(backing.c_str(), R_OK) != 0) return ErrnoStatus("VM disk " + path + ": backing file " + backing);
  auto out = RunCommand({qemu_img, "create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing, path}, 60000);
  Status st = !out.ok()              ? out.status()
              : out->exit_code != 0 ? Status::Error("qemu-img create " + path + " failed: " + out->output)
                                     : Status::Ok();
  if (!st.ok()) ::unlink(path.c_str());
  return st;
}

}  // namespace lab::hv::qemu
