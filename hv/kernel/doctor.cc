// `lab doctor`'s probes (see doctor.h).
//
// Probes that need a namespace of their own run in a forked child (namespaces, overlayfs, seccomp)
// or in a throwaway network namespace made by a helper thread (links, nftables). The child runs
// only async-signal-safe code on data prepared before the fork: the caller may have threads.
#include "hv/kernel/doctor.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#if defined(__x86_64__)
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#endif
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "base/text.h"
#include "hv/kernel/netlink.h"
#include "hv/kernel/partition.h"
#include "hv/kernel/partition_internal.h"

namespace lab::hv::kernel {
namespace {

constexpr int kChildTimeoutMs = 5000;
// A tiny guest halts in microseconds; one still running after this hangs.
constexpr int kKvmTimeoutMs = 2000;
constexpr const char* kRunAsRoot = "run as root (sudo lab doctor)";

bool IsRoot() { return ::geteuid() == 0; }

Capability Ok(std::string name, std::string detail, bool required) {
  return {std::move(name), kCapOk, std::move(detail), "", required};
}
Capability Missing(std::string name, std::string detail, std::string fix, bool required) {
  return {std::move(name), kCapMissing, std::move(detail), std::move(fix), required};
}

// The fix for a probe that failed with `err`: without root, permission errors mean "run as root";
// otherwise the kernel (or sysctl) fix of the capability.
std::string FixFor(int err, const std::string& kernel_fix) {
  if (!IsRoot() && (err == EPERM || err == EACCES || err == 0)) return kRunAsRoot;
  return kernel_fix;
}

// ---- forked probes ----

// What a probe child reports on its pipe: the step that failed (empty = success) and errno.
struct ProbeReport {
  int32_t err = 0;
  char step[96] = {};
};

struct ChildOutcome {
  bool ok = false;
  int err = 0;
  std::string failure;     // "STEP: strerror" when not ok
  bool timed_out = false;  // the child did not answer in time and was killed
};

// Runs `body` in a forked child. `body` returns nullptr on success, or the name of the step that
// failed with errno set. It must be async-signal-safe (no allocation, no locks).
// A step with errno 0 is reported as the step alone.
ChildOutcome RunProbeChild(const std::function<const char*()>& body, int timeout_ms = kChildTimeoutMs) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {false, errno, "pipe: " + ErrnoText(errno)};
  UniqueFd rd(fds[0]), wr(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return {false, errno, "fork: " + ErrnoText(errno)};
  if (pid == 0) {
    const char* step = body();
    ProbeReport r;
    r.err = step ? errno : 0;
    if (step)
      for (size_t i = 0; step[i] && i + 1 < sizeof r.step; ++i) r.step[i] = step[i];
    (void)!::write(wr.get(), &r, sizeof r);
    ::_exit(step ? 1 : 0);
  }
  wr.Reset();
  ProbeReport r;
  bool got = false, timed_out = false;
  pollfd p{rd.get(), POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) > 0) {
    got = ::read(rd.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r);
  } else {
    timed_out = true;
    ::kill(pid, SIGKILL);  // our own child, stuck
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return {false, ETIMEDOUT, "the probe process did not answer", true};
  if (!got) {
    if (WIFSIGNALED(status))
      return {false, 0, std::string("the probe process died of signal ") + std::to_string(WTERMSIG(status))};
    return {false, 0, "the probe process ended without a report"};
  }
  if (r.step[0] != '\0')
    return {false, r.err, std::string(r.step) + (r.err ? ": " + ErrnoText(r.err) : std::string())};
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return {false, 0, "the probe process failed"};
  return {true, 0, ""};
}

struct NamespaceKind {
  const char* name;      // "network"
  int flag;              // CLONE_NEWNET
  const char* step;      // "unshare(CLONE_NEWNET)"
  const char* option;    // CONFIG_NET_NS
  const char* sysctl;    // user.max_net_namespaces
  bool required;
};

const NamespaceKind kNamespaces[] = {
    {"network", CLONE_NEWNET, "unshare(CLONE_NEWNET)", "CONFIG_NET_NS", "user.max_net_namespaces", true},
    {"mount", CLONE_NEWNS, "unshare(CLONE_NEWNS)", "CONFIG_NAMESPACES", "user.max_mnt_namespaces", true},
    {"pid", CLONE_NEWPID, "unshare(CLONE_NEWPID)", "CONFIG_PID_NS", "user.max_pid_namespaces", true},
    {"uts", CLONE_NEWUTS, "unshare(CLONE_NEWUTS)", "CONFIG_UTS_NS", "user.max_uts_namespaces", true},
    {"ipc", CLONE_NEWIPC, "unshare(CLONE_NEWIPC)", "CONFIG_IPC_NS", "user.max_ipc_namespaces", true},
    // Partitions do not use user namespaces; reported for completeness.
    {"user", CLONE_NEWUSER, "unshare(CLONE_NEWUSER)", "CONFIG_USER_NS", "user.max_user_namespaces", false},
};

const char* NamespaceChild(const NamespaceKind& ns) {
  if (::unshare(ns.flag) != 0) return ns.step;
  switch (ns.flag) {
    case CLONE_NEWNS:
      // What partitions do first: their mounts must not propagate back.
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return "make / private";
      break;
    case CLONE_NEWUTS:
      if (::sethostname("lab-doctor", 10) != 0) return "sethostname";
      break;
    case CLONE_NEWPID: {
      // The namespace is real only once a child is its pid 1 (as lab-init is).
      pid_t pid = ::fork();
      if (pid < 0) return "fork into the new PID namespace";
      if (pid == 0) ::_exit(::getpid() == 1 ? 0 : 1);
      int status = 0;
      if (::waitpid(pid, &status, 0) < 0) return "wait for pid 1";
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = ESRCH;
        return "the first process of the new PID namespace is not pid 1";
      }
      break;
    }
    default:
      break;
  }
  return nullptr;
}

Capability ProbeNamespace(const NamespaceKind& ns) {
  std::string name = std::string(ns.name) + " namespace";
  ChildOutcome out = RunProbeChild([&ns] { return NamespaceChild(ns); });
  if (out.ok) {
    std::string detail = std::string(ns.step) + " in a child process";
    if (ns.flag == CLONE_NEWPID) detail += "; its first child is pid 1";
    if (ns.flag == CLONE_NEWUTS) detail += "; hostname set inside";
    if (ns.flag == CLONE_NEWNS) detail += "; / made private inside";
    if (!ns.required) detail += " (partitions do not use it)";
    return Ok(name, detail, ns.required);
  }
  std::string fix = out.err == ENOSPC ? std::string("sysctl -w ") + ns.sysctl + "=1024"
                                      : std::string("kernel option ") + ns.option;
  return Missing(name, out.failure, FixFor(out.err, fix), ns.required);
}

// ---- cgroups ----

std::vector<Capability> ProbeCgroups() {
  std::vector<Capability> caps;
  const CgroupSetup& s = Cgroups();
  std::set<std::string> v2_controllers;
  if (s.v2) {
    if (auto text = ReadFile(s.v2_root + "/cgroup.controllers")) {
      std::istringstream in(*text);
      for (std::string c; in >> c;) v2_controllers.insert(c);
    }
  }
  if (s.v2) {
    caps.push_back(Ok("cgroups", "v2 (unified) at " + s.v2_root, true));
  } else if (!s.v1.empty()) {
    caps.push_back(Ok("cgroups", s.Describe() + ", v1/hybrid layout", true));
  } else {
    caps.push_back(Missing("cgroups", "no cgroup v2 and no v1 controller is mounted",
                           "kernel option CONFIG_CGROUPS; mount cgroup2 on /sys/fs/cgroup", true));
  }

  struct Controller {
    const char* name;
    const char* v1_file;  // a file the v1 hierarchy's root has when the feature partitions use works
    const char* use;
    const char* option;
    bool required;
  };
  const Controller controllers[] = {
      {"memory", "memory.limit_in_bytes", "memory limit = startup memory", "CONFIG_MEMCG", true},
      {"cpu", "cpu.cfs_quota_us", "CPU quota = processor count", "CONFIG_CGROUP_SCHED and CONFIG_CFS_BANDWIDTH",
       true},
      {"pids", nullptr, "process limit", "CONFIG_CGROUP_PIDS", false},
      {"freezer", nullptr, "pause (save) a partition", "CONFIG_CGROUP_FREEZER", false},
  };
  for (const Controller& c : controllers) {
    std::string name = std::string("cgroup ") + c.name;
    std::string fix = std::string("kernel option ") + c.option;
    if (s.v2) {
      // cgroup v2's freezer is built in (cgroup.freeze), not a listed controller.
      bool present = std::string(c.name) == "freezer" || v2_controllers.count(c.name) > 0;
      if (present)
        caps.push_back(Ok(name, std::string("v2 controller (") + c.use + ")", c.required));
      else
        caps.push_back(Missing(name, std::string("not in ") + s.v2_root + "/cgroup.controllers", fix, c.required));
      continue;
    }
    std::string mount_point;
    for (const auto& [controller, mp] : s.v1)
      if (controller == c.name) mount_point = mp;
    if (mount_point.empty()) {
      caps.push_back(Missing(name, "no v1 hierarchy has it mounted",
                             fix + "; mount -t cgroup -o " + c.name + " cgroup /sys/fs/cgroup/" + c.name,
                             c.required));
      continue;
    }
    struct stat st;
    if (c.v1_file && ::stat((mount_point + "/" + c.v1_file).c_str(), &st) != 0) {
      caps.push_back(Missing(name, mount_point + " has no " + c.v1_file, fix, c.required));
      continue;
    }
    caps.push_back(Ok(name, "v1 at " + mount_point + " (" + c.use + ")", c.required));
  }
  return caps;
}

// ---- links and nftables in a throwaway network namespace ----

struct Throwaway {
  Result<NetNs> ns = Status::Error("not made");
  int err = 0;
};

// A fresh network namespace that lives as long as the returned handle: a helper thread unshares
// its own network namespace and opens it, so no thread of ours ever leaves the machine's.
Throwaway MakeThrowawayNetNs() {
  Throwaway t;
  std::thread([&t] {
    if (::unshare(CLONE_NEWNET) != 0) {
      t.err = errno;
      t.ns = ErrnoStatus("unshare(CLONE_NEWNET) in a helper thread");
      return;
    }
    t.ns = NetNs::Current();
  }).join();
  return t;
}

constexpr const char* kBridge = "labdoc-br";
constexpr const char* kVeth = "labdoc-v0";
constexpr const char* kVethPeer = "labdoc-v1";
constexpr const char* kAltName = "vEthernet(doctor)";

Status MakeSwitch(const NetNs& ns) {
  auto nl = Netlink::In(ns);
  if (!nl.ok()) return nl.status();
  LAB_RETURN_IF_ERROR(nl->CreateBridge(kBridge));
  LAB_RETURN_IF_ERROR(nl->AddAltName(kBridge, kAltName));
  LAB_RETURN_IF_ERROR(nl->CreateVeth(kVeth, nullptr, kVethPeer, nullptr));
  LAB_RETURN_IF_ERROR(nl->SetMaster(kVeth, kBridge));
  LAB_RETURN_IF_ERROR(nl->SetUp(kBridge));
  LAB_RETURN_IF_ERROR(nl->SetUp(kVeth));
  // Read back what the kernel made: the bridge by its altname, the veth as its port.
  auto bridge = nl->FindLink(kAltName);
  if (!bridge.ok()) return bridge.status();
  auto port = nl->FindLink(kVeth);
  if (!port.ok()) return port.status();
  if (!*bridge || (*bridge)->kind != "bridge") return Status::Error(std::string("bridge not found by altname ") + kAltName);
  if (!*port || (*port)->kind != "veth" || (*port)->master != (*bridge)->index)
    return Status::Error(std::string("veth ") + kVeth + " is not a port of " + kBridge);
  return Status::Ok();
}

std::vector<Capability> ProbeNetworking() {
  const std::string kLinks = "veth + bridge";
  const std::string kNat = "nftables nat";
  const std::string kFilter = "nftables bridge filter";
  const std::string kLinksFix = "kernel options CONFIG_VETH and CONFIG_BRIDGE (modprobe veth bridge)";
  const std::string kNatFix =
      "kernel options CONFIG_NF_TABLES, CONFIG_NFT_NAT and CONFIG_NFT_MASQ (modprobe nft_nat nft_masq)";
  const std::string kFilterFix = "kernel option CONFIG_NF_TABLES_BRIDGE (modprobe nf_tables_bridge)";
  Throwaway t = MakeThrowawayNetNs();
  if (!t.ns.ok()) {
    std::string why = t.ns.message();
    std::string fix = FixFor(t.err, "kernel option CONFIG_NET_NS");
    return {Missing(kLinks, why, fix, true), Missing(kNat, why, fix, true), Missing(kFilter, why, fix, false)};
  }
  const NetNs& ns = *t.ns;
  std::vector<Capability> caps;
  if (Status st = MakeSwitch(ns); st.ok())
    caps.push_back(Ok(kLinks,
                      std::string("bridge with altname ") + kAltName + " and a veth port, in a throwaway network namespace",
                      true));
  else
    caps.push_back(Missing(kLinks, st.message(), IsRoot() ? kLinksFix : kRunAsRoot, true));

  // New-NetNat: forwarding on and a masquerade of the prefix, as the NAT resource does.
  Status nat = WriteNetSysctl(ns, "ipv4/ip_forward", "1");
  if (nat.ok())
    nat = NftApply(ns,
                   "table ip lab_doctor_nat {\n  chain postrouting {\n"
                   "    type nat hook postrouting priority srcnat; policy accept;\n"
                   "    ip saddr 192.168.100.0/24 ip daddr != 192.168.100.0/24 masquerade\n  }\n}\n");
  if (nat.ok())
    caps.push_back(Ok(kNat, "ip_forward and a masquerade table, in a throwaway network namespace", true));
  else
    caps.push_back(Missing(kNat, nat.message(), IsRoot() ? kNatFix : kRunAsRoot, true));

  // MAC address spoofing off: a bridge filter dropping frames whose source MAC is not the adapter's.
  Status filter = NftApply(ns,
                           "table bridge lab_doctor_filter {\n  chain forward {\n"
                           "    type filter hook forward priority filter; policy accept;\n"
                           "    iifname \"labdoc-v0\" ether saddr != 02:00:00:00:00:01 drop\n  }\n}\n");
  if (filter.ok())
    caps.push_back(Ok(kFilter, "a MAC filter table (mac_address_spoofing: false), in a throwaway network namespace",
                      false));
  else
    caps.push_back(Missing(kFilter, filter.message(), IsRoot() ? kFilterFix : kRunAsRoot, false));
  return caps;
  // `ns` closes here: the namespace, its links and tables go with it.
}

// ---- seccomp ----

// The filter a VM without exposed virtualization extensions gets, in miniature: namespace
// creation fails with EPERM. Exported to BPF before the fork so the child only makes syscalls.
Result<std::vector<sock_filter>> NoUnshareFilter() {
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Status::Error("seccomp_init failed");
  std::vector<sock_filter> prog;
  int rc = ::seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 0);
  int fds[2] = {-1, -1};
  if (rc == 0 && ::pipe2(fds, O_CLOEXEC) != 0) rc = -errno;
  UniqueFd rd(fds[0]), wr(fds[1]);
  if (rc == 0) rc = ::seccomp_export_bpf(ctx, wr.get());
  ::seccomp_release(ctx);
  if (rc != 0) return Status::Error("build a seccomp filter: " + ErrnoText(-rc));
  wr.Reset();
  std::string bytes;
  char buf[4096];
  for (ssize_t n; (n = ::read(rd.get(), buf, sizeof buf)) > 0;) bytes.append(buf, n);
  prog.resize(bytes.size() / sizeof(sock_filter));
  std::memcpy(prog.data(), bytes.data(), prog.size() * sizeof(sock_filter));
  if (prog.empty()) return Status::Error("build a seccomp filter: empty program");
  return prog;
}

