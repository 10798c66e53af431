// Deadlines of waits that take a timeout in milliseconds (poll, the QMP and agent clients).
#pragma once

#include <chrono>

namespace lab {

/// Milliseconds left until `deadline`, 0 once it has passed.
inline int MsUntil(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace lab
