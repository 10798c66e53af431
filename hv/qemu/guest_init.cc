// lab-guest-init: /init of a qemu VM's initramfs; pid 1 of the guest; its agent when lab gives none.
//
// Boot, in order (the agent answers as early as possible; what it does not need comes after):
//  1. mount /proc, /sys and /dev (devtmpfs: there is no udev) in the initramfs;
//  2. load the "boot" modules of /etc/lab/modules (virtio transport and console: the agent's port),
//     then those of the root the kernel command line asks for: `lab.root=9p` (9p, overlay) or
//     `lab.root=disk` (virtio_blk, ext4). A module that fails is reported on the console and
//     skipped; one listed with CPU flags (kvm_amd: svm) is loaded only for a processor with one;
//  3. a child (niced) loads the "net" module (virtio_net: the adapters come next), the "button"
//     modules (pid 1 then listens to the ACPI power button) and the "late" ones (bridge, veth,
//     nftables, tun, kvm, balloon) in the background,
//     from the initramfs it keeps as its root; with an agent, it starts once the agent has taken on
//     the VM's identity (its hostname changed; at most 15 s): the VM is ready first; when it is
//     done pid 1 writes kModulesLoaded;
//  4. `lab.root=9p`: the host tree exported with mount tag `labroot` is mounted read-only and made
//     writable by an overlay whose upper is a tmpfs; `lab.root=disk`: /dev/vda (ext4) read-write.
//     Then switch_root to it (the initramfs stays underneath: the module loader still reads it);
//  5. either way: /proc, /sys, /dev moved over, /dev/pts, /dev/shm, /tmp, /run (tmpfs),
//     cgroup2 at /sys/fs/cgroup, lo up; the hostname is left for the agent to set;
//  6. `lab.agent=PATH`: pid 1 runs `PATH __guest-agent` with LAB_AGENT_PORT=/dev/vportNpM (the
//     virtio-serial port named `lab.agent`, found under /sys/class/virtio-ports) and stdio on
//     /dev/console, and restarts it when it exits (after a pause that grows to 1 s). Without it,
//     pid 1 answers the agent protocol (hv/agent/protocol.h) on that port itself: opened once
//     read-write; EOF means the host side is not connected (yet, or any more), so it is opened
//     again after a pause growing to 250 ms (an idle guest with no lab connected stays idle).
// pid 1 reaps every orphan, and powers off (processes terminated, root remounted read-only, sync,
// reboot(RB_POWER_OFF)) on SIGTERM, SIGUSR2 or the ACPI power button (QMP system_powerdown:
// Stop-VM).
//
// `lab.floor` on the kernel command line makes it print kFloorMarker and power off right after
// mounting /proc instead: the floor of bench/qemu-boot.sh, the same kernel and QEMU with nothing
// of lab's own work.
//
// Built static (hv/CMakeLists.txt): the initramfs has no C library.
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hv/agent/exec.h"
#include "hv/agent/protocol.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kFloorMarker = "lab-floor-marker";
/// Written by pid 1 once the background module loader is done (tests and the agent wait for it).
constexpr const char* kModulesLoaded = "/run/lab/modules-loaded";
/// The 9p root's mount options but its message size (`lab.9p_msize=BYTES` on the command line,
/// for measuring; else k9pMsize: see docs/qemu.md).
constexpr const char* k9pOptions = "trans=virtio,version=9p2000.L,cache=loose,msize=";
constexpr const char* k9pMsize = "524288";

