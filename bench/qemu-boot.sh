#!/usr/bin/env bash
# qemu guest boot: the floor against lab's guest init answering the agent's ping.
#
# Both boot the same QEMU, machine (q35), accelerator (KVM where lab doctor finds it usable for a
# standard guest, else TCG), CPU (svm exposed) and Debian kernel (vmlinux through PVH) with the same
# initramfs; the floor's init (lab-guest-init with `lab.floor` on the kernel command line) prints a
# marker on the serial console right after mounting /proc and powers off; lab's init loads the
# modules, finds the `lab.agent` port and answers ping. Time is from QEMU's start to the marker in
# console.log or to the ping reply. QEMU runs under nice 10. Prints every run and both medians.
#
# As root, after `bash scripts/build.sh`:  bash bench/qemu-boot.sh [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
lab=${LAB:-build/lab}
export LAB_STATE_DIR=${LAB_STATE_DIR:-/var/tmp/lab-bench-state}   # the guest kernel stays cached here
export LAB_RUN_DIR=$(mktemp -d /tmp/lab-bench-qemu.XXXXXX)
trap 'rm -rf "$LAB_RUN_DIR"' EXIT
"$lab" __qemu-boot --floor >/dev/null   # fetches and caches the kernel; not counted

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A times
for kind in floor agent; do
  for ((i = 1; i <= runs; i++)); do
    flag=""; [[ $kind == floor ]] && flag=--floor
    line=$("$lab" __qemu-boot $flag)
    echo "$line   (load $(cut -d' ' -f1 /proc/loadavg))"
    times[$kind]+="$(awk '{print $4}' <<<"$line")"$'\n'
  done
done
floor=$(printf '%s' "${times[floor]}" | median)
agent=$(printf '%s' "${times[agent]}" | median)
echo "median of $runs: floor ${floor} ms, agent ready ${agent} ms, ratio $(awk -v a="$agent" -v f="$floor" 'BEGIN {printf "%.2f", a / f}')"
