// `lab doctor`'s probes (see doctor.h).
//
// Probes that need a namespace of their own run in a forked child (namespaces, overlayfs, seccomp)
// or in a throwaway network namespace made by a helper thread (links, nftables). The child runs
// only async-signal-safe code on data prepared before the fork: the caller may have threads.
#include "hv/kernel/doctor.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
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

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
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
  std::string failure;  // "STEP: strerror" when not ok
};

// Runs `body` in a forked child. `body` returns nullptr on success, or the name of the step that
// failed with errno set. It must be async-signal-safe (no allocation, no locks).
ChildOutcome RunProbeChild(const std::function<const char*()>& body) {
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
  bool got = false;
  pollfd p{rd.get(), POLLIN, 0};
  if (::poll(&p, 1, kChildTimeoutMs) > 0) {
    got = ::read(rd.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r);
  } else {
    ::kill(pid, SIGKILL);  // our own child, stuck
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!got) return {false, ETIMEDOUT, "the probe process did not answer"};
  if (r.step[0] != '\0') return {false, r.err, std::string(r.step) + ": " + ErrnoText(r.err)};
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

// ---- files and devices ----

Capability ProbeExecutable(const std::string& name, const std::string& path, const std::string& fix, bool required) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Missing(name, path + ": " + ErrnoText(errno), fix, required);
  if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0)
    return Missing(name, path + " is not an executable file", fix, required);
  return Ok(name, path, required);
}

Capability ProbeKvmDevice() {
  const std::string name = "/dev/kvm";
  const std::string why = "not needed by partitions; the future hardware VM driver needs it";
  const std::string fix =
      "modprobe kvm_intel (or kvm_amd) on a CPU with VT-x/AMD-V; inside a Hyper-V VM: "
      "Set-VMProcessor -ExposeVirtualizationExtensions $true";
  struct stat st;
  if (::stat("/dev/kvm", &st) != 0) return Missing(name, why, fix, false);
  UniqueFd fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!fd.valid())
    return Missing(name, "present but cannot be opened: " + ErrnoText(errno) + "; " + why,
                   IsRoot() ? fix : "run as root, or join group kvm", false);
  return Ok(name, "present and openable", false);
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
  return {name, kCapNotApplicable, "neither kvm_intel nor kvm_amd is loaded", "", false};
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
  caps.push_back(ProbeCpuExtensions());
  caps.push_back(ProbeKvmDevice());
  caps.push_back(ProbeKvmNested());
  return caps;
}

bool AllRequiredPresent(const std::vector<Capability>& caps) {
  for (const Capability& c : caps)
    if (c.required && c.state == kCapMissing) return false;
  return true;
}

}  // namespace lab::hv::kernel