Capability ProbeSeccomp() {
  const std::string name = "seccomp";
  const std::string fix = "kernel options CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER";
  std::string mode;
  if (auto status = ReadFile("/proc/self/status"))
    for (const std::string& line : Split(*status, '\n'))
      if (line.rfind("Seccomp:", 0) == 0) mode = Trim(line.substr(8));
  if (mode.empty()) return Missing(name, "no Seccomp field in /proc/self/status", fix, false);
  int api = ::seccomp_api_get();
  if (api <= 0) return Missing(name, "libseccomp reports no kernel support (seccomp_api_get() = 0)", fix, false);
  auto prog = NoUnshareFilter();
  if (!prog.ok()) return Missing(name, prog.message(), "apt-get install libseccomp2", false);
  sock_fprog fprog{static_cast<unsigned short>(prog->size()), prog->data()};
  ChildOutcome out = RunProbeChild([&fprog]() -> const char* {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return "prctl(PR_SET_NO_NEW_PRIVS)";
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) return "load a seccomp filter";
    if (::unshare(CLONE_NEWUTS) == 0 || errno != EPERM) {
      errno = EINVAL;
      return "unshare was not blocked by the filter";
    }
    return nullptr;
  });
  if (!out.ok) return Missing(name, out.failure, fix, false);
  return Ok(name, "a filter blocking unshare works in a child (libseccomp API level " + std::to_string(api) + ")",
            false);
}

