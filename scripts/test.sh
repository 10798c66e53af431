#!/usr/bin/env bash
# Builds lab and runs the whole test suite. Tests that need root print SKIP without it;
# as root (as CI runs) they all run, with real namespaces, bridges, nftables and cgroups.
# Then the bad-input checks (docs/fuzzing.md): the unit tests built with ASan + UBSan, and a
# bounded fuzz run of the lab-file reader (LAB_FUZZ_SECONDS, default 60; 0 skips both).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# The export tests' PowerShell grammar check (optional: its test prints SKIP without it).
bash scripts/ps-grammar.sh || echo "lab: the PowerShell grammar check could not be installed; its test will SKIP" >&2
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 900 "$@")
if [[ "${LAB_FUZZ_SECONDS:-60}" != 0 ]]; then
  bash scripts/sanitize.sh
  bash scripts/fuzz.sh "${LAB_FUZZ_SECONDS:-60}"
fi
