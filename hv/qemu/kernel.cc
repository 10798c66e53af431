#include "hv/qemu/kernel.h"

#include <archive.h>
#include <archive_entry.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/text.h"
#include "hv/qemu/bytes.h"
#include "hv/qemu/command.h"

namespace lab::hv::qemu {
namespace fs = std::filesystem;

namespace {

struct Magic {
  const char* name;
  std::string_view bytes;
};
// The compressions a Linux bzImage may carry (arch/x86/boot/compressed), by their stream magic.
const Magic kMagics[] = {
    {"xz", std::string_view("\xfd" "7zXZ\0", 6)},
    {"gzip", std::string_view("\x1f\x8b\x08", 3)},
    {"zstd", std::string_view("\x28\xb5\x2f\xfd", 4)},
    {"lz4", std::string_view("\x02\x21\x4c\x18", 4)},
    {"bzip2", std::string_view("BZh", 3)},
    {"lzma", std::string_view("\x5d\x00\x00", 3)},
};

/// Decompresses one stream with libarchive's filters (liblzma, zlib, libzstd, liblz4 behind them).
/// The bzImage's payload may be followed by other bytes: what came out before a decoder stopped at
/// them is kept.
Result<std::string> Decompress(std::string_view data) {
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_raw(a);
  std::string out;
  Status status;
  if (archive_read_open_memory(a, data.data(), data.size()) != ARCHIVE_OK) {
    status = Status::Error(std::string("cannot read the payload: ") + archive_error_string(a));
  } else {
    archive_entry* entry = nullptr;
    if (archive_read_next_header(a, &entry) != ARCHIVE_OK) {
      status = Status::Error(std::string("cannot read the payload: ") + archive_error_string(a));
    } else {
      char buf[1 << 16];
      for (;;) {
        la_ssize_t n = archive_read_data(a, buf, sizeof buf);
        if (n > 0) {
          out.append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && out.empty())
          status = Status::Error(std::string("cannot decompress the payload: ") + archive_error_string(a));
        break;
      }
    }
  }
  archive_read_free(a);
  if (!status.ok()) return status;
  return out;
}

std::string ReadFile(const std::string& path, Status* status) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *status = ErrnoStatus("cannot read " + path);
    return "";
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Status WriteFile(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return ErrnoStatus("cannot write " + path);
  return Status::Ok();
}

std::optional<GuestKernel> EntryAt(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(dir / "vmlinux", ec)) return std::nullopt;
  GuestKernel k;
  std::string name = dir.filename().string();
  size_t us = name.find('_');
  if (us == std::string::npos) return std::nullopt;
  k.package = name.substr(0, us);
  k.version = name.substr(us + 1);
  k.dir = dir.string();
  k.vmlinux = (dir / "vmlinux").string();
  k.modules = (dir / "modules").string();
  std::ifstream rel(dir / "release");
  if (!std::getline(rel, k.release) || k.release.empty()) return std::nullopt;
  return k;
}

}  // namespace

std::string PayloadCompression(std::string_view data) {
  for (const auto& m : kMagics)
    if (data.substr(0, m.bytes.size()) == m.bytes) return m.name;
  return "";
}

Status CheckPvhNote(std::string_view elf) {
  if (elf.size() < 64 || elf.substr(0, 4) != std::string_view("\x7f" "ELF", 4))
    return Status::Error("the kernel payload is not an ELF file");
  if (elf[4] != 2) return Status::Error("the kernel payload is not a 64-bit ELF file");
  auto phoff = Load<uint64_t>(elf, 0x20);
  auto phentsize = Load<uint16_t>(elf, 0x36);
  auto phnum = Load<uint16_t>(elf, 0x38);
  for (uint16_t i = 0; i < phnum; ++i) {
    size_t ph = phoff + size_t{i} * phentsize;
    if (ph + 56 > elf.size()) break;
    if (Load<uint32_t>(elf, ph) != 4 /* PT_NOTE */) continue;
    uint64_t off = Load<uint64_t>(elf, ph + 8), size = Load<uint64_t>(elf, ph + 32);
    if (off > elf.size() || size > elf.size() - off) continue;
    size_t at = off, end = off + size;
    while (at + 12 <= end) {
      uint32_t namesz = Load<uint32_t>(elf, at), descsz = Load<uint32_t>(elf, at + 4),
               type = Load<uint32_t>(elf, at + 8);
      size_t name_at = at + 12;
      size_t desc_at = name_at + ((namesz + 3u) & ~3u);
      if (desc_at > end) break;
      if (type == 18 /* XEN_ELFNOTE_PHYS32_ENTRY */ && namesz == 4 && elf.substr(name_at, 4) == std::string_view("Xen\0", 4))
        return Status::Ok();
      at = desc_at + ((descsz + 3u) & ~3u);
    }
  }
  return Status::Error("the kernel has no PVH entry note (ELF note 'Xen' type 18, XEN_ELFNOTE_PHYS32_ENTRY): "
                       "QEMU cannot boot it as vmlinux; use a kernel built with CONFIG_PVH=y");
}