// ---- overlayfs ----

bool ListedFilesystem(const std::string& fs) {
  auto text = ReadFile("/proc/filesystems");
  if (!text) return false;
  for (const std::string& line : Split(*text, '\n'))
    if (line.ends_with("\t" + fs)) return true;  // "nodev\toverlay"
  return false;
}

Capability ProbeOverlay() {
  const std::string name = "overlayfs";
  const std::string fix = "kernel option CONFIG_OVERLAY_FS (modprobe overlay)";
  if (!ListedFilesystem("overlay"))
    return Missing(name, "overlay is not in /proc/filesystems", IsRoot() ? fix : kRunAsRoot, true);
  char tmpl[] = "/tmp/lab-doctor-XXXXXX";
  if (!::mkdtemp(tmpl)) return Missing(name, "mkdtemp in /tmp: " + ErrnoText(errno), "make /tmp writable", true);
  const std::string dir = tmpl;
  const std::string lower = dir + "/lower", upper = dir + "/upper", work = dir + "/work", merged = dir + "/merged";
  Status prep = Status::Ok();
  for (const std::string& d : {lower, upper, work, merged})
    if (prep.ok()) prep = MakeDirs(d);
  if (prep.ok()) prep = WriteWholeFile(lower + "/disk", "base\n");
  ChildOutcome out{false, 0, prep.message()};
  if (prep.ok()) {
    const std::string opts = "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work;
    const std::string file = merged + "/disk";
    out = RunProbeChild([&]() -> const char* {
      if (::unshare(CLONE_NEWNS) != 0) return "unshare(CLONE_NEWNS)";
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return "make / private";
      if (::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()) != 0) return "mount overlay";
      // A write through the overlay must land in the writable layer (the differencing disk).
      int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
      if (fd < 0) return "open a lower file for writing through the overlay";
      bool wrote = ::write(fd, "changed\n", 8) == 8;
      ::close(fd);
      if (!wrote) return "write through the overlay";
      if (::umount2(merged.c_str(), 0) != 0) return "unmount the overlay";
      return nullptr;
    });
  }
  struct stat st;
  bool copied_up = out.ok && ::stat((upper + "/disk").c_str(), &st) == 0;
  Status removed = RemoveTree(dir);
  if (!out.ok) return Missing(name, out.failure, FixFor(out.err, fix), true);
  if (!copied_up) return Missing(name, "a write through the overlay did not reach the upper layer", fix, true);
  std::string detail = "mounted in a child's private mount namespace; a write reached the upper layer";
  if (!removed.ok()) detail += " (cleanup: " + removed.message() + ")";
  return Ok(name, detail, true);
}

