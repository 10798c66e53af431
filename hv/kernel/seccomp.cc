// The "no namespaces" seccomp filter: built with libseccomp, exported as classic BPF once, and
// installed with the raw seccomp() syscall so children of a multi-threaded process can apply it
// between fork and exec without allocating.
#include "hv/kernel/seccomp.h"

#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

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

Result<std::vector<sock_filter>> Compile() {
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
  LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 0, nullptr));
  LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setns), 0, nullptr));
  for (unsigned long flag : kCloneNewFlags) {
    scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
    LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &cmp));
  }
  LAB_RETURN_IF_ERROR(add(SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0, nullptr));

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

}  // namespace

Result<const NoNestingFilter*> NoNestingFilter::Get() {
  static std::once_flag once;
  static NoNestingFilter filter;
  static Status built;
  std::call_once(once, [] {
    auto code = Compile();
    if (code.ok()) filter.code_ = std::move(*code);
    else built = code.status();
  });
  if (!built.ok()) return built;
  return &filter;
}

bool NoNestingFilter::ChildApply() const {
  sock_fprog prog;
  prog.len = static_cast<unsigned short>(code_.size());
  prog.filter = const_cast<sock_filter*>(code_.data());
  // As root (CAP_SYS_ADMIN) no_new_privs is not needed, and leaving it off keeps set-uid and
  // file capabilities working inside; without the capability the kernel insists on it.
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0) return true;
  if (errno != EACCES) return false;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
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
         vm + " -ExposeVirtualizationExtensions $true; lab file: processor.expose_virtualization_extensions: true)";
}

}  // namespace lab::hv::kernel
