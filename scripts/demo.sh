#!/usr/bin/env bash
# The main job: build lab, then bring up, check and take down an example lab (as root).
#   bash scripts/demo.sh [LAB_FILE [MACHINE]]   default: labs/nested-nat.yaml nested1
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "lab demo: needs root (it makes network namespaces, bridges, cgroups and mounts)" >&2
  exit 1
fi
bash scripts/build.sh
file="${1:-labs/nested-nat.yaml}"
machine="${2:-nested1}"
lab="${BUILD_DIR:-build}/lab"
step() { printf '\n\033[1m$ lab %s\033[0m\n' "$*"; "$lab" "$@"; }

step validate "$file"
step graph "$file"
step up "$file"
# From here on, take the lab down whatever happens.
trap 'step down "$file" || true' EXIT
status=0
step check "$file" || status=$?
step up "$file"
step status "$file"
step exec "$file" "$machine" -- cat /etc/resolv.conf || true
trap - EXIT
step down "$file"
if ((status)); then
  echo "lab demo: some checks failed" >&2
  exit "$status"
fi
printf '\nlab demo: %s came up, passed its checks and was taken down.\n' "$file"
