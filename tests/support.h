// Shared helpers for tests.
#pragma once

#include <string>

namespace lab::testing {

/// True when running as root; otherwise prints "SKIP: <what> needs root" once per call.
bool RequireRoot(const std::string& what);
/// A fresh empty directory under /tmp, removed by the caller when it likes.
std::string TempDir(const std::string& prefix);
/// Path of a file in the source tree, e.g. Src("labs/nested-nat.yaml").
std::string Src(const std::string& relative);

}  // namespace lab::testing

#define LAB_REQUIRE_ROOT(what)                        \
  do {                                                \
    if (!::lab::testing::RequireRoot(what)) return;   \
  } while (0)
