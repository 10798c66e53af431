#!/usr/bin/env bash
# Builds the lab-file fuzzer (clang, ASan + UBSan, into build-fuzz/) and runs it for a bounded
# time on a seed corpus assembled from labs/*.yaml, the golden error inputs and fuzz/regressions.
#   bash scripts/fuzz.sh [SECONDS]          default 60; LAB_FUZZ_RUNS=N runs N inputs instead
# Exit 0 when nothing was found; a crash leaves its input as build-fuzz/crash-* (add it to
# fuzz/regressions/ with the fix).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
dir="${FUZZ_BUILD_DIR:-build-fuzz}"
bash scripts/sanitize.sh build-only
corpus="$dir/corpus"
mkdir -p "$corpus"
# The seeds are copied each run; what libFuzzer adds to the corpus is kept between runs.
cp labs/*.yaml tests/schema/golden/*.yaml fuzz/regressions/* "$corpus/"
limit=()
if [[ -n "${LAB_FUZZ_RUNS:-}" ]]; then limit=(-runs="$LAB_FUZZ_RUNS"); else limit=(-max_total_time="$seconds"); fi
cd "$dir"
# -max_len: past 1 MiB the reader stops at once; 64 KiB inputs cover every path of the reader.
# -timeout: a lab file that takes a second to read is a bug (an alias bomb, a quadratic rule).
./fuzz/lab_file_fuzzer -dict=../fuzz/lab.dict -max_len=65536 -timeout=5 -rss_limit_mb=2048 \
  -print_final_stats=1 "${limit[@]}" corpus 2>&1 | tail -n 25
