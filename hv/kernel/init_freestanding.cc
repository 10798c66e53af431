// lab-init without a C library: pid 1 of a partition's PID namespace.
//
// The same contract as init_main.cc (the portable version, built where this file has no system
// call shim): it keeps the namespaces alive, reaps every orphan (processes started by
// SpawnInPartition are adopted by it) and exits on SIGTERM or SIGINT. Everything else is ignored.
//
// Why without libc: every partition start executes it, and on a virtual machine where page
// tables are costly, exec of a static glibc binary took 0.9-1.2 ms here against 0.3 ms for a
// binary of two pages (bench/README.md); its memory is a few pages instead of 80 KiB.
//
// How the signals reach it: pid 1 of a PID namespace drops the signals it has no handler for,
// but only unblocked ones; a blocked signal is always queued (kernel/signal.c, sig_ignored), so
// init blocks every signal first and takes them synchronously with rt_sigtimedwait. SIGCHLD
// keeps its default action, so exited children stay zombies until they are reaped here.
//
// Built with -nostdlib -ffreestanding (hv/CMakeLists.txt): no globals that need constructors, no
// calls the compiler could turn into memset or memcpy.

namespace {

// Linux system call numbers and constants, the same on x86_64 and aarch64 where noted.
#if defined(__x86_64__)
constexpr long kRtSigprocmask = 14;
constexpr long kWait4 = 61;
constexpr long kRtSigtimedwait = 128;
constexpr long kExitGroup = 231;

long Syscall4(long n, long a, long b, long c, long d) {
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
  return ret;
}
#elif defined(__aarch64__)
constexpr long kRtSigprocmask = 135;
constexpr long kWait4 = 260;
constexpr long kRtSigtimedwait = 137;
constexpr long kExitGroup = 94;

long Syscall4(long n, long a, long b, long c, long d) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
}
#else
#error "no system call shim for this architecture: build hv/kernel/init_main.cc instead"
#endif

constexpr long kSigBlock = 0;
constexpr long kWnohang = 1;
constexpr int kSigint = 2;
constexpr int kSigterm = 15;
constexpr int kSigchld = 17;
constexpr long kSigsetBytes = 8;  // the kernel's sigset_t: 64 signals

constexpr unsigned long Bit(int sig) { return 1ul << (sig - 1); }

}  // namespace

extern "C" [[noreturn]] void LabInitMain() {
  const unsigned long all = ~0ul;
  Syscall4(kRtSigprocmask, kSigBlock, reinterpret_cast<long>(&all), 0, kSigsetBytes);
  const unsigned long wanted = Bit(kSigterm) | Bit(kSigint) | Bit(kSigchld);
  // The kernel writes a siginfo_t (128 bytes) here.
  unsigned long info[16];
  for (;;) {
    // Reap first: children may have exited before we started waiting for SIGCHLD.
    while (Syscall4(kWait4, -1, 0, kWnohang, 0) > 0) {
    }
    long sig = Syscall4(kRtSigtimedwait, reinterpret_cast<long>(&wanted), reinterpret_cast<long>(info), 0,
                        kSigsetBytes);
    if (sig == kSigterm || sig == kSigint) Syscall4(kExitGroup, 0, 0, 0, 0);
  }
}

// The entry point: the kernel leaves the stack pointer 16-byte aligned at _start, where a C++
// function expects it 8 bytes off (as after a call), so a call puts it right.
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n  xor %ebp, %ebp\n  and $-16, %rsp\n  call LabInitMain\n  hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n  mov x29, #0\n  mov x30, #0\n  bl LabInitMain\n  brk #0\n");
#endif