// ---- /dev/kvm: a standard guest under KVM_RUN ----

constexpr const char* kKvmName = "/dev/kvm";
constexpr uint64_t kGuestMemory = 2u << 20;  // one 2 MiB large page, identity mapped
constexpr uint64_t kGdt = 0x500, kGdtr = 0x600, kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kCode = 0x8000,
                   kMarkerAt = 0x9000;
constexpr uint64_t kMarker = 0x45444f4d474e4f4cull;  // "LONGMODE" in memory

// GDT: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18); and 4-level paging whose PD's
// first entry maps the first 2 MiB identity as one large page.
void PutTables(GuestImage& g) {
  auto put64 = [&g](uint64_t at, uint64_t v) { std::memcpy(&g.memory[at], &v, sizeof v); };
  put64(kGdt + 0x00, 0);
  put64(kGdt + 0x08, 0x00af9a000000ffffull);
  put64(kGdt + 0x10, 0x00cf92000000ffffull);
  put64(kGdt + 0x18, 0x00cf9a000000ffffull);
  g.gdt_base = kGdt;
  g.gdt_limit = 4 * 8 - 1;
  g.code_selector = 0x08;
  g.data_selector = 0x10;
  // The GDTR image LGDT loads: limit, then base.
  std::memcpy(&g.memory[kGdtr], &g.gdt_limit, 2);
  uint32_t base = kGdt;
  std::memcpy(&g.memory[kGdtr + 2], &base, 4);
  constexpr uint64_t kPresent = 1, kWritable = 2, kLargePage = 0x80;
  put64(kPml4, kPdpt | kPresent | kWritable);
  put64(kPdpt, kPd | kPresent | kWritable);
  put64(kPd, 0 | kPresent | kWritable | kLargePage);
}

