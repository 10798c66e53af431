// The "no namespaces" seccomp filter: built with libseccomp, exported as classic BPF once, and
// installed with the raw seccomp() syscall so children of a multi-threaded process can apply it
// between fork and exec without allocating.
#include "hv/kernel/seccomp.h"

#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "base/quote.h"
#include "base/text.h"
#include "hv/kernel/partition_internal.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

namespace lab::hv::kernel {
namespace {

// clone(2) cannot ask for a time namespace: bit 0x80 of its flags is part of the exit signal
// byte. Only unshare and clone3 can, and both are refused as a whole.
constexpr unsigned long kCloneNewFlags[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
                                            CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};

// The deny list: what container runtimes refuse by default, and what a VM's administrator never
// needs, because in a partition the kernel is the machine's (see DeniedSyscalls in seccomp.h).
const std::vector<const char*> kDenied = {
    // kernel modules
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    // the machine's clock
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "stime",
    // rebooting the machine, or loading another kernel into it
    "reboot", "kexec_load", "kexec_file_load",
    // raw port I/O and the PCI configuration space
    "iopl", "ioperm", "pciconfig_read", "pciconfig_write", "pciconfig_iobase",
    // files of the machine by handle, past the partition's root (the "shocker" escape)
    "open_by_handle_at",
    // the machine's swap, process accounting, kernel log, quotas and keyrings
    "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
    "add_key", "request_key", "keyctl",
    // kernel programs, performance counters and the machine's page faults
    "bpf", "perf_event_open", "userfaultfd",
    // obsolete calls nobody needs
    "uselib", "vhangup", "nfsservctl", "_sysctl", "sysfs", "ustat"};

// The capabilities of a VM's administrator: its own users, files and processes; network
// administration, raw sockets and low ports in its own network namespace. Not: modules, the
// clock, reboot, raw I/O, mknod (devices of the machine), open_by_handle_at (DAC_READ_SEARCH),
// ptrace beyond its uid, the audit and MAC configuration, resource limits of the machine.
constexpr int kVmAdminCapList[] = {CAP_CHOWN,          CAP_DAC_OVERRIDE, CAP_FOWNER,        CAP_FSETID,
                                   CAP_KILL,           CAP_SETGID,       CAP_SETUID,        CAP_SETPCAP,
                                   CAP_NET_BIND_SERVICE, CAP_NET_BROADCAST, CAP_NET_ADMIN, CAP_NET_RAW,
                                   CAP_SYS_CHROOT,     CAP_AUDIT_WRITE,  CAP_SETFCAP};

Result<std::vector<sock_filter>> Compile(bool deny_list, bool no_nesting) {
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Status::Error("seccomp: init failed");
  struct Release {
    scmp_filter_ctx c;
    ~Release() { ::seccomp_release(c); }
  } release{ctx};
  auto add = [&](uint32_t action, int nr, unsigned n, const scmp_arg_cmp* cmp) -> Status {
    int rc = ::seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (rc != 0) return Status::Error("seccomp: add rule for syscall " + std::to_string(nr) + ": " + ErrnoText(-rc));
    return Status::Ok();
  };
  if (deny_list) {
    for (const char* name : kDenied) {
      int nr = ::seccomp_syscall_resolve_name(name);
      if (nr == __NR_SCMP_ERROR) continue;  // not a syscall of this architecture
      LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), nr, 0, nullptr));
    }
  }
  if (no_nesting) {
    LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 0, nullptr));
    LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setns), 0, nullptr));
    for (unsigned long flag : kCloneNewFlags) {
      scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
      LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &cmp));
    }
    LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, nullptr));
  }

  // libseccomp 2.5 exports only to a file descriptor.
  UniqueFd mem(static_cast<int>(::syscall(SYS_memfd_create, "lab-seccomp", MFD_CLOEXEC)));
  if (!mem.valid()) return ErrnoStatus("seccomp: memfd_create");
  int rc = ::seccomp_export_bpf(ctx, mem.get());
  if (rc != 0) return Status::Error("seccomp: export BPF: " + ErrnoText(-rc));
  off_t size = ::lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)
    return Status::Error("seccomp: exported program has a bad size");
  std::vector<sock_filter> code(static_cast<size_t>(size) / sizeof(sock_filter));
  char* out = reinterpret_cast<char*>(code.data());
  for (off_t off = 0; off < size;) {
    ssize_t n = ::pread(mem.get(), out + off, static_cast<size_t>(size - off), off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoStatus("seccomp: read exported program");
    off += n;
  }
  return code;
}