/// A line on the console, with the guest's uptime (as the kernel's own log has it).
void Say(const std::string& line) {
  std::string up;
  if (std::ifstream u("/proc/uptime"); u >> up) up = "[" + up + "] ";
  std::string s = "lab-guest-init: " + up + line + "\n";
  if (::write(2, s.data(), s.size()) < 0) {
  }
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Errno() { return strerror(errno); }

/// What the kernel command line asks of the init.
struct Cmdline {
  bool floor = false;
  std::string root;   // "", "9p", "disk"
  std::string agent;  // the agent program's path, "" = pid 1 answers the port itself
  std::string msize = k9pMsize;
};

Cmdline ParseCmdline(const std::string& text) {
  Cmdline c;
  std::istringstream words(text);
  for (std::string w; words >> w;) {
    if (w == "lab.floor") c.floor = true;
    if (w.rfind("lab.root=", 0) == 0) c.root = w.substr(9);
    if (w.rfind("lab.agent=", 0) == 0) c.agent = w.substr(10);
    if (w.rfind("lab.9p_msize=", 0) == 0) c.msize = w.substr(13);
  }
  return c;
}

void MountOrSay(const char* source, const std::string& target, const char* type, unsigned long flags,
                const char* data) {
  ::mkdir(target.c_str(), 0755);
  if (::mount(source, target.c_str(), type, flags, data) != 0) Say("mount " + target + ": " + Errno());
}

void EarlyMounts() {
  ::mkdir("/proc", 0555);
  ::mkdir("/sys", 0555);
  ::mkdir("/dev", 0755);
  MountOrSay("proc", "/proc", "proc", 0, nullptr);
  MountOrSay("sysfs", "/sys", "sysfs", 0, nullptr);
  MountOrSay("devtmpfs", "/dev", "devtmpfs", 0, nullptr);
}

/// What every root gets once it is the root: pseudo-terminals, shared memory, scratch space,
/// cgroup2 (lab's partitions inside the guest need it) and a loopback that is up.
void RootMounts() {
  MountOrSay("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  MountOrSay("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  MountOrSay("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  MountOrSay("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755");
  MountOrSay("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  ::mkdir("/run/lab", 0755);
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq r{};
  std::strncpy(r.ifr_name, "lo", IFNAMSIZ - 1);
  if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &r) != 0 || (r.ifr_flags |= IFF_UP, ::ioctl(s, SIOCSIFFLAGS, &r)) != 0)
    Say("lo up: " + Errno());
  if (s >= 0) ::close(s);
}

/// The processor's flags, from /proc/cpuinfo's first "flags" line.
std::vector<std::string> CpuFlags() {
  std::vector<std::string> flags;
  std::istringstream info(Slurp("/proc/cpuinfo"));
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) flags.push_back(w);
    break;
  }
  return flags;
}

/// /etc/lab/modules, read once: per phase, module paths in load order and the flags they need.
struct ModuleLine {
  std::string phase, path, needs;
};
std::vector<ModuleLine> g_modules;
std::set<std::string> g_loaded;
std::vector<std::string> g_flags;

void ReadModules() {
  std::ifstream list("/etc/lab/modules");
  std::string phase = "boot";
  for (std::string line; std::getline(list, line);) {
    if (line.size() > 2 && line.front() == '[' && line.back() == ']') {
      phase = line.substr(1, line.size() - 2);
      continue;
    }
    std::istringstream words(line);
    ModuleLine m{phase, "", ""};
    if (!(words >> m.path)) continue;
    words >> m.needs;
    g_modules.push_back(m);
  }
  g_flags = CpuFlags();
}

/// Loads the modules of `phase`, each once (a module of several phases is loaded by the first),
/// "PATH FLAG|FLAG" only when the processor has one of the flags (kvm_amd needs svm: without it,
/// its 1.2 s of loading under TCG is for nothing).
void LoadPhase(const std::string& phase) {
  auto start = Clock::now();
  int n = 0;
  for (const auto& m : g_modules) {
    if (m.phase != phase || g_loaded.count(m.path)) continue;
    if (!m.needs.empty()) {
      bool any = false;
      std::istringstream alternatives(m.needs);
      for (std::string f; std::getline(alternatives, f, '|');)
        any = any || std::find(g_flags.begin(), g_flags.end(), f) != g_flags.end();
      if (!any) continue;
    }
    g_loaded.insert(m.path);
    int fd = ::open(m.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Say("module " + m.path + ": " + Errno());
      continue;
    }
    auto t0 = Clock::now();
    if (::syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) Say("module " + m.path + ": " + Errno());
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (ms >= 100) Say(m.path.substr(m.path.rfind('/') + 1) + " took " + std::to_string(static_cast<int>(ms)) + " ms");
    ::close(fd);
    ++n;
  }
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  Say("modules (" + phase + "): " + std::to_string(n) + " in " + std::to_string(static_cast<int>(ms)) + " ms");
}

