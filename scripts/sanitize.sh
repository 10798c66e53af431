#!/usr/bin/env bash
# The unit tests (test_base, test_schema, test_state, test_engine) built with clang, ASan and
# UBSan into build-fuzz/ (the same build as the fuzzer: LAB_FUZZ=ON implies LAB_SANITIZE) and run.
#   bash scripts/sanitize.sh              build and run the unit tests
#   bash scripts/sanitize.sh build-only   build them and the fuzzer, run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
dir="${FUZZ_BUILD_DIR:-build-fuzz}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1 CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAB_FUZZ=ON >/dev/null
targets=(test_base test_schema test_state test_engine lab_file_fuzzer)
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"
[[ "${1:-}" == build-only ]] && exit 0
# Any report fails the run: UBSan aborts (-fno-sanitize-recover), ASan exits non-zero, and leaks
# count too.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for t in test_base test_schema test_state test_engine; do
  echo "== $t (ASan + UBSan)"
  "$dir/tests/$t" --reporter compact
done