// movabs rax, MARKER ; movabs [kMarkerAt], rax ; hlt: instructions that exist only in 64-bit mode.
std::vector<uint8_t> LongModeCode() {
  std::vector<uint8_t> code = {0x48, 0xb8};
  for (int i = 0; i < 8; ++i) code.push_back(uint8_t(kMarker >> (8 * i)));
  code.insert(code.end(), {0x48, 0xa3});
  for (int i = 0; i < 8; ++i) code.push_back(uint8_t(kMarkerAt >> (8 * i)));
  code.push_back(0xf4);
  return code;
}

#if defined(__x86_64__)

// The child's report for a step that ends without an errno: a sentence of its own.
const char* ExitReasonStep(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_SHUTDOWN:
      return "KVM_RUN: the guest shut down (triple fault, KVM_EXIT_SHUTDOWN)";
    case KVM_EXIT_FAIL_ENTRY:
      return "KVM_RUN: the processor refused to enter the guest (KVM_EXIT_FAIL_ENTRY)";
    case KVM_EXIT_INTERNAL_ERROR:
      return "KVM_RUN: KVM could not emulate the guest (KVM_EXIT_INTERNAL_ERROR)";
    case KVM_EXIT_IO:
      return "KVM_RUN: the guest did port I/O it was not given (KVM_EXIT_IO)";
    case KVM_EXIT_MMIO:
      return "KVM_RUN: the guest touched memory outside its RAM (KVM_EXIT_MMIO)";
    default:
      return "KVM_RUN: the guest stopped for another reason than HLT";
  }
}

// Room for KVM_GET_SUPPORTED_CPUID, allocated before the fork.
struct CpuidBuffer {
  static constexpr uint32_t kEntries = 256;
  alignas(kvm_cpuid2) uint8_t bytes[sizeof(kvm_cpuid2) + kEntries * sizeof(kvm_cpuid_entry2)];
  kvm_cpuid2* get() { return reinterpret_cast<kvm_cpuid2*>(bytes); }
};

void SetSegment(kvm_segment& seg, uint16_t selector, bool code) {
  seg.base = 0;
  seg.limit = 0xffffffff;
  seg.selector = selector;
  seg.type = code ? 11 : 3;  // execute/read accessed; read/write accessed
  seg.present = 1;
  seg.dpl = 0;
  seg.db = code ? 0 : 1;  // a 64-bit code segment has D clear
  seg.s = 1;
  seg.l = code ? 1 : 0;
  seg.g = 1;
}

// Runs `g` in this (forked) process: only system calls on memory prepared before the fork.
const char* RunGuestChild(const GuestImage& g, CpuidBuffer* cpuid) {
  int kvm = ::open(kKvmName, O_RDWR | O_CLOEXEC);
  if (kvm < 0) return "open /dev/kvm";
  if (::ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
    errno = 0;
    return "KVM_GET_API_VERSION: not the stable API (12)";
  }
  int vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return "KVM_CREATE_VM";
  void* mem = ::mmap(nullptr, g.memory.size(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) return "mmap guest memory";
  auto* bytes = static_cast<uint8_t*>(mem);
  for (size_t i = 0; i < g.memory.size(); ++i) bytes[i] = g.memory[i];
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = g.memory.size();
  region.userspace_addr = reinterpret_cast<uint64_t>(mem);
  if (::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) != 0) return "KVM_SET_USER_MEMORY_REGION";
  int vcpu = ::ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) return "KVM_CREATE_VCPU";
  int run_size = ::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return "KVM_GET_VCPU_MMAP_SIZE";
  void* run_map = ::mmap(nullptr, static_cast<size_t>(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run_map == MAP_FAILED) return "mmap the vCPU's kvm_run";
  auto* run = static_cast<kvm_run*>(run_map);

  kvm_sregs sregs{};
  if (::ioctl(vcpu, KVM_GET_SREGS, &sregs) != 0) return "KVM_GET_SREGS";
  if (g.long_mode) {
    // The vCPU gets the processor's features (LM among them) where KVM lists them; a KVM that
    // does not (a paravirtual one may refuse the list) is tried with its own defaults.
    cpuid->get()->nent = CpuidBuffer::kEntries;
    if (::ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid->get()) == 0 && ::ioctl(vcpu, KVM_SET_CPUID2, cpuid->get()) != 0)
      return "KVM_SET_CPUID2";
    SetSegment(sregs.cs, g.code_selector, true);
    for (kvm_segment* seg : {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss})
      SetSegment(*seg, g.data_selector, false);
    sregs.gdt.base = g.gdt_base;
    sregs.gdt.limit = g.gdt_limit;
    sregs.cr3 = g.cr3;
    sregs.cr4 = g.cr4;
    sregs.cr0 = g.cr0;
    sregs.efer = g.efer;
  } else {
    // Reset state is real mode with CS at 0xf000:fff0; start at our code instead.
    for (kvm_segment* seg : {&sregs.cs, &sregs.ds, &sregs.es, &sregs.ss}) {
      seg->base = 0;
      seg->selector = 0;
    }
  }
  if (::ioctl(vcpu, KVM_SET_SREGS, &sregs) != 0) return "KVM_SET_SREGS";
  kvm_regs regs{};
  regs.rip = g.rip;
  regs.rflags = 2;  // bit 1 is always set
  if (::ioctl(vcpu, KVM_SET_REGS, &regs) != 0) return "KVM_SET_REGS";

  for (;;) {
    if (::ioctl(vcpu, KVM_RUN, 0) != 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return "KVM_RUN";
    }
    if (run->exit_reason == KVM_EXIT_HLT) break;
    errno = 0;
    return ExitReasonStep(run->exit_reason);
  }
  for (size_t i = 0; i < g.marker.size(); ++i) {
    if (bytes[g.marker_address + i] != g.marker[i]) {
      errno = 0;
      return "the guest halted without storing its marker (its code did not run as written)";
    }
  }
  return nullptr;
}

