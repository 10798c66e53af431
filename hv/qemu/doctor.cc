#include "hv/qemu/doctor.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "hv/qemu/kernel.h"
#include "hv/qemu/process.h"

namespace lab::hv::qemu {

using kernel::Capability;
using kernel::kCapMissing;
using kernel::kCapOk;

namespace {

const Capability* Find(const std::vector<Capability>& caps, const std::string& name) {
  for (const auto& c : caps)
    if (c.name == name) return &c;
  return nullptr;
}

Capability Device(const std::string& name, const std::string& path, const std::string& module) {
  if (::access(path.c_str(), F_OK) == 0) return {name, kCapOk, path, "", false};
  return {name, kCapMissing, path + " is absent: QEMU uses its own (slower) " +
                                 (module == "vhost_net" ? "network backend" : "virtio-serial channel instead"),
          "modprobe " + module, false};
}

}  // namespace

std::string KernelCacheDir(const std::string& state_dir) { return state_dir + "/qemu/kernels"; }

Capability JudgeAccel(const Capability& kvm) {
  if (kvm.state == kernel::kCapUsable)
    return {"qemu accelerator", kCapOk, "kvm: /dev/kvm runs a standard guest", "", false};
  std::string why = kvm.state == kernel::kCapUnusable ? "/dev/kvm cannot run a standard guest" : "no /dev/kvm";
  return {"qemu accelerator", kCapOk, "tcg (software emulation, slower): " + why, "", false};
}

Capability JudgeExposure(const Capability& accel, const Capability& kvm_nested, const std::string& cpuinfo) {
  const std::string name = "qemu nested";
  if (accel.detail.rfind("tcg", 0) == 0)
    return {name, kCapOk, "AMD SVM with NPT, emulated by TCG (-cpu qemu64,+svm,+npt)", "", false};
  bool vmx = cpuinfo.find(" vmx") != std::string::npos, svm = cpuinfo.find(" svm") != std::string::npos;
  if (!vmx && !svm)
    return {name, kCapMissing, "the processor has neither vmx nor svm: no extensions to expose",
            "enable VT-x or AMD-V in the firmware", false};
  if (kvm_nested.state != kCapOk)
    return {name, kCapMissing, std::string(vmx ? "vmx" : "svm") + " present but " + kvm_nested.detail, kvm_nested.fix,
            false};
  return {name, kCapOk, std::string(vmx ? "Intel VT-x with EPT" : "AMD SVM with NPT") + " passed through by KVM", "",
          false};
}

std::vector<Capability> Diagnose(const std::vector<Capability>& partition_caps, const std::string& state_dir) {
  std::vector<Capability> caps;
  auto version = QemuVersion();
  if (version.ok())
    caps.push_back({"qemu", kCapOk, "qemu-system-x86_64 " + *version, "", false});
  else
    caps.push_back({"qemu", kCapMissing, version.message(), "apt-get install qemu-system-x86", false});

  Capability none{"", kCapMissing, "not probed", "", false};
  const Capability* kvm = Find(partition_caps, "/dev/kvm");
  const Capability* nested = Find(partition_caps, "kvm nested");
  Capability accel = JudgeAccel(kvm ? *kvm : none);
  caps.push_back(accel);
  std::ifstream in("/proc/cpuinfo");
  std::ostringstream cpuinfo;
  cpuinfo << in.rdbuf();
  caps.push_back(JudgeExposure(accel, nested ? *nested : none, cpuinfo.str()));
  caps.push_back(Device("vhost-net", "/dev/vhost-net", "vhost_net"));
  caps.push_back(Device("vhost-vsock", "/dev/vhost-vsock", "vhost_vsock"));

  std::string cache = KernelCacheDir(state_dir);
  auto package = ResolveKernelPackage("linux-image-amd64");
  if (package.ok()) {
    if (auto k = CachedKernel(cache, *package))
      caps.push_back({"guest kernel", kCapOk, k->package + " " + k->version + " cached in " + k->dir, "", false});
    else
      caps.push_back({"guest kernel", kCapOk,
                      package->package + " " + package->version + " fetchable with apt (fetched at first use)", "",
                      false});
  } else if (auto k = AnyCachedKernel(cache)) {
    caps.push_back({"guest kernel", kCapOk, k->package + " " + k->version + " cached (apt cannot say if newer)", "", false});
  } else {
    caps.push_back({"guest kernel", kCapMissing, package.message(), "apt-get update", false});
  }
  return caps;
}

}  // namespace lab::hv::qemu