/// Children start with the signals pid 1 keeps for its signalfd unblocked again.
void ChildDefaults() {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

/// With an agent, how long the background loader waits for it to take on the VM's identity.
constexpr int kIdentityWaitMs = 15000;

/// Waits until this machine's hostname is no longer `initial` (the agent set the VM's computer
/// name: the host had its answer and the VM is ready but for its adapters), at most `ms`.
void WaitForIdentity(const std::string& initial, int ms) {
  auto start = Clock::now();
  for (;;) {
    utsname u{};
    if (::uname(&u) == 0 && initial != u.nodename) {
      Say("the agent took on the VM's identity: loading the rest");
      return;
    }
    if (Clock::now() - start >= std::chrono::milliseconds(ms)) {
      Say("no identity from the agent in " + std::to_string(ms / 1000) + " s: loading the rest anyway");
      return;
    }
    ::usleep(10000);
  }
}

/// The "net", "button" and "late" phases in a niced child, so that the agent is not kept waiting by
/// them. The child's root stays the initramfs (where the module files are) after pid 1 switches
/// root. It writes a byte to *button_ready (a pipe pid 1 polls) once the power button is loaded.
/// With an agent (`wait_for_agent`) it starts only once the agent has taken on the VM's identity
/// (WaitForIdentity): on one emulated processor the loader's work in the kernel (ext4 alone
/// 0.4-0.7 s, not preemptible) would otherwise hold back the agent's start by about half a second,
/// and nothing the VM needs before that is in these phases (its adapters come after).
pid_t StartLateLoader(int* button_ready, bool wait_for_agent) {
  int fds[2];
  *button_ready = -1;
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    Say("pipe: " + Errno());
    fds[0] = fds[1] = -1;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ChildDefaults();
    ::setpriority(PRIO_PROCESS, 0, 10);
    if (wait_for_agent) {
      utsname u{};
      ::uname(&u);
      WaitForIdentity(u.nodename, kIdentityWaitMs);
    }
    LoadPhase("net");
    LoadPhase("button");
    if (fds[1] >= 0 && ::write(fds[1], "b", 1) < 0) {
    }
    LoadPhase("late");
    ::_exit(0);
  }
  if (pid < 0) Say("fork the module loader: " + Errno());
  if (fds[1] >= 0) ::close(fds[1]);
  *button_ready = fds[0];
  return pid;
}

bool WaitForPath(const std::string& path, int ms) {
  for (int waited = 0; ::access(path.c_str(), F_OK) != 0; waited += 10) {
    if (waited >= ms) return false;
    ::usleep(10000);
  }
  return true;
}

/// Mounts the guest's root at /newroot; "" when done, else what failed.
std::string MountRoot(const std::string& kind, const std::string& msize) {
  ::mkdir("/newroot", 0755);
  if (kind == "disk") {
    if (!WaitForPath("/dev/vda", 10000)) return "no /dev/vda (is the disk attached?)";
    if (::mount("/dev/vda", "/newroot", "ext4", 0, nullptr) != 0) return "mount /dev/vda (ext4): " + Errno();
    return "";
  }
  if (kind != "9p") return "unknown lab.root=" + kind + " (9p or disk)";
  ::mkdir("/lower", 0755);
  ::mkdir("/rw", 0755);
  std::string options = k9pOptions + msize;
  if (::mount("labroot", "/lower", "9p", MS_RDONLY, options.c_str()) != 0) return "mount 9p labroot: " + Errno();
  if (::mount("tmpfs", "/rw", "tmpfs", 0, "mode=755") != 0) return "mount tmpfs for the overlay: " + Errno();
  ::mkdir("/rw/upper", 0755);
  ::mkdir("/rw/work", 0755);
  if (::mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work") == 0) {
    // The host's tree as the host sees it, read-only, at /lab-host (kHostView): what the guest
    // shadows with its own mounts (/tmp, /run, lab's state) stays reachable there, e.g. the guest
    // kernels that qemu VMs inside this one boot.
    ::mkdir("/newroot/lab-host", 0755);
    if (::mount("/lower", "/newroot/lab-host", nullptr, MS_BIND | MS_REC, nullptr) != 0) Say("bind /lab-host: " + Errno());
    return "";
  }
  // Without the overlay the host's tree stays read-only: the places programs write get a tmpfs.
  Say("overlay over 9p refused (" + Errno() + "): read-only root with tmpfs on /var and /root");
  if (::mount("/lower", "/newroot", nullptr, MS_BIND, nullptr) != 0) return "bind the 9p root: " + Errno();
  for (const char* d : {"/newroot/var", "/newroot/root"})
    if (::mount("tmpfs", d, "tmpfs", 0, "mode=755") != 0) Say(std::string("mount ") + d + ": " + Errno());
  return "";
}

