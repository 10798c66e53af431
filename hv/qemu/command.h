// Running a helper program (apt-get, apt-cache, qemu-system-x86_64 -version) and reading what it
// printed. Only programs that fetch or describe things: kernel objects are never made this way.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace lab::hv::qemu {

/// What a finished helper program left: its exit code (128+N when killed by signal N) and its
/// stdout and stderr together.
struct CommandOutput {
  int exit_code = 0;
  std::string output;
};

/// Runs argv[0] (searched in PATH) with stdin from /dev/null in `dir` (empty: the current one),
/// waiting at most `timeout_ms`; a helper still running then is killed by its pid. An error only
/// when it could not be started or did not finish in time.
Result<CommandOutput> RunCommand(const std::vector<std::string>& argv, int timeout_ms, const std::string& dir = "");

/// The path of `program` in PATH, or "" when there is none.
std::string FindInPath(const std::string& program);

}  // namespace lab::hv::qemu