Result<std::string> ExtractVmlinux(std::string_view bzimage) {
  std::string_view payload;
  // The setup header (Documentation/x86/boot.rst): "HdrS" at 0x202, protocol version at 0x206,
  // setup_sects at 0x1f1, and from 2.08 payload_offset/payload_length at 0x248/0x24c, relative to
  // the protected-mode code that follows the setup sectors.
  if (bzimage.size() > 0x250 && bzimage.substr(0x202, 4) == "HdrS" && Load<uint16_t>(bzimage, 0x206) >= 0x208) {
    unsigned sects = static_cast<uint8_t>(bzimage[0x1f1]);
    if (sects == 0) sects = 4;
    size_t at = (size_t{sects} + 1) * 512 + Load<uint32_t>(bzimage, 0x248);
    size_t len = Load<uint32_t>(bzimage, 0x24c);
    if (at < bzimage.size() && len <= bzimage.size() - at) payload = bzimage.substr(at, len);
  }
  if (payload.empty() || PayloadCompression(payload).empty()) {
    // No usable header: the first compression magic (the weak lzma/bzip2 ones excluded, they
    // occur by chance in code) marks the payload, which then runs to the end.
    size_t best = std::string_view::npos;
    for (const auto& m : kMagics) {
      if (std::string_view(m.name) == "lzma" || std::string_view(m.name) == "bzip2") continue;
      best = std::min(best, bzimage.find(m.bytes));
    }
    if (best == std::string_view::npos)
      return Status::Error("no compressed kernel payload found (neither a bzImage setup header nor an "
                           "xz, gzip, zstd or lz4 stream)");
    payload = bzimage.substr(best);
  }
  std::string kind = PayloadCompression(payload);
  auto elf = Decompress(payload);
  if (!elf.ok()) return elf.status().Prefixed("kernel payload (" + kind + ")");
  LAB_RETURN_IF_ERROR(CheckPvhNote(*elf));
  return std::move(elf).value();
}

Result<KernelPackage> ResolveKernelPackage(const std::string& meta_package) {
  auto deps = RunCommand({"apt-cache", "depends", meta_package}, 60000);
  if (!deps.ok()) return deps.status();
  KernelPackage k;
  std::istringstream lines(deps->output);
  for (std::string line; std::getline(lines, line);) {
    auto at = line.find("Depends: linux-image-");
    if (at != std::string::npos) {
      k.package = line.substr(at + 9);
      break;
    }
  }
  if (deps->exit_code != 0 || k.package.empty())
    return Status::Error("apt does not know the kernel package '" + meta_package +
                         "' (run apt-get update, or check /etc/apt/sources.list)");
  auto show = RunCommand({"apt-cache", "show", "--no-all-versions", k.package}, 60000);
  if (!show.ok()) return show.status();
  std::istringstream fields(show->output);
  for (std::string line; std::getline(fields, line);)
    if (line.rfind("Version: ", 0) == 0) {
      k.version = line.substr(9);
      break;
    }
  if (k.version.empty()) return Status::Error("apt shows no version of '" + k.package + "'");
  return k;
}

std::optional<GuestKernel> CachedKernel(const std::string& cache_dir, const KernelPackage& package) {
  return EntryAt(fs::path(cache_dir) / (package.package + "_" + package.version));
}

