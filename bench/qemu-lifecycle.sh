#!/usr/bin/env bash
# qemu VM lifecycle on QMP (hv/qemu/control.h): Save-VM to a file, Start-VM from it, Checkpoint-VM,
# Restore-VMCheckpoint and Move-VM (live migration between two local QEMU processes), timed.
#
# One guest (q35, 512 MiB, KVM where lab doctor finds it usable for a standard guest, else TCG,
# nice 10; lab's initramfs, a blank 256 MiB qcow2 as its disk with node name "disk") boots once;
# then each round: save to a file (pause, max-bandwidth raised, migrate to `exec:cat`), quit,
# start a new QEMU with the file as -incoming and cont (until "running", and until the agent
# answers), checkpoint with memory (snapshot-save job) and restore it (snapshot-load job), and
# migrate live to a third QEMU started with -incoming defer over a unix socket. A process started
# in the guest after boot must survive every step, or the run fails. Prints every round and the
# median of each figure.
#
# As root, after `bash scripts/build.sh`:  bash bench/qemu-lifecycle.sh [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
lab=${LAB:-build/lab}
export LAB_STATE_DIR=${LAB_STATE_DIR:-/var/tmp/lab-bench-state}   # the guest kernel stays cached here
export LAB_RUN_DIR=$(mktemp -d /tmp/lab-bench-qemu.XXXXXX)
trap 'rm -rf "$LAB_RUN_DIR"' EXIT

out=$("$lab" __qemu-lifecycle --rounds "$rounds")
echo "$out   (load $(cut -d' ' -f1 /proc/loadavg))"
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median of $rounds rounds:"
for key in save_ms state_mb restore_running_ms restore_agent_ms checkpoint_ms checkpoint_restore_ms migrate_ms \
           migrate_total_ms downtime_ms; do
  printf '  %-22s %s\n' "$key" "$(grep -o "$key=[0-9.]*" <<<"$out" | cut -d= -f2 | median)"
done
