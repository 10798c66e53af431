#!/usr/bin/env bash
# Builds lab (and its tests) into build/ with the packages from scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# ccache: paths relative to the checkout, so clones and worktrees elsewhere share its cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# and the tests' precompiled header (tests/CMakeLists.txt) is cacheable.
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S . -B "${BUILD_DIR:-build}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "${BUILD_DIR:-build}" -j"$(nproc)"