/// Makes /newroot the root, carrying /proc, /sys and /dev over (the initramfs stays underneath).
std::string SwitchRoot() {
  for (const char* d : {"proc", "sys", "dev"}) {
    std::string to = std::string("/newroot/") + d;
    ::mkdir(to.c_str(), 0755);
    if (::mount((std::string("/") + d).c_str(), to.c_str(), nullptr, MS_MOVE, nullptr) != 0)
      return "move /" + std::string(d) + ": " + Errno();
  }
  if (::chdir("/newroot") != 0) return "chdir /newroot: " + Errno();
  if (::mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) return "move the root over /: " + Errno();
  if (::chroot(".") != 0) return "chroot: " + Errno();
  if (::chdir("/") != 0) return "chdir /: " + Errno();
  return "";
}

/// /dev/vportNpM of the port named `name`, or "" while it has not appeared.
std::string FindPort(const std::string& name) {
  std::string found;
  DIR* d = ::opendir("/sys/class/virtio-ports");
  if (!d) return found;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string n = Slurp(std::string("/sys/class/virtio-ports/") + e->d_name + "/name");
    while (!n.empty() && (n.back() == '\n' || n.back() == '\0')) n.pop_back();
    if (n == name) found = std::string("/dev/") + e->d_name;
  }
  ::closedir(d);
  return found;
}

std::string WaitForPort() {
  std::string port;
  for (int waited = 0; (port = FindPort(lab::hv::agent::kPortName)).empty(); ++waited) {
    if (waited == 100) Say(std::string("no virtio-serial port named ") + lab::hv::agent::kPortName + " yet; waiting");
    ::usleep(20000);
  }
  return port;
}

/// The event devices of the ACPI power button (the "button" and "evdev" modules of the late phase).
std::vector<int> OpenPowerButtons() {
  std::vector<int> fds;
  DIR* d = ::opendir("/sys/class/input");
  if (!d) return fds;
  while (dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, "event", 5) != 0) continue;
    std::string name = Slurp(std::string("/sys/class/input/") + e->d_name + "/device/name");
    if (name.rfind("Power Button", 0) != 0) continue;
    int fd = ::open((std::string("/dev/input/") + e->d_name).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) fds.push_back(fd);
    else Say(std::string("/dev/input/") + e->d_name + ": " + Errno());
  }
  ::closedir(d);
  if (fds.empty()) Say("no ACPI power button: Stop-VM will not be heard");
  return fds;
}

lab::hv::agent::PingReply Ping() {
  lab::hv::agent::PingReply p;
  utsname u{};
  ::uname(&u);
  p.kernel = u.release;
  p.cpu_flags = CpuFlags();
  p.kvm = ::access("/dev/kvm", F_OK) == 0;
  return p;
}

lab::hv::agent::ExecReply Exec(const std::vector<std::string>& argv) {
  return lab::hv::agent::RunCaptured(argv, [] {
    ChildDefaults();
    ::setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
  });
}

