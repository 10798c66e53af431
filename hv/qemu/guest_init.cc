// lab-guest-init: /init of a qemu VM's initramfs, and its agent.
//
// It mounts /proc, /sys and /dev (devtmpfs: there is no udev), loads the kernel modules listed in
// /etc/lab/modules (the initramfs builder put them there in dependency order, kvm's only for a
// processor with svm or vmx; one that fails is reported on the console and skipped), finds the
// virtio-serial port named `lab.agent` under /sys/class/virtio-ports and answers the agent
// protocol (hv/agent/protocol.h) on it. The port is opened once read-write; EOF means the host side
// is not connected (yet, or any more), so it waits and opens it again: the host may come and go.
//
// `lab.floor` on the kernel command line makes it print kFloorMarker and power off right after
// mounting /proc instead: the floor
// of bench/qemu-boot.sh, the same kernel and QEMU with nothing of lab's own work.
//
// Built static (hv/CMakeLists.txt): the initramfs has no C library.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/reboot.h>
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
#include <sstream>
#include <string>
#include <vector>

#include "hv/agent/protocol.h"

namespace {

constexpr const char* kFloorMarker = "lab-floor-marker";

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

void Mounts() {
  ::mkdir("/proc", 0555);
  ::mkdir("/sys", 0555);
  ::mkdir("/dev", 0755);
  ::mkdir("/tmp", 01777);
  if (::mount("proc", "/proc", "proc", 0, nullptr) != 0) Say("mount /proc: " + std::string(strerror(errno)));
  if (::mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) Say("mount /sys: " + std::string(strerror(errno)));
  if (::mount("devtmpfs", "/dev", "devtmpfs", 0, nullptr) != 0) Say("mount /dev: " + std::string(strerror(errno)));
  ::mount("tmpfs", "/tmp", "tmpfs", 0, nullptr);
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

/// Loads /etc/lab/modules in order: "PATH" always, "PATH FLAG|FLAG" only when the processor has
/// one of the flags (kvm_amd needs svm: without it, its 1.2 s of loading under TCG is for nothing).
void LoadModules() {
  Say("loading modules");
  std::vector<std::string> flags = CpuFlags();
  std::ifstream list("/etc/lab/modules");
  for (std::string line; std::getline(list, line);) {
    std::istringstream words(line);
    std::string path, needs;
    if (!(words >> path)) continue;
    if (words >> needs) {
      bool any = false;
      std::istringstream alternatives(needs);
      for (std::string f; std::getline(alternatives, f, '|');)
        any = any || std::find(flags.begin(), flags.end(), f) != flags.end();
      if (!any) continue;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Say("module " + path + ": " + strerror(errno));
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    if (::syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) Say("module " + path + ": " + strerror(errno));
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (ms >= 100) Say(path.substr(path.rfind('/') + 1) + " took " + std::to_string(static_cast<int>(ms)) + " ms");
    ::close(fd);
  }
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
  lab::hv::agent::ExecReply r;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    r.exit_code = 126;
    r.output = std::string("pipe: ") + strerror(errno) + "\n";
    return r;
  }
  std::vector<char*> ptrs;
  for (const auto& a : argv) ptrs.push_back(const_cast<char*>(a.c_str()));
  ptrs.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
    ::execvp(ptrs[0], ptrs.data());
    std::string msg = argv[0] + ": " + strerror(errno) + "\n";
    if (::write(2, msg.data(), msg.size()) < 0) {
    }
    ::_exit(errno == ENOENT ? 127 : 126);
  }
  ::close(fds[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  if (pid < 0) {
    r.exit_code = 126;
    r.output = std::string("fork: ") + strerror(errno) + "\n";
    return r;
  }
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
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

[[noreturn]] void Serve() {
  std::string port;
  for (int waited = 0; (port = FindPort(lab::hv::agent::kPortName)).empty(); ++waited) {
    if (waited == 100) Say(std::string("no virtio-serial port named ") + lab::hv::agent::kPortName + " yet; waiting");
    ::usleep(20000);
  }
  Say("agent on " + port);
  // Without a host on the other end the port reads EOF at once (and polls as hung up), so it is
  // looked at again after a pause that grows to 250 ms: an idle guest with no lab connected stays
  // nearly idle, and a host that connects is answered within that.
  useconds_t pause = 20000;
  for (;;) {
    int fd = ::open(port.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      ::usleep(250000);
      continue;
    }
    std::string pending;
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, -1) < 0 && errno != EINTR) break;
      char buf[4096];
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) break;  // the host side is gone (or not there yet): reopen
      pending.append(buf, static_cast<size_t>(n));
      pause = 20000;
      size_t nl;
      bool ok = true;
      while (ok && (nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        if (!line.empty()) ok = WriteAll(fd, Answer(line));
      }
      if (!ok) break;
      // pid 1 adopts what commands left running: reap the ones that ended.
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
    }
    ::close(fd);
    ::usleep(pause);
    pause = std::min<useconds_t>(pause * 2, 250000);
  }
}

}  // namespace

int main() {
  Mounts();
  std::string cmdline = Slurp("/proc/cmdline");
  if (cmdline.find("lab.floor") != std::string::npos) {
    std::printf("%s\n", kFloorMarker);
    std::fflush(stdout);
    ::sync();
    ::reboot(RB_POWER_OFF);
    for (;;) ::pause();
  }
  LoadModules();
  Serve();
}
