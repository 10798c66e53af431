#!/usr/bin/env bash
# qemu VMs started from a template of their image (issue 20, "beyond the floor"; docs/qemu.md
# "Templates") against a cold boot, through `lab up` itself.
#
# The lab: one host with an internal switch and one qemu VM on a busybox image (a rootfs tarball
# made here from this machine's busybox-static), 256 MiB, one adapter with an address.
# 1. The template's one-time cost: `lab up` with no template yet; the template's own figures
#    (template.json: agent answering, modules loaded, saved) and the VM's "made" time.
# 2. RUNS pairs, alternating: `lab up` with the template there (warm), then with
#    LAB_QEMU_TEMPLATES=off (a cold boot of the same VM). "Ready" = the executor's step timings
#    from `lab up -v --log-format json`: `create partition/vm1` (QEMU started, the guest answering
#    as itself) + `create adapter/vm1/Ethernet` (tap plugged, the guest's NIC up with its
#    address), as bench/qemu-lab.sh reads them. `lab down` after each.
# Every figure is printed with the 1-minute load average at the time. Own state and run dirs under
# /var/tmp/lab-bench-template (removed first: the template is made again); the guest kernel is
# linked from /var/tmp/lab-test-kernels when it is there. Labs brought up are brought down on exit.
#
# As root, after `bash scripts/build.sh`:  bash bench/qemu-template.sh [RUNS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
lab=$(realpath "${LAB:-build/lab}")
base=/var/tmp/lab-bench-template
[[ -d $base/state ]] && LAB_STATE_DIR=$base/state LAB_RUN_DIR=$base/run "$lab" down qbench-tpl >/dev/null 2>&1 || true
rm -rf "$base/state" "$base/labs"
export LAB_STATE_DIR=$base/state LAB_RUN_DIR=$base/run
mkdir -p "$LAB_STATE_DIR/qemu/kernels" "$LAB_RUN_DIR" "$base/labs/img/root"
kcache=/var/tmp/lab-test-kernels/linux-image-6.1.0-57-amd64_6.1.192-3
[[ -d $kcache ]] && ln -sfn "$kcache" "$LAB_STATE_DIR/qemu/kernels/"

root=$base/labs/img/root
mkdir -p "$root"/{bin,etc,root,tmp}
cp "$(command -v busybox)" "$root/bin/busybox"
for a in sh cat ls echo rm mkdir test hostname; do ln -sf busybox "$root/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
chmod 1777 "$root/tmp"
tar -C "$root" -czf "$base/labs/img/tiny.tar.gz" .
f=$base/labs/qbench-tpl.yaml
cat >"$f" <<YAML
lab: qbench-tpl
images:
  tiny: {rootfs: img/tiny.tar.gz}
hosts:
  hv1:
    switches:
      Lab: {type: internal, ip: 10.38.0.1/24}
    vms:
      vm1:
        driver: qemu
        image: tiny
        memory: {startup: 256MiB}
        adapters: [{name: Ethernet, switch: Lab, ip: 10.38.0.10/24}]
YAML

up=no
cleanup() { [[ $up == yes ]] && "$lab" down "$f" >/dev/null 2>&1; true; }
trap cleanup EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# up_ready [ENV...]: `lab up` of the lab; prints "VM_MS ADAPTER_MS READY_MS"
up_ready() {
  up=yes
  env "$@" "$lab" up -v --log-format json "$f" >"$base/up.out" 2>"$base/up.json" || { tail -20 "$base/up.out" >&2; exit 1; }
  local vm ad
  vm=$(grep -o '"create partition/vm1: [0-9.]* ms' "$base/up.json" | grep -o '[0-9.]* ms' | cut -d' ' -f1)
  ad=$(grep -o '"create adapter/vm1/Ethernet: [0-9.]* ms' "$base/up.json" | grep -o '[0-9.]* ms' | cut -d' ' -f1)
  echo "$vm $ad $(awk -v a="$vm" -v b="$ad" 'BEGIN {printf "%.0f", a + b}')"
}
down() { "$lab" down "$f" >/dev/null; up=no; }

echo "== 1. the template's one-time cost"
"$lab" image build "$f" >/dev/null 2>&1 || true   # the image itself is not the template's cost
read -r vm ad ready < <(up_ready)
tpl=$(ls -d "$LAB_STATE_DIR"/qemu/templates/*/ | head -1)
echo "first lab up: VM ${vm} ms (includes making the image's disk and the template), adapter ${ad} ms   (load $(load))"
echo "template: $(tr -d '\n ' <"$tpl/template.json" | grep -o '"agent_seconds":[0-9.]*,\|"ready_seconds":[0-9.]*,\|"total_seconds":[0-9.]*' | tr -d '",' | tr '\n' ' ')   state $(du -m "$tpl/state.vm" | cut -f1) MiB"
echo "note: $(cat "$LAB_RUN_DIR"/qbench-tpl-*/q/vm1/template.txt)"
down

echo "== 2. warm template vs cold boot ($runs pairs)"
warm=() cold=()
for ((r = 1; r <= runs; r++)); do
  read -r vm ad w < <(up_ready)
  note=$(cat "$LAB_RUN_DIR"/qbench-tpl-*/q/vm1/template.txt)
  [[ $note == started* ]] || { echo "run $r: not from the template: $note" >&2; exit 1; }
  down
  echo "run $r: from template: ready ${w} ms (VM ${vm} + adapter ${ad})   (load $(load))"
  read -r vm ad c < <(up_ready LAB_QEMU_TEMPLATES=off)
  down
  echo "run $r: cold boot:     ready ${c} ms (VM ${vm} + adapter ${ad})   (load $(load))"
  warm+=("$w") cold+=("$c")
done
mw=$(printf '%s\n' "${warm[@]}" | median)
mc=$(printf '%s\n' "${cold[@]}" | median)
echo "median of $runs: from template ${mw} ms, cold boot ${mc} ms ($(awk -v a="$mc" -v b="$mw" 'BEGIN {printf "%.1f", a / b}')x)   (load $(load))"
