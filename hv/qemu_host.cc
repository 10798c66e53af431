#include "hv/qemu_host.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "hv/kernel/doctor.h"
#include "hv/qemu/doctor.h"

namespace lab::hv {

namespace {

std::string ReadSmall(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string BootId() {
  std::string id = ReadSmall("/proc/sys/kernel/random/boot_id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

/// The probe's timeout per tiny guest: the doctor's.
constexpr int kProbeTimeoutMs = 2000;

}  // namespace

model::ProcessorVendor VendorFromName(const std::string& vendor) {
  if (vendor == "intel") return model::ProcessorVendor::kIntel;
  if (vendor == "amd") return model::ProcessorVendor::kAmd;
  return vendor.empty() ? model::ProcessorVendor::kNone : model::ProcessorVendor::kOther;
}

QemuHostFacts ProbeQemuHost(const std::string& run_dir) {
  QemuHostFacts f;
  f.cpu = VendorFromName(kernel::CpuVendor(ReadSmall("/proc/cpuinfo")));
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  f.cpus = n > 0 ? static_cast<int>(n) : 0;

  const std::string boot = BootId();
  const std::string cache = run_dir.empty() ? "" : run_dir + "/qemu-accel";
  // The cache: "BOOT_ID ACCEL" of an earlier probe in this boot.
  if (!cache.empty() && !boot.empty()) {
    std::istringstream in(ReadSmall(cache));
    std::string id, accel;
    if (in >> id >> accel && id == boot && (accel == "kvm" || accel == "tcg")) {
      f.accel = accel == "kvm" ? model::Accelerator::kKvm : model::Accelerator::kTcg;
      f.why = "the /dev/kvm probe of this boot (" + cache + ")";
      return f;
    }
  }
  struct stat st;
  if (::stat("/dev/kvm", &st) != 0) {
    f.why = "no /dev/kvm";
    return f;
  }
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    f.why = "/dev/kvm cannot be opened by this user";
    return f;
  }
  kernel::Capability accel = qemu::JudgeAccel(kernel::JudgeKvm(kernel::ProbeKvm(kProbeTimeoutMs)));
  f.accel = accel.detail.rfind("kvm", 0) == 0 ? model::Accelerator::kKvm : model::Accelerator::kTcg;
  f.why = accel.detail;
  if (!cache.empty() && !boot.empty()) {
    // Written aside and renamed: a reader sees the whole line or none. A cache that cannot be
    // written (no run dir yet, no privileges) only means the next command probes again.
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    std::string tmp = cache + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp);
      out << boot << " " << model::ToString(f.accel) << "\n";
    }
    if (std::rename(tmp.c_str(), cache.c_str()) != 0) std::filesystem::remove(tmp, ec);
  }
  return f;
}

}  // namespace lab::hv
