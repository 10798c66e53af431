// Shared helpers for tests.
#pragma once

#include <linux/if_packet.h>

#include <cstdint>
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

}  // namespace lab::testing

#define LAB_REQUIRE_ROOT(what)                        \
  do {                                                \
    if (!::lab::testing::RequireRoot(what)) return;   \
  } while (0)
