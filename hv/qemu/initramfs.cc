#include "hv/qemu/initramfs.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "hv/qemu/bytes.h"
#include "hv/qemu/command.h"

namespace lab::hv::qemu {
namespace fs = std::filesystem;

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

/// A module's name as the kernel knows it: the file name without .ko[.xz|.zst|.gz], '-' as '_'.
std::string ModuleName(const std::string& file) {
  std::string name = file.substr(0, file.find(".ko"));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

/// The section named `wanted` of a 64-bit ELF, or an empty view.
std::string_view ElfSection(std::string_view elf, std::string_view wanted) {
  if (elf.size() < 64 || elf.substr(0, 4) != std::string_view("\x7f" "ELF", 4) || elf[4] != 2) return {};
  auto shoff = Load<uint64_t>(elf, 0x28);
  auto shentsize = Load<uint16_t>(elf, 0x3a);
  auto shnum = Load<uint16_t>(elf, 0x3c);
  auto shstrndx = Load<uint16_t>(elf, 0x3e);
  auto section = [&](size_t i) -> std::pair<uint64_t, uint64_t> {
    size_t at = shoff + i * shentsize;
    if (at + 64 > elf.size()) return {0, 0};
    uint64_t off = Load<uint64_t>(elf, at + 0x18), size = Load<uint64_t>(elf, at + 0x20);
    if (off > elf.size() || size > elf.size() - off) return {0, 0};
    return {off, size};
  };
  auto [stroff, strsize] = section(shstrndx);
  for (size_t i = 0; i < shnum; ++i) {
    size_t at = shoff + i * shentsize;
    if (at + 64 > elf.size()) break;
    uint32_t name = Load<uint32_t>(elf, at);
    if (name >= strsize) continue;
    std::string_view n = elf.substr(stroff + name);
    n = n.substr(0, n.find('\0'));
    if (n == wanted) {
      auto [off, size] = section(i);
      return elf.substr(off, size);
    }
  }
  return {};
}

bool IsStaticElf(const std::string& path) {
  std::string elf;
  if (!ReadFile(path, &elf) || elf.size() < 64 || elf.substr(0, 4) != "\x7f" "ELF") return false;
  auto phoff = Load<uint64_t>(elf, 0x20);
  auto phentsize = Load<uint16_t>(elf, 0x36);
  auto phnum = Load<uint16_t>(elf, 0x38);
  for (size_t i = 0; i < phnum; ++i)
    if (Load<uint32_t>(elf, phoff + i * phentsize) == 3 /* PT_INTERP */) return false;
  return true;
}

}  // namespace

Status WriteCpioGz(const std::vector<CpioEntry>& entries, const std::string& path) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  archive* a = archive_write_new();
  archive_write_set_format_cpio_newc(a);
  archive_write_add_filter_gzip(a);
  Status st;
  if (archive_write_open_filename(a, tmp.c_str()) != ARCHIVE_OK)
    st = Status::Error("cannot write " + tmp + ": " + archive_error_string(a));
  for (size_t i = 0; st.ok() && i < entries.size(); ++i) {
    const CpioEntry& e = entries[i];
    archive_entry* ae = archive_entry_new();
    archive_entry_set_pathname(ae, e.path.c_str());
    archive_entry_set_perm(ae, e.mode);
    archive_entry_set_ino(ae, static_cast<la_int64_t>(i + 1));  // newc wants distinct inodes
    archive_entry_set_nlink(ae, e.kind == CpioEntry::Kind::kDirectory ? 2 : 1);
    archive_entry_set_size(ae, 0);
    switch (e.kind) {
      case CpioEntry::Kind::kFile:
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_size(ae, static_cast<la_int64_t>(e.data.size()));
        break;
      case CpioEntry::Kind::kDirectory:
        archive_entry_set_filetype(ae, AE_IFDIR);
        break;
      case CpioEntry::Kind::kSymlink:
        archive_entry_set_filetype(ae, AE_IFLNK);
        archive_entry_set_symlink(ae, e.data.c_str());
        break;
      case CpioEntry::Kind::kCharDevice:
        archive_entry_set_filetype(ae, AE_IFCHR);
        archive_entry_set_rdevmajor(ae, e.major);
        archive_entry_set_rdevminor(ae, e.minor);
        break;
    }
    if (archive_write_header(a, ae) != ARCHIVE_OK) {
      st = Status::Error("cpio: " + e.path + ": " + archive_error_string(a));
    } else if (e.kind == CpioEntry::Kind::kFile && !e.data.empty() &&
               archive_write_data(a, e.data.data(), e.data.size()) != static_cast<la_ssize_t>(e.data.size())) {
      st = Status::Error("cpio: " + e.path + ": " + archive_error_string(a));
    }
    archive_entry_free(ae);
  }
  if (archive_write_close(a) != ARCHIVE_OK && st.ok()) st = Status::Error("cannot write " + tmp + ": " + archive_error_string(a));
  archive_write_free(a);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoStatus("cannot rename " + tmp + " to " + path);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

std::vector<std::string> ModuleDepends(std::string_view ko) {
  std::vector<std::string> deps;
  std::string_view info = ElfSection(ko, ".modinfo");
  size_t at = 0;
  while (at < info.size()) {
    size_t end = info.find('\0', at);
    if (end == std::string_view::npos) end = info.size();
    std::string_view field = info.substr(at, end - at);
    if (field.rfind("depends=", 0) == 0) {
      std::string list(field.substr(8));
      std::istringstream s(list);
      for (std::string d; std::getline(s, d, ',');)
        if (!d.empty()) {
          std::replace(d.begin(), d.end(), '-', '_');
          deps.push_back(d);
        }
    }
    at = end + 1;
  }
  return deps;
}

namespace {

/// The module tree of a kernel: each module's path by name, and what is built in.
struct ModuleIndex {
  std::string dir;
  std::map<std::string, std::string> by_name;  // name -> path relative to dir
  std::set<std::string> builtin;
  std::map<std::string, std::vector<std::string>> depends;  // read once per module
};

Result<ModuleIndex> IndexModules(const std::string& modules_dir) {
  ModuleIndex index;
  index.dir = modules_dir;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(fs::path(modules_dir) / "kernel", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::string file = it->path().filename().string();
    if (file.find(".ko") == std::string::npos || !it->is_regular_file()) continue;
    index.by_name[ModuleName(file)] = fs::relative(it->path(), modules_dir).string();
  }
  if (index.by_name.empty()) return Status::Error("no kernel modules under " + modules_dir + "/kernel");
  std::ifstream list(fs::path(modules_dir) / "modules.builtin");
  for (std::string line; std::getline(list, line);)
    index.builtin.insert(ModuleName(line.substr(line.rfind('/') + 1)));
  return index;
}

Result<std::vector<std::string>> Closure(ModuleIndex& index, const std::vector<std::string>& roots) {
  std::vector<std::string> order;
  std::set<std::string> done, visiting;
  Status st;
  std::function<void(const std::string&, const std::string&)> visit = [&](const std::string& name,
                                                                        const std::string& needed_by) {
    if (!st.ok() || done.count(name) || visiting.count(name)) return;
    auto found = index.by_name.find(name);
    if (found == index.by_name.end()) {
      if (!index.builtin.count(name))
        st = Status::Error("kernel module '" + name + "'" + (needed_by.empty() ? "" : " (needed by " + needed_by + ")") +
                           " is neither under " + index.dir + " nor built into the kernel");
      return;
    }
    visiting.insert(name);
    auto deps = index.depends.find(name);
    if (deps == index.depends.end()) {
      std::string ko;
      if (!ReadFile(index.dir + "/" + found->second, &ko)) {
        st = ErrnoStatus("cannot read " + found->second);
        return;
      }
      deps = index.depends.emplace(name, ModuleDepends(ko)).first;
    }
    for (const auto& dep : deps->second) visit(dep, name);
    visiting.erase(name);
    done.insert(name);
    order.push_back(found->second);
  };
  for (const auto& root : roots) visit(root, "");
  if (!st.ok()) return st;
  return order;
}

}  // namespace

Result<std::vector<std::string>> ModuleClosure(const std::string& modules_dir, const std::vector<std::string>& roots) {
  auto index = IndexModules(modules_dir);
  if (!index.ok()) return index.status();
  return Closure(*index, roots);
}

std::vector<ModuleRoot> GuestModuleRoots() {
  std::vector<ModuleRoot> roots = {
      // The agent's port: nothing else is needed before lab can talk to the guest.
      {"virtio_pci", {}, "boot"}, {"virtio_console", {}, "boot"},
      // `image: host`: the host's tree over 9p, made writable by an overlay.
      {"9pnet_virtio", {}, "9p"}, {"9p", {}, "9p"}, {"overlay", {}, "9p"},
      // An image's disk: ext4 needs crc32c_generic on a processor without SSE4.2 (qemu64).
      {"virtio_blk", {}, "disk"}, {"crc32c_generic", {}, "disk"}, {"ext4", {}, "disk"},
  };
  // In the background once the agent runs: first the adapters' NIC driver, then the power button
  // Stop-VM presses (ACPI button + evdev), then lab's partition driver inside the guest (bridges,
  // veth, nftables NAT and bridge-family filters, overlay roots), QEMU inside it (tun, kvm),
  // dynamic memory, entropy.
  roots.push_back({"virtio_net", {}, "net"});
  roots.push_back({"button", {}, "button"});
  roots.push_back({"evdev", {}, "button"});
  // crc32c_generic first: libcrc32c (nf_tables, nf_nat) and ext4 ask the crypto API for "crc32c"
  // when they load, a soft dependency .modinfo's depends= does not list.
  for (const char* m : {"crc32c_generic", "virtio_net", "virtio_balloon", "virtio_rng", "overlay", "bridge", "veth",
                        "tun", "nf_tables", "nft_chain_nat", "nft_masq", "nft_nat", "nft_ct", "nft_meta_bridge",
                        "9pnet_virtio", "9p", "virtio_blk", "ext4"})
    roots.push_back({m, {}, "late"});
  roots.push_back({"kvm_amd", {"svm"}, "late"});
  roots.push_back({"kvm_intel", {"vmx"}, "late"});
  return roots;
}

Result<std::string> ModuleLoadList(const std::string& modules_dir, const std::string& release,
                                   const std::vector<ModuleRoot>& roots, std::vector<std::string>* files) {
  auto index = IndexModules(modules_dir);
  if (!index.ok()) return index.status();
  std::string list;
  std::vector<std::string> all;
  std::set<std::string> seen;
  for (const char* phase : kModulePhases) {
    std::vector<ModuleRoot> in_phase;
    for (const auto& r : roots)
      if (r.phase == phase) in_phase.push_back(r);
    if (in_phase.empty()) continue;
    std::vector<std::string> names;
    for (const auto& r : in_phase) names.push_back(r.name);
    auto order = Closure(*index, names);
    if (!order.ok()) return order.status();
    // Each module's flags: the union over the roots that pull it in; none when any root needs none.
    std::map<std::string, std::set<std::string>> needs;
    std::set<std::string> always;
    for (const auto& r : in_phase) {
      auto closure = Closure(*index, {r.name});
      if (!closure.ok()) return closure.status();
      for (const auto& m : *closure) {
        if (r.needs_flag.empty()) always.insert(m);
        for (const auto& f : r.needs_flag) needs[m].insert(f);
      }
    }
    list += std::string("[") + phase + "]\n";
    for (const auto& m : *order) {
      list += "/lib/modules/" + release + "/" + m;
      if (!always.count(m) && needs.count(m)) {
        std::string alternatives;
        for (const auto& f : needs[m]) alternatives += (alternatives.empty() ? "" : "|") + f;
        list += " " + alternatives;
      }
      list += "\n";
      if (seen.insert(m).second) all.push_back(m);
    }
  }
  if (files) *files = all;
  return list;
}

std::string StaticBusybox() {
  for (const char* p : {"/bin/busybox", "/usr/bin/busybox"})
    if (::access(p, X_OK) == 0 && IsStaticElf(p)) return p;
  return "";
}

Status BuildInitramfs(const GuestKernel& kernel, const std::string& guest_init, const std::string& busybox,
                      const std::string& out) {
  using Kind = CpioEntry::Kind;
  std::vector<CpioEntry> e;
  for (const char* d : {"bin", "sbin", "dev", "etc", "etc/lab", "proc", "sys", "tmp", "lib", "lib/modules"})
    e.push_back({Kind::kDirectory, d, "", 0755});
  // The kernel opens /dev/console for /init's stdin, stdout and stderr before devtmpfs is mounted.
  e.push_back({Kind::kCharDevice, "dev/console", "", 0600, 5, 1});
  CpioEntry init{Kind::kFile, "init", "", 0755};
  if (!ReadFile(guest_init, &init.data))
    return Status::Error("cannot read the guest init " + guest_init + " (build the lab-guest-init target)");
  e.push_back(std::move(init));

  std::vector<std::string> modules;
  auto load_order = ModuleLoadList(kernel.modules, kernel.release, GuestModuleRoots(), &modules);
  if (!load_order.ok()) return load_order.status().Prefixed("initramfs for " + kernel.release);
  std::string prefix = "lib/modules/" + kernel.release + "/";
  std::set<std::string> dirs;
  for (const auto& rel : modules)
    for (fs::path p = fs::path(prefix + rel).parent_path(); !p.empty() && p.string() + "/" != prefix; p = p.parent_path())
      dirs.insert(p.string());
  e.push_back({Kind::kDirectory, prefix.substr(0, prefix.size() - 1), "", 0755});
  for (const auto& d : dirs) e.push_back({Kind::kDirectory, d, "", 0755});  // sorted: parents first
  for (const auto& rel : modules) {
    CpioEntry m{Kind::kFile, prefix + rel, "", 0644};
    if (!ReadFile(kernel.modules + "/" + rel, &m.data)) return ErrnoStatus("cannot read module " + rel);
    e.push_back(std::move(m));
  }
  e.push_back({Kind::kFile, "etc/lab/modules", *load_order, 0644});

  if (!busybox.empty()) {
    CpioEntry bb{Kind::kFile, "bin/busybox", "", 0755};
    if (!ReadFile(busybox, &bb.data)) return ErrnoStatus("cannot read " + busybox);
    e.push_back(std::move(bb));
    auto list = RunCommand({busybox, "--list"}, 10000);
    if (list.ok() && list->exit_code == 0) {
      std::istringstream names(list->output);
      for (std::string n; std::getline(names, n);)
        if (!n.empty() && n != "busybox" && n.find('/') == std::string::npos)
          e.push_back({Kind::kSymlink, "bin/" + n, "busybox", 0777});
    }
  }
  return WriteCpioGz(e, out);
}

}  // namespace lab::hv::qemu
