// Disks of qemu VMs made from machine images (DESIGN.md "Images"): once per image, a read-only
// raw ext4 file holding the image's merged tree and lab's tools at /opt/lab; per VM, a qcow2 over
// it (its differencing disk: Hyper-V's parent VHDX and child AVHDX), which is all the VM writes.
//
// The image's disk: the overlay layers (topmost first, as hv::PartitionSpec::image_layers, with
// overlay's whiteouts: a 0/0 character device removes the name below it, a directory with
// trusted.overlay.opaque=y hides what is below it) are merged bottom-up into a staging tree of
// hard links (no file content is copied), lab's tools are added, and `mkfs.ext4 -d` writes the
// file system from it. It is built aside (`<key>.raw.tmp-PID`) and renamed into place, under an
// flock of `<key>.lock`, so two labs asking for the same image build it once: the second waits and
// finds it made. An entry that is there is complete; a build killed halfway leaves temporaries that
// the next build of that key removes.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace lab::hv::qemu {

/// RAII flock of a file (made when missing): one maker of a cached disk or template at a time.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

/// STATE/qemu/disks: where image disks are kept.
std::string DiskCacheDir(const std::string& state_dir);

/// The name of an image's disk in the cache: `image_key`, and the tools' directory name when
/// there are tools (it identifies the lab binary they hold: a new lab makes a new disk).
std::string ImageDiskName(const std::string& image_key, const std::string& tools_dir);

/// The free space an image's disk has beyond its content: what a VM can write to its root.
inline constexpr long long kImageDiskHeadroomBytes = 1LL << 30;

/// The image's disk `cache_dir`/ImageDiskName(...).raw: made when missing (ext4, sized to the
/// content plus kImageDiskHeadroomBytes, sparse), else returned as it is. `layers` topmost first;
/// `tools_dir` ("" for none) is copied to /opt/lab. An error names the layer or the mkfs failure;
/// nothing is left in the cache then but the lock file.
Result<std::string> EnsureImageDisk(const std::string& cache_dir, const std::string& image_key,
                                    const std::vector<std::string>& layers, const std::string& tools_dir);

/// The VM's own disk at `path`: a qcow2 whose backing file is `backing` (read-only from then on:
/// every write of the VM lands in `path`), of format `backing_format`: "raw" for an image's disk,
/// "qcow2" for a template's (hv/qemu/template.h: the chain is one deeper). An existing `path` is
/// an error (it is the VM's data); on error nothing is left at `path`.
Status CreateVmDisk(const std::string& path, const std::string& backing, const std::string& backing_format = "raw");

}  // namespace lab::hv::qemu