std::string Answer(const std::string& line) {
  namespace agent = lab::hv::agent;
  auto req = agent::ParseRequest(line);
  nlohmann::json reply;
  if (!req.ok())
    reply = agent::ErrorReply(req.message());
  else if (req->op == "ping")
    reply = agent::ToJson(Ping());
  else
    reply = agent::ToJson(Exec(req->argv));
  reply = agent::WithId(std::move(reply), agent::RequestId(line));
  // Command output may be any bytes: invalid UTF-8 is replaced rather than failing the reply.
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

bool WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

[[noreturn]] void PowerOff(const std::string& why) {
  Say("powering off (" + why + ")");
  ::kill(-1, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < deadline) {
    pid_t r = ::waitpid(-1, nullptr, WNOHANG);
    if (r < 0 && errno == ECHILD) break;
    if (r == 0) ::usleep(20000);
  }
  ::kill(-1, SIGKILL);
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
  ::sync();
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY, nullptr) != 0 && errno != EROFS && errno != EBUSY)
    Say("remount / read-only: " + Errno());
  ::sync();
  ::reboot(RB_POWER_OFF);
  for (;;) ::pause();
}

/// pid 1 once the root is in place: runs (and restarts) the agent or answers its port itself,
/// reaps every child, and powers off when asked.
class Supervisor {
 public:
  Supervisor(const Cmdline& cmd, pid_t loader, int button_ready, std::string port)
      : cmd_(cmd), loader_(loader), button_ready_(button_ready), port_(std::move(port)) {}

  [[noreturn]] void Run() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGTERM, SIGUSR2}) sigaddset(&set, s);
    sigfd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    Reap();  // a child that ended before the signalfd existed
    if (!cmd_.agent.empty()) StartAgent();
    for (;;) {
      std::vector<pollfd> fds = {{sigfd_, POLLIN, 0}, {button_ready_, POLLIN, 0}};
      for (int b : buttons_) fds.push_back({b, POLLIN, 0});
      size_t buttons_end = fds.size();  // buttons_ may grow below, the poll set does not
      bool port_polled = port_fd_ >= 0;
      if (port_polled) fds.push_back({port_fd_, POLLIN, 0});
      int timeout = -1;
      auto now = Clock::now();
      auto until = [&](Clock::time_point t) {
        int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count());
        ms = std::max(ms, 0);
        timeout = timeout < 0 ? ms : std::min(timeout, ms);
      };
      if (restart_pending_) until(restart_at_);
      if (cmd_.agent.empty() && port_fd_ < 0) until(reopen_at_);
      if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) Say("poll: " + Errno());
      if (fds[0].revents & POLLIN) Signals();
      if (fds[1].revents & (POLLIN | POLLHUP)) ButtonLoaded();
      for (size_t i = 2; i < buttons_end; ++i)
        if (fds[i].revents & POLLIN) Button(fds[i].fd);
      if (port_polled && (fds.back().revents & (POLLIN | POLLHUP | POLLERR))) PortReadable();
      now = Clock::now();
      if (restart_pending_ && now >= restart_at_) StartAgent();
      if (cmd_.agent.empty() && port_fd_ < 0 && now >= reopen_at_) OpenPort();
    }
  }

 private:
  void Signals() {
    signalfd_siginfo si;
    while (::read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
      if (si.ssi_signo == SIGTERM) PowerOff("SIGTERM");
      if (si.ssi_signo == SIGUSR2) PowerOff("SIGUSR2");
    }
    Reap();
  }

  void Reap() {
    int status = 0;
    for (pid_t pid; (pid = ::waitpid(-1, &status, WNOHANG)) > 0;) {
      if (pid == loader_) {
        loader_ = 0;
        std::ofstream(kModulesLoaded) << "ok\n";
      } else if (pid == agent_) {
        agent_ = 0;
        auto ran = Clock::now() - agent_started_;
        if (ran > std::chrono::seconds(10)) pause_ms_ = 100;  // it had been running: restart soon
        Say(cmd_.agent + " exited (" +
            (WIFEXITED(status) ? "code " + std::to_string(WEXITSTATUS(status))
                               : "signal " + std::to_string(WTERMSIG(status))) +
            "); restarting it in " + std::to_string(pause_ms_) + " ms");
        restart_pending_ = true;
        restart_at_ = Clock::now() + std::chrono::milliseconds(pause_ms_);
        pause_ms_ = std::min(pause_ms_ * 2, 1000);
      }
    }
  }

  /// The loader says the button's modules are in (or it ended: the pipe hangs up).
  void ButtonLoaded() {
    ::close(button_ready_);
    button_ready_ = -1;  // poll ignores a negative fd
    buttons_ = OpenPowerButtons();
  }

  void Button(int fd) {
    input_event ev[16];
    ssize_t n;
    while ((n = ::read(fd, ev, sizeof ev)) > 0)
      for (size_t i = 0; i < static_cast<size_t>(n) / sizeof ev[0]; ++i)
        if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1) PowerOff("ACPI power button");
  }

  void StartAgent() {
    restart_pending_ = false;
    agent_started_ = Clock::now();
    pid_t pid = ::fork();
    if (pid == 0) {
      ChildDefaults();
      ::setsid();
      int console = ::open("/dev/console", O_RDWR);
      if (console >= 0) {
        for (int fd = 0; fd < 3; ++fd) ::dup2(console, fd);
        if (console > 2) ::close(console);
      }
      ::setenv("LAB_AGENT_PORT", port_.c_str(), 1);
      ::setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
      const char* argv[] = {cmd_.agent.c_str(), "__guest-agent", nullptr};
      ::execv(argv[0], const_cast<char* const*>(argv));
      Say("exec " + cmd_.agent + ": " + Errno());
      ::_exit(127);
    }
    if (pid < 0) {
      Say("fork the agent: " + Errno());
      restart_pending_ = true;
      restart_at_ = Clock::now() + std::chrono::milliseconds(1000);
      return;
    }
    agent_ = pid;
    Say("agent " + cmd_.agent + " started (pid " + std::to_string(pid) + ")");
  }

  // Without a host on the other end the port reads EOF at once (and polls as hung up), so it is
  // opened again after a pause that grows to 250 ms.
  void OpenPort() {
    port_fd_ = ::open(port_.c_str(), O_RDWR | O_CLOEXEC);
    if (port_fd_ < 0) ClosePort();
  }

  void ClosePort() {
    if (port_fd_ >= 0) ::close(port_fd_);
    port_fd_ = -1;
    pending_.clear();
    reopen_at_ = Clock::now() + std::chrono::milliseconds(reopen_ms_);
    reopen_ms_ = std::min(reopen_ms_ * 2, 250);
  }

  void PortReadable() {
    char buf[4096];
    ssize_t n = ::read(port_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) return ClosePort();  // the host side is gone (or not there yet)
    pending_.append(buf, static_cast<size_t>(n));
    reopen_ms_ = 20;
    for (size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (!line.empty() && !WriteAll(port_fd_, Answer(line))) return ClosePort();
    }
  }

  Cmdline cmd_;
  pid_t loader_;
  int button_ready_;
  std::string port_;
  int sigfd_ = -1;
  std::vector<int> buttons_;
  pid_t agent_ = 0;
  Clock::time_point agent_started_, restart_at_, reopen_at_;
  bool restart_pending_ = false;
  int pause_ms_ = 100;
  int port_fd_ = -1;
  int reopen_ms_ = 20;
  std::string pending_;
};

}  // namespace

