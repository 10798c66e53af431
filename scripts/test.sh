#!/usr/bin/env bash
# Builds lab and runs the whole test suite. Tests that need root print SKIP without it;
# as root (as CI runs) they all run, with real namespaces, bridges, nftables and cgroups.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 "$@"
