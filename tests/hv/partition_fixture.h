// A private playground for [root] partition tests: a temp dir holding a private run root, the
// disks and a base layer, and a cgroup root "labtest-XXXXXX". Everything it and its partitions
// made is removed when it goes out of scope.
#pragma once

#include <sys/mount.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "hv/kernel/partition.h"
#include "tests/support.h"

namespace lab::testing {

class PartitionPlayground {
 public:
  PartitionPlayground() {
    dir_ = TempDir("labtest");
    mark_ = dir_.substr(dir_.rfind('/') + 1);
    run_root_ = dir_ + "/run";
    Status s = hv::kernel::EnsureRunRoot(run_root_);
    if (!s.ok()) FAIL(s.message());
    s = hv::kernel::EnsureBaseLayer(dir_ + "/base");
    if (!s.ok()) FAIL(s.message());
  }
  PartitionPlayground(const PartitionPlayground&) = delete;
  PartitionPlayground& operator=(const PartitionPlayground&) = delete;

  ~PartitionPlayground() {
    // Children first: reverse order of start.
    for (auto it = started_.rbegin(); it != started_.rend(); ++it) (void)hv::kernel::DestroyPartition(it->first, it->second);
    (void)hv::kernel::RemoveCgroup(mark_);
    ::umount2(run_root_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  /// A configuration for machine `name`, below `parent` when given.
  hv::kernel::PartitionConfig Config(const std::string& name, const hv::kernel::PartitionConfig* parent = nullptr) const {
    hv::kernel::PartitionConfig c;
    c.lab = "labtest";
    c.lab_uid = mark_;
    c.machine = name;
    c.run_dir = run_root_ + "/m/" + name;
    c.disk_dir = dir_ + "/disks/" + name;
    c.base_dir = dir_ + "/base";
    c.cgroup = parent ? parent->cgroup + "/" + name : mark_ + "/" + name;
    c.parent_run_dir = parent ? parent->run_dir : "";
    c.init_path = std::string(LAB_BINARY_DIR) + "/lab-init";
    c.files = {{"/etc/hostname", name + "\n"}};
    return c;
  }

  /// Starts the partition and remembers it for cleanup; FAILs the test on error.
  hv::kernel::ProcessId Start(const hv::kernel::PartitionConfig& c) {
    auto init = hv::kernel::StartPartition(c);
    if (!init.ok()) FAIL(init.message());
    started_.emplace_back(c, *init);
    return *init;
  }

  const std::string& dir() const { return dir_; }
  const std::string& run_root() const { return run_root_; }
  const std::string& mark() const { return mark_; }

 private:
  std::string dir_, mark_, run_root_;
  std::vector<std::pair<hv::kernel::PartitionConfig, std::optional<hv::kernel::ProcessId>>> started_;
};

/// Mount points under `prefix` in our mount namespace (the prefix itself excluded).
inline std::vector<std::string> MountsUnder(const std::string& prefix) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string id, parent, dev, root, mount_point, rest;
  while (in >> id >> parent >> dev >> root >> mount_point) {
    std::getline(in, rest);
    if (mount_point.rfind(prefix + "/", 0) == 0) out.push_back(mount_point);
  }
  return out;
}

}  // namespace lab::testing
