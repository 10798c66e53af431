#include "hv/qemu/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "base/proc.h"
#include "hv/agent/protocol.h"
#include "hv/qemu/command.h"
#include "hv/qemu/qmp.h"

namespace lab::hv::qemu {

using Clock = std::chrono::steady_clock;

std::vector<std::string> QemuArgv(const QemuConfig& c) {
  std::string cpu;
  if (c.accel == Accel::kTcg) {
    // TCG emulates AMD SVM only. qemu64 has svm by default, so it is always said explicitly;
    // +arat keeps an idle guest from polling the APIC timer (5 % of a core against 1 %).
    cpu = c.expose_virtualization_extensions ? "qemu64,+svm,+npt,+arat" : "qemu64,-svm,+arat";
  } else {
    // KVM passes the host's vmx (Intel) or svm (AMD) through with -cpu host when the host's kvm
    // module allows nesting; hidden, both are taken away.
    cpu = c.expose_virtualization_extensions ? "host" : "host,-vmx,-svm";
  }
  std::string accel = c.accel == Accel::kKvm ? "kvm" : "tcg,tb-size=" + std::to_string(c.tb_size_mib);
  std::string run = c.run_dir;
  std::string append = "console=ttyS0 panic=-1 quiet";
  if (c.root == RootKind::k9p) append += " lab.root=9p";
  if (c.root == RootKind::kDisk) append += " lab.root=disk";
  if (!c.agent_binary.empty()) append += " lab.agent=" + c.agent_binary;
  if (!c.append.empty()) append += " " + c.append;
  const std::string kick = c.ioeventfd ? "" : ",ioeventfd=off";
  std::vector<std::string> argv = {c.binary,
          "-nodefaults", "-no-user-config", "-display", "none",
          "-machine", "q35",
          "-accel", accel,
          "-cpu", cpu,
          "-m", std::to_string(c.memory_mib),
          "-smp", std::to_string(c.processors),
          "-kernel", c.kernel,
          "-initrd", c.initrd,
          "-append", append,
          "-no-reboot",
          "-chardev", "socket,id=agent,server=on,wait=off,path=" + run + "/agent.sock",
          "-device", "virtio-serial-pci,id=vser" + kick,
          "-device", std::string("virtserialport,chardev=agent,name=") + agent::kPortName,
          "-device", "virtio-rng-pci,id=rng" + kick,
          "-qmp", "unix:" + run + "/qmp.sock,server=on,wait=off",
          "-serial", "file:" + run + "/console.log"};
  auto add = [&argv](std::string a, std::string b) {
    argv.push_back(std::move(a));
    argv.push_back(std::move(b));
  };
  if (c.root == RootKind::k9p) {
    add("-fsdev", "local,id=labroot,path=" + c.root_dir + ",security_model=none,readonly=on,multidevs=remap");
    add("-device", "virtio-9p-pci,fsdev=labroot,mount_tag=labroot" + kick);
  } else if (c.root == RootKind::kDisk) {
    add("-blockdev", "driver=file,filename=" + c.disk + ",node-name=disk-file,cache.direct=off");
    add("-blockdev", "driver=qcow2,file=disk-file,node-name=disk");
    add("-device", "virtio-blk-pci,drive=disk,id=vda" + kick);
  }
  if (c.balloon) add("-device", "virtio-balloon-pci,id=balloon");  // no ioeventfd property
  for (int i = 1; i <= c.hotplug_ports; ++i)
    add("-device", "pcie-root-port,id=rp" + std::to_string(i) + ",chassis=" + std::to_string(i) + ",bus=pcie.0");
  for (const auto& n : c.nics) {
    add("-netdev", "tap,id=" + n.id + ",fd=" + std::to_string(n.tap_fd) + ",vhost=off");
    add("-device", "virtio-net-pci,netdev=" + n.id + ",id=" + n.id + ",mac=" + n.mac + ",bus=rp" + std::to_string(n.port));
  }
  if (!c.incoming.empty()) add("-incoming", c.incoming);
  return argv;
}

namespace {

std::string Tail(const std::string& path, size_t max) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  std::string t = s.str();
  if (t.size() > max) t = t.substr(t.size() - max);
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  return t;
}

/// Waits until the process is gone, at most `ms`. Our own child is gone once reaped: a QEMU whose
/// main thread has exited shows as a zombie while its other threads still end, and cannot be
/// reaped before they have. Another's (a QEMU an earlier lab started) is gone when it is no longer
/// running.
bool WaitGone(const QemuProcess& p, int ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    int r = ::waitpid(p.pid, nullptr, WNOHANG);
    if (r == p.pid) return true;
    if (r < 0 && errno == ECHILD && !IsRunning(p)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void RemoveFiles(const QemuProcess& p) {
  ::unlink(p.qmp_socket().c_str());
  ::unlink(p.agent_socket().c_str());
  ::unlink(p.pid_file().c_str());
}

}  // namespace

bool IsRunning(const QemuProcess& p) {
  if (p.pid <= 0) return false;
  ProcStat st = ReadProcStat(p.pid);
  return st.found && st.start_time == p.start_time && st.state != 'Z' && st.state != 'X';
}

Result<QemuProcess> StartQemu(const QemuConfig& config, int timeout_ms) {
  std::string exe = FindInPath(config.binary);
  if (exe.empty())
    return Status::Error("QEMU is not installed: " + config.binary + " not found (apt-get install qemu-system-x86)");
  QemuProcess p;
  p.run_dir = config.run_dir;
  RemoveFiles(p);  // stale sockets of an earlier QEMU would make QEMU refuse to bind
  auto argv = QemuArgv(config);
  std::vector<char*> ptrs;
  for (auto& a : argv) ptrs.push_back(a.data());
  ptrs.push_back(nullptr);
  int log = ::open(p.qemu_log().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return ErrnoStatus("cannot create " + p.qemu_log());
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log);
    return ErrnoStatus("fork");
  }
  if (pid == 0) {
    // Its own session and process group: a terminal's ^C to lab does not reach the guest.
    ::setsid();
    if (config.nice != 0) ::setpriority(PRIO_PROCESS, 0, config.nice);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(log, 2);
    // The adapters' taps are lab's with O_CLOEXEC (hv/qemu/control.h OpenTap): inherited by QEMU
    // alone, never by anything else lab runs.
    for (const auto& n : config.nics)
      if (n.tap_fd >= 0) ::fcntl(n.tap_fd, F_SETFD, 0);
    ::execv(exe.c_str(), ptrs.data());
    ::_exit(127);
  }
  ::close(log);
  p.pid = pid;
  // The start time read at once: the process cannot be reaped (and its pid reused) before we wait.
  p.start_time = ReadProcStat(pid).start_time;
  {
    std::ofstream f(p.pid_file(), std::ios::trunc);
    f << p.pid << " " << p.start_time << "\n";
  }
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      RemoveFiles(p);
      return Status::Error("QEMU exited at start (" +
                           std::string(WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                                         : "signal " + std::to_string(WTERMSIG(status))) +
                           "): " + Tail(p.qemu_log(), 600));
    }
    if (::access(p.qmp_socket().c_str(), F_OK) == 0) {
      auto qmp = QmpClient::Connect(p.qmp_socket(), 2000);
      if (qmp.ok()) return p;
    }
    if (Clock::now() >= deadline) {
      (void)StopQemu(p, 0, 1000);
      return Status::Error("QEMU did not open its QMP socket within " + std::to_string(timeout_ms) + " ms: " +
                           Tail(p.qemu_log(), 600));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<QemuProcess> FindQemu(const std::string& run_dir) {
  QemuProcess p;
  p.run_dir = run_dir;
  std::ifstream f(p.pid_file());
  if (!(f >> p.pid >> p.start_time)) return Status::Error("no QEMU recorded in " + run_dir);
  if (!IsRunning(p)) return Status::Error("the QEMU recorded in " + run_dir + " (pid " + std::to_string(p.pid) + ") is gone");
  return p;
}

Status StopQemu(const QemuProcess& p, int powerdown_ms, int quit_ms) {
  if (IsRunning(p)) {
    auto qmp = QmpClient::Connect(p.qmp_socket(), 1000);
    if (qmp.ok() && powerdown_ms > 0 && qmp->SystemPowerdown().ok() && WaitGone(p, powerdown_ms)) {
      RemoveFiles(p);
      return Status::Ok();
    }
    if (qmp.ok() && qmp->Quit().ok() && WaitGone(p, quit_ms)) {
      RemoveFiles(p);
      return Status::Ok();
    }
    // Only this pid, and only while it is still the process we started (same start time).
    if (IsRunning(p)) ::kill(p.pid, SIGKILL);
    if (!WaitGone(p, 5000)) return Status::Error("QEMU (pid " + std::to_string(p.pid) + ") survived SIGKILL");
  } else {
    (void)WaitGone(p, 5000);  // our child that exited by itself: reaped here
  }
  RemoveFiles(p);
  return Status::Ok();
}

Result<std::string> QemuVersion(const std::string& binary) {
  auto out = RunCommand({binary, "-version"}, 10000);
  if (!out.ok() || out->exit_code != 0)
    return Status::Error(binary + " is not installed (apt-get install qemu-system-x86)");
  std::smatch m;
  static const std::regex kVersion(R"(version (\d+\.\d+\.\d+))");
  if (!std::regex_search(out->output, m, kVersion)) return Status::Error("cannot read the version of " + binary);
  return m[1].str();
}

}  // namespace lab::hv::qemu
