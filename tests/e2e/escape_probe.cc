// lab-escape-probe: one way out of a partition, tried from inside it (tests/e2e/hardening_test.cc
// runs it with `lab exec`; it is built next to lab-init, so partitions see it at /opt/lab).
//
//   lab-escape-probe ATTEMPT [ARG...]
//
// Prints one line per try and exits 0 when every try was refused, 1 when any got through
// ("ESCAPED: ..."), 2 on a usage error. Every try is harmless if it succeeds: the clock is set to
// the time it already is, reboot and kexec get invalid arguments (so only the permission check
// can refuse them with EPERM), a module image is garbage, files of the machine are only opened,
// never written.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/io.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int escaped = 0;

void Blocked(const std::string& what, const std::string& why) { std::printf("blocked: %s: %s\n", what.c_str(), why.c_str()); }
void Escaped(const std::string& what, const std::string& how) {
  std::printf("ESCAPED: %s: %s\n", what.c_str(), how.c_str());
  escaped = 1;
}

// A syscall the kernel must refuse for lack of permission: EPERM is the refusal; success or any
// other error means the permission check passed.
void ExpectEperm(const std::string& what, long rc) {
  int err = errno;
  if (rc == -1 && err == EPERM) return Blocked(what, "EPERM");
  Escaped(what, rc == -1 ? std::string("permission granted, then ") + std::strerror(err) : "succeeded");
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void ModuleLoad() {
  char image[64] = {};
  ExpectEperm("init_module", ::syscall(SYS_init_module, image, sizeof image, ""));
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ExpectEperm("finit_module", ::syscall(SYS_finit_module, fd, "", 0));
  ::close(fd);
  ExpectEperm("delete_module", ::syscall(SYS_delete_module, "lab_no_such_module", O_NONBLOCK));
}

void ClockChange() {
  timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  ExpectEperm("clock_settime", ::clock_settime(CLOCK_REALTIME, &now));
  timeval tv;
  ::gettimeofday(&tv, nullptr);
  ExpectEperm("settimeofday", ::settimeofday(&tv, nullptr));
  timex tx = {};
  tx.modes = ADJ_OFFSET | ADJ_STATUS;  // a change request; refused before it is looked at
  tx.status = 0;
  ExpectEperm("adjtimex", ::adjtimex(&tx));
}

void Reboot() {
  // Wrong magic numbers: past the permission check the kernel answers EINVAL, never reboots.
  ExpectEperm("reboot", ::syscall(SYS_reboot, 0x1234, 0x5678, 0x01234567, nullptr));
  // kexec with too many segments: EINVAL past the permission check.
  ExpectEperm("kexec_load", ::syscall(SYS_kexec_load, 0UL, 100000UL, nullptr, 0UL));
  // The magic SysRq key reboots from a write: opening it for writing must not reach it.
  int fd = ::open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Blocked("/proc/sysrq-trigger", std::strerror(errno));
  struct stat st;
  bool masked = ::fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
  ::close(fd);
  if (masked) return Blocked("/proc/sysrq-trigger", "masked by /dev/null");
  Escaped("/proc/sysrq-trigger", "opened for writing");
}

void RawIo() {
  ExpectEperm("iopl", ::iopl(3));
  ExpectEperm("ioperm", ::ioperm(0x80, 1, 1));
  for (const char* dev : {"/dev/mem", "/dev/kmem", "/dev/port", "/dev/sda", "/dev/vda", "/dev/nvme0n1"}) {
    int fd = ::open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      Blocked(std::string("open ") + dev, std::strerror(errno));
    } else {
      ::close(fd);
      Escaped(std::string("open ") + dev, "opened");
    }
  }
  ExpectEperm("mknod a block device", ::mknod("/tmp/lab-probe-disk", S_IFBLK | 0600, makedev(8, 0)));
  ::unlink("/tmp/lab-probe-disk");
  // open_by_handle_at reaches files past the root by inode ("shocker").
  alignas(file_handle) unsigned char buffer[sizeof(file_handle) + MAX_HANDLE_SZ];
  auto* handle = reinterpret_cast<file_handle*>(buffer);
  handle->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, "/", handle, &mount_id, 0) != 0) {
    Blocked("open_by_handle_at", std::string("no handle: ") + std::strerror(errno));
  } else {
    int root = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long fd = ::syscall(SYS_open_by_handle_at, root, handle, O_RDONLY);
    if (fd >= 0) ::close(static_cast<int>(fd));
    ExpectEperm("open_by_handle_at", fd);
    ::close(root);
  }
}

