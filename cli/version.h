// lab's version (CMake's project version) and the git commit the binary was built from
// ("unknown" outside a git checkout), for `lab --version`. Defined in a file generated at build
// time (cmake/version.cmake).
#pragma once

namespace lab::cli {

extern const char* const kVersion;
extern const char* const kCommit;

}  // namespace lab::cli