int main() {
  // Signals pid 1 acts on arrive through its signalfd (Supervisor); blocked from the start so
  // that none is lost while the root is being set up.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGUSR2}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  EarlyMounts();
  Cmdline cmd = ParseCmdline(Slurp("/proc/cmdline"));
  if (cmd.floor) {
    std::printf("%s\n", kFloorMarker);
    std::fflush(stdout);
    ::sync();
    ::reboot(RB_POWER_OFF);
    for (;;) ::pause();
  }
  ReadModules();
  LoadPhase("boot");
  if (!cmd.root.empty()) LoadPhase(cmd.root == "disk" ? "disk" : "9p");
  // Forked before the switch: the loader's root stays the initramfs (where the module files are),
  // which remains mounted underneath the new root.
  int button_ready = -1;
  pid_t loader = StartLateLoader(&button_ready, !cmd.agent.empty());
  if (!cmd.root.empty()) {
    std::string err = MountRoot(cmd.root, cmd.msize);
    if (err.empty()) err = SwitchRoot();
    if (err.empty())
      Say("root is lab.root=" + cmd.root);
    else
      Say("root (lab.root=" + cmd.root + "): " + err + "; staying in the initramfs");
  }
  RootMounts();
  Supervisor(cmd, loader, button_ready, WaitForPort()).Run();
}
