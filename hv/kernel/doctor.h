// What this machine supports, for `lab doctor`: Get-NestedVirtStatus.ps1 for the embedded
// hypervisor.
//
// Each capability is tested for real where a test is cheap: namespaces are unshared in forked
// children, veth/bridge/altname and nftables are made inside a throwaway network namespace (a
// helper thread's, alive only as long as its handle), and overlayfs is mounted in a forked child's
// private mount namespace under a temporary directory in /tmp that is removed afterwards. Nothing
// is ever made in the machine's own namespaces, and the calling process never changes namespace.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lab::hv::kernel {

/// One line of the doctor's table.
struct Capability {
  std::string name;    // "network namespace", "cgroup memory", "/dev/kvm", ...
  std::string state;   // "ok", "missing" or "n/a"; /dev/kvm: "usable", "unusable" or "missing"
  std::string detail;  // what was found, or why it failed
  std::string fix;     // when missing: the package, kernel option, sysctl or "run as root"
  bool required = false;  // partitions cannot run without it
};

inline constexpr const char* kCapOk = "ok";
inline constexpr const char* kCapMissing = "missing";
inline constexpr const char* kCapNotApplicable = "n/a";
/// /dev/kvm runs a standard 64-bit guest (long mode with paging) to HLT.
inline constexpr const char* kCapUsable = "usable";
/// /dev/kvm is there but a standard guest cannot run under it (the detail says why).
inline constexpr const char* kCapUnusable = "unusable";

// ---- /dev/kvm: does a standard guest run under it? ----
//
// A device node that opens proves little: a paravirtual KVM (as in some cloud sandboxes) runs raw
// real-mode code but never completes a standard guest's switch to protected and long mode. So the
// probe runs three tiny guests, each in a forked child that the doctor kills after a timeout: one
// in real mode; one entered directly in 64-bit long mode with 4-level paging (CR0.PG|PE, CR4.PAE,
// EFER.LME|LMA set through KVM_SET_SREGS); and one that boots as every standard guest does,
// switching itself from real mode to protected mode and then long mode (LGDT, CR0.PE, a far jump,
// CR4.PAE, CR3, EFER.LME by WRMSR, CR0.PG, a far jump to 64-bit code). Each stores a marker and
// halts; it passes only when KVM_RUN ends in HLT and the marker is in guest memory.

/// How one tiny guest's run ended.
struct KvmRun {
  enum class End { kNotRun, kHalted, kTimedOut, kFailed };
  End end = End::kNotRun;
  std::string detail;  // kFailed: the step that failed and why
};

/// What /dev/kvm did when probed: the facts its capability is judged from (JudgeKvm).
struct KvmProbe {
  bool present = false;    // /dev/kvm exists
  int open_errno = 0;      // nonzero: it exists but could not be opened
  int timeout_ms = 0;      // how long each guest had
  int cpuid_errno = 0;     // nonzero: KVM_GET_SUPPORTED_CPUID was refused (no CPUID for a guest)
  KvmRun real_mode;        // raw real-mode code: mov to memory, hlt
  KvmRun long_mode;        // 64-bit code under 4-level paging: movabs to memory, hlt
  KvmRun boot;             // real -> protected -> long mode by the guest itself, then the same
};

/// A guest's memory and the registers it starts with: plain data, built without KVM.
struct GuestImage {
  std::vector<uint8_t> memory;  // guest-physical 0 .. size
  bool long_mode = false;
  uint64_t rip = 0;
  uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
  uint64_t gdt_base = 0;
  uint16_t gdt_limit = 0;
  uint16_t code_selector = 0, data_selector = 0;
  uint64_t marker_address = 0;  // where the guest stores its marker before HLT
  std::vector<uint8_t> marker;  // what it stores there
};

/// Real mode: `mov byte [marker], 0x2a; hlt` at 0x8000, segments at base 0.
GuestImage RealModeGuest();
/// Long mode: a GDT (null, 64-bit code, data), PML4 -> PDPT -> PD whose first entry maps the first
/// 2 MiB identity as one large page, CR0.PE|PG, CR4.PAE, EFER.LME|LMA, and at 0x8000
/// `movabs rax, MARKER; movabs [marker], rax; hlt`.
GuestImage LongModeGuest();

/// Real mode at 0x8000 that switches itself to protected mode and long mode (the GDT and page
/// tables of LongModeGuest), then runs LongModeGuest's code: what a standard guest's boot does.
GuestImage BootingGuest();

/// Probes /dev/kvm: the three guests, each given `timeout_ms` before its process is killed. Never fails.
KvmProbe ProbeKvm(int timeout_ms);

/// The /dev/kvm line of the doctor from what the probe saw: "usable" only when the long-mode guest
/// and the booting guest halted; "unusable" with the reason (and that QEMU will use TCG instead) when the device is there
/// but cannot run it; "missing" when there is no /dev/kvm.
Capability JudgeKvm(const KvmProbe& probe);

/// "intel", "amd" or "" from /proc/cpuinfo's vendor_id.
std::string CpuVendor(const std::string& cpuinfo);

/// Probes every capability, in a fixed order. `init_path` is the lab-init binary partitions run
/// (see cli/common.cc). Never fails: a probe that cannot run reports its capability missing.
std::vector<Capability> Diagnose(const std::string& init_path);

/// True when no required capability is missing (optional ones may be).
bool AllRequiredPresent(const std::vector<Capability>& caps);

}  // namespace lab::hv::kernel
