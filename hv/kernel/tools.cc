// /opt/lab for VMs on images: lab, lab-init and the shared libraries lab runs with (and their
// loader), so the hypervisor inside a VM is lab itself whatever its image holds.
//
// The libraries are the ones this process has mapped (/proc/self/maps): lab's closure as the
// loader resolved it, without parsing ELF files or running ldd. Each is copied under its file
// name and every name the machine's library directory links to it (its SONAME link).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "base/text.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {

namespace fs = std::filesystem;

namespace {

Status CopyFile(const fs::path& from, const fs::path& to, fs::perms perms) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Status::Error("lab's tools for images: copy " + from.string() + ": " + ec.message());
  fs::permissions(to, perms, ec);
  return Status::Ok();
}

/// The shared objects mapped into this process: real path -> true.
std::set<std::string> MappedLibraries() {
  std::set<std::string> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    if (path.find(".so") == std::string::npos || path.ends_with(" (deleted)")) continue;
    out.insert(path);
  }
  return out;
}

Status BuildTools(const fs::path& dir, const std::string& lab_binary, const std::string& init_path) {
  std::error_code ec;
  fs::create_directories(dir / "bin", ec);
  fs::create_directories(dir / "lib", ec);
  if (ec) return Status::Error("lab's tools for images: mkdir " + dir.string() + ": " + ec.message());
  const auto exec = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                    fs::perms::others_exec;
  LAB_RETURN_IF_ERROR(CopyFile(lab_binary, dir / "bin" / "lab", exec));
  LAB_RETURN_IF_ERROR(CopyFile(init_path, dir / "lab-init", exec));
  std::string loader;
  std::set<std::string> libs = MappedLibraries();
  std::set<fs::path> lib_dirs;
  for (const auto& lib : libs) {
    fs::path p(lib);
    LAB_RETURN_IF_ERROR(CopyFile(p, dir / "lib" / p.filename(), exec));
    if (p.filename().string().rfind("ld-linux", 0) == 0 || p.filename().string().rfind("ld-musl", 0) == 0)
      loader = p.filename().string();
    lib_dirs.insert(p.parent_path());
  }
  if (loader.empty()) return Status::Error("lab's tools for images: no dynamic loader among lab's libraries");
  // The names the binaries ask for (SONAME links such as libnl-3.so.200 -> libnl-3.so.200.26.0).
  for (const auto& d : lib_dirs) {
    for (const auto& e : fs::directory_iterator(d, ec)) {
      if (!e.is_symlink(ec)) continue;
      auto target = fs::canonical(e.path(), ec);
      if (ec || !libs.count(target.string())) continue;
      fs::path link = dir / "lib" / e.path().filename();
      if (!fs::exists(fs::symlink_status(link, ec))) fs::create_symlink(target.filename(), link, ec);
    }
  }
  // The wrapper: lab through the loader, which finds every library in lib/ first; lab-init next
  // to it. LAB_INIT says where that is, since /proc/self/exe is the loader then.
  std::string wrapper = "#!/bin/sh\n# lab, run with the libraries it was built with (lab's tools for images)\n"
                        "LAB_INIT=/opt/lab/lab-init exec /opt/lab/lib/" + loader +
                        " --library-path /opt/lab/lib /opt/lab/bin/lab \"$@\"\n";
  {
    std::ofstream out(dir / "lab");
    out << wrapper;
    if (!out) return Status::Error("lab's tools for images: write " + (dir / "lab").string());
  }
  fs::permissions(dir / "lab", exec, ec);
  return Status::Ok();
}

}  // namespace

Status EnsureToolsForImages(const std::string& dir, const std::string& lab_binary, const std::string& init_path) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return Status::Ok();
  std::string tmp = dir + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(::gettid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  Status built = BuildTools(tmp, lab_binary, init_path);
  if (!built.ok()) {
    fs::remove_all(tmp, ec);
    return built;
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    int err = errno;
    fs::remove_all(tmp, ec);
    if ((err == EEXIST || err == ENOTEMPTY) && ::stat(dir.c_str(), &st) == 0) return Status::Ok();
    errno = err;
    return ErrnoStatus("lab's tools for images: rename " + tmp + " into place");
  }
  return Status::Ok();
}

}  // namespace lab::hv::kernel