KvmRun RunGuest(const GuestImage& g, int timeout_ms) {
  auto cpuid = std::make_unique<CpuidBuffer>();
  CpuidBuffer* buffer = cpuid.get();
  ChildOutcome out = RunProbeChild([&g, buffer] { return RunGuestChild(g, buffer); }, timeout_ms);
  if (out.ok) return {KvmRun::End::kHalted, ""};
  if (out.timed_out) return {KvmRun::End::kTimedOut, ""};
  return {KvmRun::End::kFailed, out.failure};
}

#endif  // __x86_64__

std::string Seconds(int ms) {
  std::string s = std::to_string(ms / 1000);
  if (ms % 1000) s += "." + std::to_string((ms % 1000) / 100);
  return s + " s";
}

std::string Describe(const KvmRun& run, int timeout_ms) {
  switch (run.end) {
    case KvmRun::End::kHalted:
      return "ran to HLT";
    case KvmRun::End::kTimedOut:
      return "never reached HLT within " + Seconds(timeout_ms) + " (the vCPU hangs)";
    case KvmRun::End::kFailed:
      return "failed: " + run.detail;
    case KvmRun::End::kNotRun:
      break;
  }
  return "was not run";
}

}  // namespace

GuestImage RealModeGuest() {
  GuestImage g;
  g.memory.assign(kGuestMemory, 0);
  g.rip = kCode;
  g.marker_address = kMarkerAt;
  g.marker = {0x2a};
  // mov byte [0x9000], 0x2a ; hlt
  const uint8_t code[] = {0xc6, 0x06, uint8_t(kMarkerAt & 0xff), uint8_t(kMarkerAt >> 8), 0x2a, 0xf4};
  std::memcpy(&g.memory[kCode], code, sizeof code);
  return g;
}

GuestImage LongModeGuest() {
  GuestImage g;
  g.memory.assign(kGuestMemory, 0);
  g.long_mode = true;
  PutTables(g);
  g.cr3 = kPml4;
  g.cr4 = 1u << 5;                                          // PAE
  g.cr0 = (1u << 0) | (1u << 4) | (1u << 5) | (1ull << 31);  // PE, ET, NE, PG
  g.efer = (1u << 8) | (1u << 10);                           // LME, LMA
  g.rip = kCode;
  g.marker_address = kMarkerAt;
  g.marker.resize(8);
  std::memcpy(g.marker.data(), &kMarker, 8);
  std::vector<uint8_t> code = LongModeCode();
  std::memcpy(&g.memory[kCode], code.data(), code.size());
  return g;
}

GuestImage BootingGuest() {
  GuestImage g;
  g.memory.assign(kGuestMemory, 0);
  PutTables(g);
  g.rip = kCode;
  g.marker_address = kMarkerAt;
  g.marker.resize(8);
  std::memcpy(g.marker.data(), &kMarker, 8);
  constexpr uint16_t kPm32 = kCode + 0x40, kLm64 = kCode + 0x80;
  // 16-bit real mode: cli; lgdt [kGdtr]; cr0.PE = 1; jmp 0x18:kPm32.
  const uint8_t real[] = {0xfa,
                          0x0f, 0x01, 0x16, uint8_t(kGdtr & 0xff), uint8_t(kGdtr >> 8),
                          0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0,
                          0xea, uint8_t(kPm32 & 0xff), uint8_t(kPm32 >> 8), 0x18, 0x00};
  // 32-bit protected mode: data segments; CR4.PAE; CR3; EFER.LME (wrmsr); CR0.PG; jmp 0x08:kLm64.
  const uint8_t protected32[] = {0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0,
                                 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0,
                                 0xb8, uint8_t(kPml4 & 0xff), uint8_t(kPml4 >> 8), 0x00, 0x00, 0x0f, 0x22, 0xd8,
                                 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30,
                                 0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0,
                                 0xea, uint8_t(kLm64 & 0xff), uint8_t(kLm64 >> 8), 0x00, 0x00, 0x08, 0x00};
  std::memcpy(&g.memory[kCode], real, sizeof real);
  std::memcpy(&g.memory[kPm32], protected32, sizeof protected32);
  std::vector<uint8_t> code = LongModeCode();
  std::memcpy(&g.memory[kLm64], code.data(), code.size());
  return g;
}

