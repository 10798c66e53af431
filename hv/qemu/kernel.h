// The guest kernel of qemu VMs: Debian's linux-image-amd64, fetched with apt into a cache under
// the state directory and made bootable the fast way.
//
// QEMU boots an uncompressed ELF `vmlinux` through its PVH entry point (`-kernel vmlinux`): under
// software emulation that reaches /init in 3.7 s against 10.3 s for the compressed bzImage, whose
// decompressor is what TCG is slow at. The .deb ships only the bzImage (`vmlinuz`), so the ELF is
// taken out of it here: the bzImage's setup header says where its compressed payload is (or the
// payload is found by its magic), a library decompresses it, and the result must be an ELF that
// carries the PVH note (XEN_ELFNOTE_PHYS32_ENTRY), or QEMU could not boot it.
//
// Cache: STATE/qemu/kernels/<package>_<version>/ holds `vmlinux`, `config` and `modules/` (the
// package's lib/modules/<release>/). It is built aside and renamed into place, so a directory there
// is always complete; a cache hit needs no network.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lab::hv::qemu {

/// A guest kernel ready to boot.
struct GuestKernel {
  std::string package;  // "linux-image-6.1.0-57-amd64"
  std::string version;  // the package's version, "6.1.192-3"
  std::string release;  // what `uname -r` says in the guest: "6.1.0-57-amd64"
  std::string dir;      // the cache entry
  std::string vmlinux;  // dir/vmlinux: uncompressed ELF with the PVH note
  std::string modules;  // dir/modules: the package's lib/modules/<release>
};

/// The compression of a kernel payload, judged by its first bytes: "xz", "gzip", "zstd", "lz4",
/// "lzma", "bzip2", or "" when none is recognized.
std::string PayloadCompression(std::string_view data);

/// Takes the uncompressed kernel out of a bzImage. The payload is located by the setup header
/// (boot protocol 2.08+: payload_offset/payload_length) or, without one, by the first compression
/// magic; it is decompressed (xz, gzip, zstd, lz4, lzma, bzip2) and must be an x86-64 ELF with the
/// PVH entry note. An error says which of these failed.
Result<std::string> ExtractVmlinux(std::string_view bzimage);

/// Ok when `elf` is a 64-bit ELF with a PT_NOTE holding the note "Xen" of type 18
/// (XEN_ELFNOTE_PHYS32_ENTRY), QEMU's sign that `-kernel` can enter it through PVH.
Status CheckPvhNote(std::string_view elf);

/// The versioned package a meta package (linux-image-amd64) depends on, and its candidate version,
/// from apt-cache. An error when apt does not know it (no package lists: `apt-get update`).
struct KernelPackage {
  std::string package;
  std::string version;
};
Result<KernelPackage> ResolveKernelPackage(const std::string& meta_package);

/// The cache entry of `package` at `version` under `cache_dir` when it is there.
std::optional<GuestKernel> CachedKernel(const std::string& cache_dir, const KernelPackage& package);
/// The newest complete entry under `cache_dir` (by directory name), for when apt cannot be asked.
std::optional<GuestKernel> AnyCachedKernel(const std::string& cache_dir);

/// Unpacks from the Debian package at `deb` (ar + data.tar.*) the files whose path (without a
/// leading "./") starts with one of `prefixes` into `dest`, keeping their paths. Never writes
/// outside `dest`.
Status UnpackDeb(const std::string& deb, const std::vector<std::string>& prefixes, const std::string& dest);

/// Removes the `.fetch-PID` directories of fetches whose process is gone (killed mid-download), so
/// the next fetch starts that entry afresh. Those of running fetches stay.
void RemoveStaleFetches(const std::string& cache_dir);

/// What apt's answer about a package depends on, as one string that changes when any of it does:
/// the size and modification time (ns) of each of `paths` ("-" for one that is missing). The
/// default paths are apt's package lists (a directory whose mtime changes when `apt-get update`
/// renames a list into it), its binary cache, dpkg's status (installed versions weigh in the
/// candidate) and apt's sources, preferences and configuration.
std::string AptStateStamp(const std::vector<std::string>& paths = {
                              "/var/lib/apt/lists", "/var/cache/apt/pkgcache.bin", "/var/lib/dpkg/status",
                              "/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/preferences.d",
                              "/etc/apt/apt.conf.d"});

/// `resolve(meta_package)`, remembered in `cache_dir`/apt-<meta_package>.json under `stamp`
/// (AptStateStamp()): while the stamp is unchanged the remembered answer is returned without
/// calling `resolve` (apt-cache takes 1-3 s here, the better part of a qemu VM's start beyond its
/// boot). A failed resolution is not remembered.
Result<KernelPackage> ResolveKernelPackageRemembered(
    const std::string& cache_dir, const std::string& meta_package, const std::string& stamp,
    const std::function<Result<KernelPackage>(const std::string&)>& resolve = ResolveKernelPackage);

/// The guest kernel: the cache entry of the version apt offers now for `meta_package`
/// (ResolveKernelPackageRemembered: apt is asked again only when its state changed), or the
/// package downloaded (`apt-get download`), unpacked and its vmlinux extracted into a new entry.
/// When apt cannot resolve the package, the newest cached entry, if any.
Result<GuestKernel> FetchKernel(const std::string& cache_dir, const std::string& meta_package = "linux-image-amd64");

}  // namespace lab::hv::qemu