std::optional<GuestKernel> AnyCachedKernel(const std::string& cache_dir) {
  std::error_code ec;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(cache_dir, ec))
    if (e.is_directory(ec) && e.path().filename().string()[0] != '.') dirs.push_back(e.path());
  std::sort(dirs.rbegin(), dirs.rend());
  for (const auto& d : dirs)
    if (auto k = EntryAt(d)) return k;
  return std::nullopt;
}

Status UnpackDeb(const std::string& deb, const std::vector<std::string>& prefixes, const std::string& dest) {
  // A .deb is an ar archive; its data.tar.* member is read into memory and opened again as a tar.
  std::string data;
  {
    archive* ar = archive_read_new();
    archive_read_support_format_ar(ar);
    Status st;
    if (archive_read_open_filename(ar, deb.c_str(), 1 << 16) != ARCHIVE_OK) {
      st = Status::Error(deb + ": " + archive_error_string(ar));
    } else {
      archive_entry* e = nullptr;
      bool found = false;
      while (archive_read_next_header(ar, &e) == ARCHIVE_OK) {
        if (std::string(archive_entry_pathname(e)).rfind("data.tar", 0) != 0) continue;
        found = true;
        char buf[1 << 16];
        la_ssize_t n;
        while ((n = archive_read_data(ar, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
        if (n < 0) st = Status::Error(deb + ": " + archive_error_string(ar));
        break;
      }
      if (!found && st.ok()) st = Status::Error(deb + ": not a Debian package (no data.tar member)");
    }
    archive_read_free(ar);
    LAB_RETURN_IF_ERROR(st);
  }
  archive* tar = archive_read_new();
  archive_read_support_format_tar(tar);
  archive_read_support_filter_all(tar);
  Status st;
  if (archive_read_open_memory(tar, data.data(), data.size()) != ARCHIVE_OK) {
    st = Status::Error(deb + ": " + archive_error_string(tar));
  } else {
    archive_entry* e = nullptr;
    int r;
    while ((r = archive_read_next_header(tar, &e)) == ARCHIVE_OK) {
      std::string path = archive_entry_pathname(e);
      if (path.rfind("./", 0) == 0) path = path.substr(2);
      bool wanted = std::any_of(prefixes.begin(), prefixes.end(),
                                [&](const std::string& p) { return path.rfind(p, 0) == 0; });
      if (!wanted || path.find("..") != std::string::npos) continue;
      fs::path out = fs::path(dest) / path;
      std::error_code ec;
      if (archive_entry_filetype(e) == AE_IFDIR) {
        fs::create_directories(out, ec);
        continue;
      }
      if (archive_entry_filetype(e) != AE_IFREG) continue;  // the tree needs no links or devices
      fs::create_directories(out.parent_path(), ec);
      std::ofstream f(out, std::ios::binary | std::ios::trunc);
      char buf[1 << 16];
      la_ssize_t n;
      while ((n = archive_read_data(tar, buf, sizeof buf)) > 0) f.write(buf, n);
      f.close();
      if (n < 0 || !f) {
        st = Status::Error(deb + ": cannot unpack " + path + ": " +
                           (n < 0 ? archive_error_string(tar) : ErrnoText(errno)));
        break;
      }
    }
    if (st.ok() && r != ARCHIVE_EOF) st = Status::Error(deb + ": " + archive_error_string(tar));
  }
  archive_read_free(tar);
  return st;
}

void RemoveStaleFetches(const std::string& cache_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(cache_dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind(".fetch-", 0) != 0) continue;
    int pid = std::atoi(name.c_str() + 7);
    std::error_code ignored;
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ignored);
  }
}

std::string AptStateStamp(const std::vector<std::string>& paths) {
  std::string stamp;
  for (const auto& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      stamp += p + "=-;";
      continue;
    }
    stamp += p + "=" + std::to_string(st.st_size) + "@" + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec) + ";";
  }
  return stamp;
}