KvmProbe ProbeKvm(int timeout_ms) {
  KvmProbe p;
  p.timeout_ms = timeout_ms;
  struct stat st;
  if (::stat(kKvmName, &st) != 0) return p;
  p.present = true;
  UniqueFd fd(::open(kKvmName, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    p.open_errno = errno;
    return p;
  }
#if defined(__x86_64__)
  // Every VMM asks for the processor features it may give a guest (long mode among them).
  CpuidBuffer cpuid{};
  cpuid.get()->nent = CpuidBuffer::kEntries;
  if (::ioctl(fd.get(), KVM_GET_SUPPORTED_CPUID, cpuid.get()) != 0) p.cpuid_errno = errno;
  p.real_mode = RunGuest(RealModeGuest(), timeout_ms);
  p.long_mode = RunGuest(LongModeGuest(), timeout_ms);
  p.boot = RunGuest(BootingGuest(), timeout_ms);
#endif
  return p;
}

Capability JudgeKvm(const KvmProbe& p) {
  const std::string tcg = "hardware VMs (driver: qemu) will use QEMU's software emulation (TCG) instead";
  const std::string fix_device =
      "modprobe kvm_intel (or kvm_amd) on a CPU with VT-x/AMD-V; inside a Hyper-V VM: "
      "Set-VMProcessor -ExposeVirtualizationExtensions $true";
  Capability c{kKvmName, kCapMissing, "", "", false};
  if (!p.present) {
    c.detail = "no /dev/kvm; partitions do not need it; " + tcg;
    c.fix = fix_device;
    return c;
  }
  c.state = kCapUnusable;
  if (p.open_errno != 0) {
    c.detail = "present but cannot be opened: " + ErrnoText(p.open_errno) + "; " + tcg;
    c.fix = p.open_errno == EACCES || p.open_errno == EPERM ? "run as root, or join group kvm" : fix_device;
    return c;
  }
  if (p.long_mode.end == KvmRun::End::kNotRun) {
    c.detail = "present, but this build has no guest for this processor architecture to test it with; " + tcg;
    c.fix = "run lab doctor on x86-64";
    return c;
  }
  const bool real = p.real_mode.end == KvmRun::End::kHalted, entered = p.long_mode.end == KvmRun::End::kHalted,
             booted = p.boot.end == KvmRun::End::kHalted;
  if (entered && booted) {
    c.state = kCapUsable;
    c.detail = "a guest switched itself from real mode to protected and 64-bit long mode with paging and ran to "
               "HLT under KVM_RUN, as a standard guest boots";
    if (!real) c.detail += "; a plain real-mode guest " + Describe(p.real_mode, p.timeout_ms);
    return c;
  }
  std::vector<std::string> ran, failed;
  (real ? ran : failed).push_back("raw real-mode code" + (real ? std::string() : " " + Describe(p.real_mode, p.timeout_ms)));
  (entered ? ran : failed)
      .push_back("a guest started in long mode" + (entered ? std::string() : " " + Describe(p.long_mode, p.timeout_ms)));
  (booted ? ran : failed)
      .push_back("a guest switching itself from real to protected and long mode, as a standard guest boots," +
                 (booted ? std::string() : " " + Describe(p.boot, p.timeout_ms)));
  c.detail = "present, but a standard guest cannot run under it";
  if (!ran.empty()) c.detail += ": only " + Join(ran, " and ") + " ran";
  c.detail += "; " + Join(failed, "; ");
  if (p.cpuid_errno != 0)
    c.detail += "; KVM_GET_SUPPORTED_CPUID is refused (" + ErrnoText(p.cpuid_errno) +
                "), so no guest can be told it has long mode";
  c.detail += " (a paravirtual or limited KVM); " + tcg;
  c.fix = "none needed: QEMU falls back to TCG (slower); for KVM, a host whose /dev/kvm runs standard guests "
          "(VT-x/AMD-V on hardware; in a Hyper-V VM: Set-VMProcessor -ExposeVirtualizationExtensions $true)";
  return c;
}

std::string CpuVendor(const std::string& cpuinfo) {
  for (const std::string& line : Split(cpuinfo, '\n')) {
    if (line.rfind("vendor_id", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = Trim(line.substr(colon + 1));
    if (v == "GenuineIntel") return "intel";
    if (v == "AuthenticAMD" || v == "HygonGenuine") return "amd";
    return "";
  }
  return "";
}

namespace {

// ---- files and devices ----

Capability ProbeExecutable(const std::string& name, const std::string& path, const std::string& fix, bool required) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Missing(name, path + ": " + ErrnoText(errno), fix, required);
  if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0)
    return Missing(name, path + " is not an executable file", fix, required);
  return Ok(name, path, required);
}

Capability ProbeKvmNested() {
  const std::string name = "kvm nested";
  for (const char* module : {"kvm_intel", "kvm_amd"}) {
    const std::string path = std::string("/sys/module/") + module + "/parameters/nested";
    auto value = ReadFile(path);
    if (!value) continue;
    std::string v = Trim(*value);
    if (v == "Y" || v == "1")
      return Ok(name, std::string(module) + " nested=" + v + " (a KVM guest can run its own guests)", false);
    return Missing(name, std::string(module) + " nested=" + v,
                   std::string("echo 'options ") + module + " nested=1' > /etc/modprobe.d/kvm-nested.conf; reload " +
                       module,
                   false);
  }
  // Another KVM module (a paravirtual one such as kvm_pvm) has no nested parameter to read.
  std::vector<std::string> others;
  if (DIR* d = ::opendir("/sys/module")) {
    while (dirent* e = ::readdir(d)) {
      std::string m = e->d_name;
      if (m.rfind("kvm_", 0) == 0) others.push_back(m);
    }
    ::closedir(d);
  }
  std::sort(others.begin(), others.end());
  if (!others.empty()) {
    std::string list;
    for (const std::string& m : others) list += (list.empty() ? "" : ", ") + m;
    return {name, kCapNotApplicable,
            "neither kvm_intel nor kvm_amd is loaded (loaded: " + list + ", without a nested parameter)", "", false};
  }
  return {name, kCapNotApplicable, "neither kvm_intel nor kvm_amd is loaded", "", false};
}

Capability ProbeProcessor() {
  const std::string name = "processor";
  auto cpuinfo = ReadFile("/proc/cpuinfo");
  if (!cpuinfo) return {name, kCapNotApplicable, "/proc/cpuinfo cannot be read", "", false};
  std::string vendor_id, model;
  bool hypervisor = false;
  for (const std::string& line : Split(*cpuinfo, '\n')) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = Trim(line.substr(0, colon)), value = Trim(line.substr(colon + 1));
    if (key == "vendor_id" && vendor_id.empty()) vendor_id = value;
    if (key == "model name" && model.empty()) model = value;
    if (key == "flags" && (" " + value + " ").find(" hypervisor ") != std::string::npos) hypervisor = true;
  }
  std::string vendor = CpuVendor(*cpuinfo);
  std::string detail = vendor == "intel" ? "Intel" : vendor == "amd" ? "AMD" : "unknown vendor";
  detail += " (" + (vendor_id.empty() ? std::string("no vendor_id") : vendor_id) + ")";
  if (!model.empty()) detail += ", " + model;
  if (hypervisor) detail += "; this machine is itself a virtual machine";
  return {name, vendor.empty() ? kCapNotApplicable : kCapOk, detail, "", false};
}

Capability ProbeCpuExtensions() {
  const std::string name = "virtualization extensions";
  std::set<std::string> flags;
  if (auto cpuinfo = ReadFile("/proc/cpuinfo")) {
    for (const std::string& line : Split(*cpuinfo, '\n')) {
      // "flags" and, on newer kernels, "vmx flags" (where Intel's ept is listed).
      if (line.rfind("flags", 0) != 0 && line.rfind("vmx flags", 0) != 0) continue;
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::istringstream in(line.substr(colon + 1));
      for (std::string f; in >> f;) flags.insert(f);
    }
  }
  if (flags.count("vmx"))
    return Ok(name, std::string("Intel VT-x (vmx)") + (flags.count("ept") ? " with EPT" : ", no EPT flag"), false);
  if (flags.count("svm"))
    return Ok(name, std::string("AMD-V (svm)") + (flags.count("npt") ? " with NPT" : ", no NPT flag"), false);
  return Missing(name,
                 "no vmx or svm flag in /proc/cpuinfo: this CPU (or the VM this runs in) does not expose them; "
                 "partitions do not need them",
                 "inside a Hyper-V VM: Set-VMProcessor -ExposeVirtualizationExtensions $true; on hardware: enable "
                 "VT-x/AMD-V in the firmware",
                 false);
}

Capability ProbeKernel() {
  utsname u{};
  if (::uname(&u) != 0) return Missing("kernel", "uname: " + ErrnoText(errno), "", false);
  std::string detail = std::string(u.sysname) + " " + u.release + " " + u.machine;
  int major = 0, minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  // Interface altnames (vEthernet (NAME), ownership marks) arrived in 5.5.
  if (major < 5 || (major == 5 && minor < 5))
    return Missing("kernel", detail + ": interface altnames need 5.5 or later", "a kernel 5.5 or later", false);
  return Ok("kernel", detail, false);
}

}  // namespace

