// What the qemu tests share: the guest kernel they boot and waiting for a guest's modules.
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "hv/qemu/agent_client.h"
#include "hv/qemu/kernel.h"

namespace lab::testing {

/// The Debian kernel the qemu tests boot, cached across runs (a download is 70 MB) in
/// /var/tmp/lab-test-kernels or LAB_TEST_KERNEL_CACHE; nothing when it cannot be had (the caller
/// SKIPs, said here).
inline std::optional<hv::qemu::GuestKernel> TestKernel() {
  const char* cache_env = std::getenv("LAB_TEST_KERNEL_CACHE");
  auto kernel = hv::qemu::FetchKernel(cache_env ? cache_env : "/var/tmp/lab-test-kernels");
  if (!kernel.ok()) {
    WARN("SKIP: no guest kernel: " + kernel.message());
    return std::nullopt;
  }
  return *kernel;
}

/// Waits (at most 3 minutes of TCG) for the guest init's background module loader to be done
/// (/run/lab/modules-loaded, read with the guest's cat).
inline bool WaitModulesLoaded(hv::qemu::AgentClient& agent) {
  for (int i = 0; i < 1800; ++i) {
    auto r = agent.Exec({"cat", "/run/lab/modules-loaded"}, 30000);
    if (!r.ok()) return false;
    if (r->exit_code == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace lab::testing