Result<KernelPackage> ResolveKernelPackageRemembered(
    const std::string& cache_dir, const std::string& meta_package, const std::string& stamp,
    const std::function<Result<KernelPackage>(const std::string&)>& resolve) {
  std::string memo = (fs::path(cache_dir) / ("apt-" + meta_package + ".json")).string();
  if (auto text = lab::ReadFile(memo)) {
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_object() && j.value("stamp", "") == stamp && !j.value("package", "").empty() &&
        !j.value("version", "").empty())
      return KernelPackage{j.value("package", ""), j.value("version", "")};
  }
  auto pkg = resolve(meta_package);
  if (!pkg.ok()) return pkg;
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  // Not remembering is only slower: a failed write is not an error.
  (void)WriteFileAtomic(memo, nlohmann::json{{"stamp", stamp}, {"package", pkg->package}, {"version", pkg->version}}.dump());
  return pkg;
}

Result<GuestKernel> FetchKernel(const std::string& cache_dir, const std::string& meta_package) {
  auto pkg = ResolveKernelPackageRemembered(cache_dir, meta_package, AptStateStamp());
  if (!pkg.ok()) {
    if (auto cached = AnyCachedKernel(cache_dir)) return *cached;
    return pkg.status().Prefixed("guest kernel");
  }
  if (auto cached = CachedKernel(cache_dir, *pkg)) return *cached;

  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  RemoveStaleFetches(cache_dir);
  fs::path tmp = fs::path(cache_dir) / (".fetch-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "deb", ec);
  if (ec) return Status::Error("cannot create " + tmp.string() + ": " + ec.message());
  // A failed step leaves nothing behind: the half-made entry is removed with its error.
  auto fail = [&](Status st) {
    if (st.ok()) return st;
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return st.Prefixed("guest kernel " + pkg->package + " " + pkg->version);
  };
  // apt's sandbox user cannot write into the state directory; the download is a plain file here.
  auto got = RunCommand({"apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg->package + "=" + pkg->version},
                        600000, (tmp / "deb").string());
  if (!got.ok()) return fail(got.status());
  std::string deb;
  for (const auto& e : fs::directory_iterator(tmp / "deb", ec))
    if (e.path().extension() == ".deb") deb = e.path().string();
  if (got->exit_code != 0 || deb.empty())
    return fail(Status::Error("apt-get download failed: " + got->output));
  fs::path tree = tmp / "tree";
  LAB_RETURN_IF_ERROR(fail(UnpackDeb(deb, {"boot/", "lib/modules/"}, tree.string())));
  fs::remove_all(tmp / "deb", ec);

  std::string release, vmlinuz, config;
  for (const auto& e : fs::directory_iterator(tree / "boot", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("vmlinuz-", 0) == 0) {
      vmlinuz = e.path().string();
      release = name.substr(8);
    }
    if (name.rfind("config-", 0) == 0) config = e.path().string();
  }
  if (vmlinuz.empty()) return fail(Status::Error("the package has no boot/vmlinuz-*"));
  Status st;
  std::string bz = ReadFile(vmlinuz, &st);
  if (!st.ok()) return fail(st);
  auto elf = ExtractVmlinux(bz);
  if (!elf.ok()) return fail(elf.status());
  LAB_RETURN_IF_ERROR(fail(WriteFile((tmp / "vmlinux").string(), *elf)));
  LAB_RETURN_IF_ERROR(fail(WriteFile((tmp / "release").string(), release + "\n")));
  if (!config.empty()) fs::rename(config, tmp / "config", ec);
  fs::rename(tree / "lib" / "modules" / release, tmp / "modules", ec);
  if (ec) return fail(Status::Error("the package has no lib/modules/" + release));
  fs::remove_all(tree, ec);

  fs::path final_dir = fs::path(cache_dir) / (pkg->package + "_" + pkg->version);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    // Another lab finished the same entry first: theirs is as good.
    if (auto cached = CachedKernel(cache_dir, *pkg)) {
      fs::remove_all(tmp, ec);
      return *cached;
    }
    return fail(Status::Error("cannot rename into " + final_dir.string() + ": " + ec.message()));
  }
  auto entry = EntryAt(final_dir);
  if (!entry) return Status::Error("guest kernel: cache entry " + final_dir.string() + " is incomplete");
  return *entry;
}

}  // namespace lab::hv::qemu