std::vector<Capability> Diagnose(const std::string& init_path) {
  std::vector<Capability> caps;
  if (IsRoot())
    caps.push_back(Ok("root", "effective uid 0", true));
  else
    caps.push_back(Missing("root", "effective uid " + std::to_string(::geteuid()), kRunAsRoot, true));
  caps.push_back(ProbeKernel());
  for (const NamespaceKind& ns : kNamespaces) caps.push_back(ProbeNamespace(ns));
  for (Capability& c : ProbeCgroups()) caps.push_back(std::move(c));
  for (Capability& c : ProbeNetworking()) caps.push_back(std::move(c));
  caps.push_back(ProbeSeccomp());
  caps.push_back(ProbeOverlay());
  caps.push_back(ProbeExecutable("dnsmasq", "/usr/sbin/dnsmasq", "apt-get install dnsmasq-base", true));
  caps.push_back(ProbeExecutable("lab-init", init_path,
                                 "build it next to lab (make lab-init) or install lab (lab-init goes in libexec/lab), or set LAB_INIT to its path", true));
  caps.push_back(ProbeProcessor());
  caps.push_back(ProbeCpuExtensions());
  caps.push_back(JudgeKvm(ProbeKvm(kKvmTimeoutMs)));
  caps.push_back(ProbeKvmNested());
  return caps;
}

bool AllRequiredPresent(const std::vector<Capability>& caps) {
  for (const Capability& c : caps)
    if (c.required && c.state == kCapMissing) return false;
  return true;
}

}  // namespace lab::hv::kernel
