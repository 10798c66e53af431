#include "tests/support.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace lab::testing {

bool RequireRoot(const std::string& what) {
  if (::geteuid() == 0) return true;
  std::printf("SKIP: %s needs root\n", what.c_str());
  return false;
}

std::string TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

std::string Src(const std::string& relative) { return std::string(LAB_SOURCE_DIR) + "/" + relative; }

int SendMarkedBroadcasts(int fd, sockaddr_ll to, const std::string& src_mac, uint16_t proto,
                         const std::string& marker, int count) {
  unsigned char frame[64] = {};
  std::memset(frame, 0xff, 6);
  if (std::sscanf(src_mac.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &frame[6], &frame[7], &frame[8], &frame[9],
                  &frame[10], &frame[11]) != 6)
    return 0;
  frame[12] = proto >> 8, frame[13] = proto & 0xff;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  int sent = 0;
  for (int i = 0; i < count; ++i) {
    std::string body = marker + std::to_string(i);
    std::memset(frame + 14, 0, sizeof frame - 14);
    std::memcpy(frame + 14, body.data(), std::min(body.size(), sizeof frame - 14));
    if (::sendto(fd, frame, sizeof frame, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == sizeof frame) ++sent;
  }
  return sent;
}

int CountMarkedFrames(int fd, const std::string& marker) {
  int n = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    unsigned char buf[2048];
    sockaddr_ll from{};
    socklen_t flen = sizeof from;
    ssize_t got = ::recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (got < 14 || from.sll_pkttype == PACKET_OUTGOING) continue;
    if (std::string(reinterpret_cast<char*>(buf) + 14, static_cast<size_t>(got) - 14).rfind(marker, 0) == 0) ++n;
  }
  return n;
}

std::optional<std::string> KvmStateByQemu() {
  if (::access("/dev/kvm", F_OK) != 0) return "missing";
  std::string qemu;
  for (const char* dir : {"/usr/bin/", "/usr/local/bin/"})
    if (::access((std::string(dir) + "qemu-system-x86_64").c_str(), X_OK) == 0) qemu = std::string(dir) + "qemu-system-x86_64";
  std::string kernel;
  if (const char* k = std::getenv("LAB_TEST_GUEST_KERNEL")) kernel = k;
  if (kernel.empty()) {
    utsname u{};
    if (::uname(&u) == 0) kernel = std::string("/boot/vmlinuz-") + u.release;
  }
  if (::access(kernel.c_str(), R_OK) != 0) {
    // No kernel of the host's own (a container or a minimal machine has no /boot): the guest
    // kernel the qemu tests fetched (tests/hv/qemu_test.cc's cache), booted as PVH vmlinux.
    const char* env = std::getenv("LAB_TEST_KERNEL_CACHE");
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(env ? env : "/var/tmp/lab-test-kernels", ec))
      if (::access((e.path() / "vmlinux").c_str(), R_OK) == 0) {
        kernel = (e.path() / "vmlinux").string();
        break;
      }
  }
  if (qemu.empty() || ::access(kernel.c_str(), R_OK) != 0) return std::nullopt;
  // The kernel alone, no disk: it panics for want of a root file system long after the marker.
  // A standard guest under a usable KVM prints its banner within a second or two.
  std::string cmd = "timeout 20 " + qemu + " -accel kvm -m 256 -display none -nodefaults -no-reboot -serial stdio"
                    " -kernel '" + kernel + "' -append 'console=ttyS0 earlyprintk=ttyS0 panic=-1' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return std::nullopt;
  std::string out;
  char buf[4096];
  for (size_t n; (n = ::fread(buf, 1, sizeof buf, p)) > 0;) {
    out.append(buf, n);
    if (out.find("Linux version") != std::string::npos) break;
  }
  ::pclose(p);
  return out.find("Linux version") != std::string::npos ? "usable" : "unusable";
}

}  // namespace lab::testing