void MachineSysctls() {
  for (const char* knob : {"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches"}) {
    int fd = ::open(knob, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      Blocked(std::string("write ") + knob, std::strerror(errno));
    } else {
      ::close(fd);
      Escaped(std::string("write ") + knob, "opened for writing");
    }
  }
  for (const char* knob : {"/sys/power/state", "/sys/kernel/uevent_helper"}) {
    int fd = ::open(knob, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      Blocked(std::string("write ") + knob, std::strerror(errno));
    } else {
      ::close(fd);
      Escaped(std::string("write ") + knob, "opened for writing");
    }
  }
}

// Args: PID:STARTTIME of processes outside (the machine's, another lab's).
void HostPids(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    std::string pid = a.substr(0, a.find(':'));
    std::string start = a.substr(a.find(':') + 1);
    std::string stat = Read("/proc/" + pid + "/stat");
    if (stat.empty()) {
      Blocked("see process " + pid, "no such process here");
      continue;
    }
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string f;
    for (int i = 3; i <= 22 && fields >> f; ++i) {
    }
    if (f == start) Escaped("see process " + pid, "it is visible with its start time " + start);
    else Blocked("see process " + pid, "pid " + pid + " here is another process");
  }
  // Whatever is visible is the partition's: few processes, none of them the test.
  DIR* d = ::opendir("/proc");
  int n = 0;
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    ++n;
    std::string comm = Read(std::string("/proc/") + e->d_name + "/comm");
    if (comm.rfind("test_", 0) == 0) Escaped("see the machine's processes", "sees " + comm);
  }
  if (d) ::closedir(d);
  std::printf("visible processes: %d\n", n);
}

// Args: paths of the machine that must not be visible (files, directories, mount points).
void HostMounts(const std::vector<std::string>& args) {
  std::string mountinfo = Read("/proc/self/mountinfo");
  for (const std::string& path : args) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) Escaped("see " + path, "it exists here");
    else Blocked("see " + path, std::strerror(errno));
    std::istringstream lines(mountinfo);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream fields(line);
      std::string id, parent, dev, root, where;
      fields >> id >> parent >> dev >> root >> where;
      if (where == path || root == path) Escaped("mount " + path, line);
    }
  }
}

// Args: interface names of the machine and of other labs' machines, then "ns:INODE" for network
// namespaces that are not this partition's.
void HostInterfaces(const std::vector<std::string>& args) {
  struct stat own;
  ::stat("/proc/self/ns/net", &own);
  struct if_nameindex* ifs = ::if_nameindex();
  for (const std::string& a : args) {
    if (a.rfind("ns:", 0) == 0) {
      if (std::to_string(own.st_ino) == a.substr(3)) Escaped("network namespace " + a, "it is ours");
      else Blocked("network namespace " + a, "ours is " + std::to_string(own.st_ino));
      continue;
    }
    bool seen = false;
    for (struct if_nameindex* i = ifs; i && i->if_name; ++i) seen |= a == i->if_name;
    if (seen) Escaped("see interface " + a, "it is here");
    else Blocked("see interface " + a, "not here");
  }
  if (ifs) ::if_freenameindex(ifs);
}

// Args: ADDRESS:PORT of listeners outside the lab (the machine's real addresses, its loopback).
void Route(const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    std::string addr = a.substr(0, a.rfind(':'));
    int port = std::atoi(a.substr(a.rfind(':') + 1).c_str());
    sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{s, POLLOUT, 0};
      if (::poll(&p, 1, 2000) == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        rc = err == 0 ? 0 : -1;
        errno = err;
      } else {
        rc = -1;
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) Escaped("connect to " + a, "connected");
    else Blocked("connect to " + a, std::strerror(errno));
    ::close(s);
  }
}

// The capability sets, as hex, for the test to compare with what it expects.
void Capabilities() {
  std::istringstream lines(Read("/proc/self/status"));
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind("Cap", 0) == 0) std::printf("%s\n", line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: lab-escape-probe ATTEMPT [ARG...]\n");
    return 2;
  }
  std::string attempt = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (attempt == "module-load") ModuleLoad();
  else if (attempt == "clock-change") ClockChange();
  else if (attempt == "reboot") Reboot();
  else if (attempt == "raw-io") RawIo();
  else if (attempt == "machine-sysctls") MachineSysctls();
  else if (attempt == "host-pids") HostPids(args);
  else if (attempt == "host-mounts") HostMounts(args);
  else if (attempt == "host-interfaces") HostInterfaces(args);
  else if (attempt == "route") Route(args);
  else if (attempt == "capabilities") Capabilities();
  else {
    std::fprintf(stderr, "lab-escape-probe: unknown attempt '%s'\n", attempt.c_str());
    return 2;
  }
  return escaped;
}