// Installs a classic BPF program on the calling thread; async-signal-safe.
bool InstallFilter(const std::vector<sock_filter>& code) {
  sock_fprog prog;
  prog.len = static_cast<unsigned short>(code.size());
  prog.filter = const_cast<sock_filter*>(code.data());
  // As root (CAP_SYS_ADMIN) no_new_privs is not needed, and leaving it off keeps set-uid and
  // file capabilities working inside; without the capability the kernel insists on it.
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0) return true;
  if (errno != EACCES) return false;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

// The highest capability this kernel knows (it may know more than our headers).
int LastCapability() {
  auto text = ReadFile("/proc/sys/kernel/cap_last_cap");
  int last = text ? std::atoi(Trim(*text).c_str()) : 0;
  return last > 0 && last < 64 ? last : CAP_LAST_CAP;
}

}  // namespace

Result<const NoNestingFilter*> NoNestingFilter::Get() {
  static std::once_flag once;
  static NoNestingFilter filter;
  static Status built;
  std::call_once(once, [] {
    auto code = Compile(false, true);
    if (code.ok()) filter.code_ = std::move(*code);
    else built = code.status();
  });
  if (!built.ok()) return built;
  return &filter;
}

bool NoNestingFilter::ChildApply() const { return InstallFilter(code_); }

uint64_t VmAdminCapabilities() {
  uint64_t caps = 0;
  for (int c : kVmAdminCapList) caps |= uint64_t{1} << c;
  return caps;
}

const std::vector<const char*>& DeniedSyscalls() { return kDenied; }

Result<const Confinement*> Confinement::Get(bool nesting) {
  static std::once_flag once;
  static Confinement confined[2];  // [0] may not nest, [1] may
  static Status built;
  std::call_once(once, [] {
    for (int n = 0; n < 2 && built.ok(); ++n) {
      auto code = Compile(true, n == 0);
      if (!code.ok()) {
        built = code.status();
        break;
      }
      confined[n].code_ = std::move(*code);
      confined[n].keep_ = VmAdminCapabilities() | (n == 1 ? uint64_t{1} << CAP_SYS_ADMIN : 0);
      confined[n].last_cap_ = LastCapability();
    }
  });
  if (!built.ok()) return built;
  return &confined[nesting ? 1 : 0];
}

bool Confinement::ChildApply() const {
  for (int c = 0; c <= last_cap_; ++c)
    if (!((keep_ >> c) & 1) && ::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) return false;
  if (!InstallFilter(code_)) return false;
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return false;
  // Keep what we have of the kept set (capset cannot add to the permitted set).
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  for (int i = 0; i < 2; ++i) {
    auto keep = static_cast<uint32_t>(keep_ >> (32 * i));
    data[i].permitted &= keep;
    data[i].effective = data[i].permitted;
    data[i].inheritable = 0;
  }
  return ::syscall(SYS_capset, &header, data) == 0;
}

Result<const Confinement*> EntryConfinement(const std::string& run_dir) {
  return Confinement::Get(PartitionAllowsNesting(run_dir));
}

bool PartitionAllowsNesting(const std::string& run_dir) {
  auto text = ReadFile(run_dir + "/" + kNestingFile);
  return !text || Trim(*text) != "0";
}

Result<const NoNestingFilter*> EntryFilter(const std::string& run_dir) {
  if (PartitionAllowsNesting(run_dir)) return static_cast<const NoNestingFilter*>(nullptr);
  return NoNestingFilter::Get();
}

bool NestingBlocked() {
  if (::geteuid() != 0) return false;
  pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) ::_exit(::unshare(CLONE_NEWNET) == 0 ? 0 : errno == EPERM ? 1 : 2);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 1;
}

std::string NotExposedMessage(const std::string& vm) {
  return "VM '" + vm + "' cannot run nested VMs: its virtualization extensions are not exposed (Set-VMProcessor -VMName " +
         PsArg(vm) + " -ExposeVirtualizationExtensions $true; lab file: processor.expose_virtualization_extensions: true)";
}

}  // namespace lab::hv::kernel
