// Shared helpers for tests.
#pragma once

#include <linux/if_packet.h>

#include <cstdint>
#include <optional>
#include <string>

namespace lab::testing {

/// True when running as root; otherwise prints "SKIP: <what> needs root" once per call.
bool RequireRoot(const std::string& what);
/// A fresh empty directory under /tmp, removed by the caller when it likes.
std::string TempDir(const std::string& prefix);
/// Path of a file in the source tree, e.g. Src("labs/nested-nat.yaml").
std::string Src(const std::string& relative);

/// Sends `count` Ethernet broadcasts of ethertype `proto` from source MAC `src_mac` through the
/// packet socket `fd` (bound as `to`), each carrying `marker` and its number; returns how many
/// went out. With CountMarkedFrames, the team and switch tests count copies of their own frames.
int SendMarkedBroadcasts(int fd, sockaddr_ll to, const std::string& src_mac, uint16_t proto,
                         const std::string& marker, int count);
/// Frames carrying `marker` that arrived at packet socket `fd` within 300 ms (not our own
/// transmissions).
int CountMarkedFrames(int fd, const std::string& marker);

/// /dev/kvm judged apart from lab doctor: "missing" when there is no /dev/kvm; else, where
/// qemu-system-x86_64 and a Linux kernel to boot are here (LAB_TEST_GUEST_KERNEL, or
/// /boot/vmlinuz-`uname -r`), "usable" when that standard guest, booted with -accel kvm, prints
/// "Linux version" (it is then running in 64-bit long mode) on its serial port within 60 s, and
/// "unusable" when it does not. nullopt when /dev/kvm is there but no such boot can be made.
std::optional<std::string> KvmStateByQemu();

}  // namespace lab::testing

#define LAB_REQUIRE_ROOT(what)                        \
  do {                                                \
    if (!::lab::testing::RequireRoot(what)) return;   \
  } while (0)
