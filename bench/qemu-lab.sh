#!/usr/bin/env bash
# Labs of qemu VMs (issue 20's targets), through `lab up` itself rather than the driver's pieces:
#
# 1. Ready vs floor. Per run, in this order: the floor (`lab __qemu-boot --floor`: the same QEMU,
#    q35, accelerator and Debian kernel booted to lab-guest-init with `lab.floor`, which prints a
#    marker and powers off; time from QEMU's start to the marker; 384 MiB) and then `lab up` of a
#    lab with one qemu VM (image: host, 512 MiB, one adapter on an external switch with an
#    address). "Ready" = the executor's step timings from `lab up -v --log-format json`: `create
#    partition/<vm>` (QEMU started, agent answering) + `create adapter/<vm>/<name>` (tap plugged,
#    the guest's NIC up with its address). Also printed: `lab up`'s wall time, which adds the
#    host-side steps (host, network, stand-in, switch) and the plan. Then `lab down`. Then the same
#    lab with the VM on an image (`image: tiny`, an OCI layout of busybox-static made here; its
#    root is its own qcow2 over the image's disk, which one untimed `lab up` makes first).
# 2. Idle. The one-VM lab again, left 15 s to settle (the guest's late modules load in the
#    background), then its QEMU's utime+stime (/proc/PID/stat) over 60 s as % of one core, and its
#    PSS (/proc/PID/smaps_rollup). Then a lab of three such VMs: PSS per VM (the sum over the three
#    QEMUs / 3) and RSS per VM beside it.
# 3. Ten qemu VMs (256 MiB each) on one external switch in one `lab up`, each with an address;
#    checks: each pings the stand-in gateway and its next neighbour. Times `lab up`, `lab check`
#    (must pass), a no-op `lab up` (must say "No changes."), `lab down`; the QEMU pids recorded
#    before down (qemu.pid: "PID START_TIME") must all have ended when it returns (a zombie left
#    for pid 1 to reap counts as ended).
#
# Every figure is printed with the 1-minute load average at the time. Own state and run dirs under
# /var/tmp/lab-bench-qemu; the guest kernel is linked from /var/tmp/lab-test-kernels when it is
# there (else lab fetches it with apt). Every lab brought up is brought down on exit, whatever
# happens.
#
# As root, after `bash scripts/build.sh`:  bash bench/qemu-lab.sh [RUNS=5] [IDLE_SECONDS=60] [SECTIONS=123]
# (SECTIONS: which of the three to run, e.g. 1 for ready vs floor only; LAB_BENCH_DIR: another
# base directory than /var/tmp/lab-bench-qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
idle_s=${2:-60}
sections=${3:-123}
lab=$(realpath "${LAB:-build/lab}")
base=${LAB_BENCH_DIR:-/var/tmp/lab-bench-qemu}
export LAB_STATE_DIR=$base/state LAB_RUN_DIR=$base/run
mkdir -p "$LAB_STATE_DIR/qemu/kernels" "$LAB_RUN_DIR" "$base/labs"
kcache=/var/tmp/lab-test-kernels/linux-image-6.1.0-57-amd64_6.1.192-3
[[ -d $kcache ]] && ln -sfn "$kcache" "$LAB_STATE_DIR/qemu/kernels/"

up_labs=()
cleanup() { for f in "${up_labs[@]}"; do "$lab" down "$f" >/dev/null 2>&1 || echo "lab down $f failed" >&2; done; }
trap cleanup EXIT
load() { cut -d' ' -f1 /proc/loadavg; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
now_ms() { date +%s%3N; }

# lab_file NAME VMS MIB: a host hv1 with an external switch on network lan 10.3x.0.0/24 (stand-in
# .1) and VMS qemu VMs vm1.. at .21.., each pinging the stand-in and (with more than one) the next.
lab_file() {
  local name=$1 n=$2 mib=$3 image=${4:-} f=$base/labs/$1.yaml i
  {
    echo "lab: $name"
    [[ -n $image ]] && echo "images: {tiny: {oci: ./tiny-layout:1.0}}"
    echo "networks:"
    echo "  lan: {subnet: 10.37.0.0/24, gateway: 10.37.0.1}"
    echo "hosts:"
    echo "  hv1:"
    echo "    nics:"
    echo "      Ethernet: {network: lan, ip: 10.37.0.11/24, gateway: 10.37.0.1}"
    echo "    switches:"
    echo "      External: {type: external, nics: [Ethernet], allow_management_os: true}"
    echo "    vms:"
    for ((i = 1; i <= n; i++)); do
      echo "      vm$i:"
      echo "        driver: qemu"
      [[ -n $image ]] && echo "        image: tiny"
      echo "        memory: {startup: ${mib}MiB}"
      echo "        adapters:"
      echo "          - {name: Ethernet, switch: External, ip: 10.37.0.$((20 + i))/24, gateway: 10.37.0.1}"
    done
    echo "checks:"
    for ((i = 1; i <= n; i++)); do
      echo "  - {from: vm$i, ping: 10.37.0.1}"
      ((n > 1)) && echo "  - {from: vm$i, ping: 10.37.0.$((20 + i % n + 1))}"
    done
  } >"$f"
  echo "$f"
}
# tiny_image: an OCI layout at $base/labs/tiny-layout (ref 1.0) of one layer, busybox-static's
# shell and applets (what an image VM needs beside lab's own tools, which lab adds at /opt/lab).
tiny_image() {
  local d=$base/img blobs=$base/labs/tiny-layout/blobs/sha256 layer config manifest
  rm -rf "$d" "$base/labs/tiny-layout"
  mkdir -p "$d/root/bin" "$d/root/etc" "$d/root/tmp" "$d/root/root" "$d/root/usr/bin" "$blobs"
  cp "$(command -v busybox)" "$d/root/bin/busybox"
  for a in sh cat ls echo mkdir sleep ip hostname; do ln -s busybox "$d/root/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$d/root/etc/passwd"
  chmod 1777 "$d/root/tmp"
  tar -C "$d/root" --owner=0 --group=0 -czf "$d/layer.tar.gz" bin etc tmp root usr
  put() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$blobs/$h"; echo "$h $(stat -c %s "$1")"; }
  layer=($(put "$d/layer.tar.gz"))
  echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}' >"$d/config.json"
  config=($(put "$d/config.json"))
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "${config[0]}" "${config[1]}" "${layer[0]}" "${layer[1]}" >"$d/manifest.json"
  manifest=($(put "$d/manifest.json"))
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1.0"}}]}' \
    "${manifest[0]}" "${manifest[1]}" >"$base/labs/tiny-layout/index.json"
  echo '{"imageLayoutVersion": "1.0.0"}' >"$base/labs/tiny-layout/oci-layout"
}

# The QEMU pids of lab NAME (first field of each qemu.pid under its run dir).
qemu_pids() { cat "$LAB_RUN_DIR"/"$1"-*/q/*/qemu.pid 2>/dev/null | awk '{print $1}'; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }   # utime + stime
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
rss_kb() { awk '/^Rss:/ {print $2}' "/proc/$1/smaps_rollup"; }

"$lab" __qemu-boot --floor >/dev/null   # fetches the kernel if needed and warms the page cache

one=$(lab_file qbench-one 1 512)
if [[ $sections == *1* ]]; then
echo "== 1. ready vs floor ($runs runs; image: host and image: tiny, a busybox OCI image)"
tiny_image
img=$(lab_file qbench-img 1 512 tiny)
up_labs+=("$img")
"$lab" up "$img" >/dev/null   # the image's disk is made once: not counted
"$lab" down "$img" >/dev/null
up_labs=()
# up_ready FILE: `lab up` of FILE, timed; prints "READY VM ADAPTER WALL" (ms); then `lab down`.
up_ready() {
  local f=$1 t0 wall vm ad
  up_labs+=("$f")
  t0=$(now_ms)
  "$lab" up -v --log-format json "$f" >"$base/up.out" 2>"$base/up.json"
  wall=$(($(now_ms) - t0))
  vm=$(grep -o '"create partition/vm1: [0-9.]* ms' "$base/up.json" | grep -o '[0-9.]* ms' | cut -d' ' -f1)
  ad=$(grep -o '"create adapter/vm1/Ethernet: [0-9.]* ms' "$base/up.json" | grep -o '[0-9.]* ms' | cut -d' ' -f1)
  "$lab" down "$f" >/dev/null
  up_labs=()
  echo "$(awk -v a="$vm" -v b="$ad" 'BEGIN {printf "%.0f", a + b}') $vm $ad $wall"
}
ratio() { awk -v a="$1" -v f="$2" 'BEGIN {printf "%.2f", a / f}'; }
floors=() readys=() walls=() ireadys=()
for ((r = 1; r <= runs; r++)); do
  floor=$("$lab" __qemu-boot --floor | awk '{print $4}')
  read -r ready vm ad wall < <(up_ready "$one")
  read -r iready ivm iad iwall < <(up_ready "$img")
  echo "run $r: floor ${floor} ms; image: host ready ${ready} ms (VM ${vm} + adapter ${ad}), lab up wall ${wall} ms, ratio $(ratio "$ready" "$floor"); image: tiny ready ${iready} ms (VM ${ivm} + adapter ${iad}), ratio $(ratio "$iready" "$floor")   (load $(load))"
  floors+=("$floor") readys+=("$ready") walls+=("$wall") ireadys+=("$iready")
done
mf=$(printf '%s\n' "${floors[@]}" | median)
mr=$(printf '%s\n' "${readys[@]}" | median)
mw=$(printf '%s\n' "${walls[@]}" | median)
mi=$(printf '%s\n' "${ireadys[@]}" | median)
echo "median of $runs: floor ${mf} ms; image: host ready ${mr} ms, ratio $(ratio "$mr" "$mf"), lab up wall ${mw} ms ($(ratio "$mw" "$mf") x floor); image: tiny ready ${mi} ms, ratio $(ratio "$mi" "$mf")   (load $(load))"
fi

if [[ $sections == *2* ]]; then
echo "== 2. idle"
tck=$(getconf CLK_TCK)
up_labs+=("$one")
"$lab" up "$one" >/dev/null
pid=$(qemu_pids qbench-one)
sleep 15
c0=$(cpu_ticks "$pid"); t0=$(now_ms)
sleep "$idle_s"
c1=$(cpu_ticks "$pid"); t1=$(now_ms)
echo "1 idle VM (512 MiB): QEMU CPU $(awk -v c=$((c1 - c0)) -v k="$tck" -v ms=$((t1 - t0)) 'BEGIN {printf "%.2f", 100 * c / k / (ms / 1000)}') % of one core over $(((t1 - t0) / 1000)) s, PSS $(($(pss_kb "$pid") / 1024)) MiB, RSS $(($(rss_kb "$pid") / 1024)) MiB   (load $(load))"
"$lab" down "$one" >/dev/null
up_labs=()
three=$(lab_file qbench-three 3 512)
up_labs+=("$three")
"$lab" up "$three" >/dev/null
sleep 15
pss=0 rss=0 cpu0=0 n=0
pids3=$(qemu_pids qbench-three)
for p in $pids3; do pss=$((pss + $(pss_kb "$p"))); rss=$((rss + $(rss_kb "$p"))); cpu0=$((cpu0 + $(cpu_ticks "$p"))); n=$((n + 1)); done
t0=$(now_ms); sleep 20; cpu1=0
for p in $pids3; do cpu1=$((cpu1 + $(cpu_ticks "$p"))); done; t1=$(now_ms)
echo "$n idle VMs (512 MiB): PSS per VM $((pss / n / 1024)) MiB, RSS per VM $((rss / n / 1024)) MiB, CPU per VM $(awk -v c=$((cpu1 - cpu0)) -v n="$n" -v k="$tck" -v ms=$((t1 - t0)) 'BEGIN {printf "%.2f", 100 * c / n / k / (ms / 1000)}') % of one core over $(((t1 - t0) / 1000)) s   (load $(load))"
"$lab" down "$three" >/dev/null
up_labs=()

fi

[[ $sections == *3* ]] || exit 0
echo "== 3. ten qemu VMs in one lab up"
ten=$(lab_file qbench-ten 10 256)
up_labs+=("$ten")
t0=$(now_ms); "$lab" up "$ten" >"$base/up10.out" 2>&1 || { tail -20 "$base/up10.out"; exit 1; }
echo "lab up of 10 qemu VMs (256 MiB each): $(($(now_ms) - t0)) ms, $(tail -1 "$base/up10.out")   (load $(load))"
t0=$(now_ms)
if "$lab" check "$ten" >"$base/check10.out" 2>&1; then ok=yes; else ok=NO; fi
echo "lab check: $(tail -1 "$base/check10.out") in $(($(now_ms) - t0)) ms (all passed: $ok)   (load $(load))"
t0=$(now_ms); "$lab" up "$ten" >"$base/noop10.out" 2>&1
echo "no-op lab up: $(($(now_ms) - t0)) ms, $(grep -c 'No changes.' "$base/noop10.out") 'No changes.'   (load $(load))"
pids10=$(cat "$LAB_RUN_DIR"/qbench-ten-*/q/*/qemu.pid)
echo "QEMU processes before down: $(wc -l <<<"$pids10")"
t0=$(now_ms); "$lab" down "$ten" >/dev/null
echo "lab down: $(($(now_ms) - t0)) ms   (load $(load))"
up_labs=()
# A QEMU that exited but is not yet reaped (a zombie: its parent is pid 1 once lab exited, and this
# machine's pid 1 reaps late) has ended: only a process in another state counts as left.
left=0 zombies=0
while read -r p start; do
  st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $1, $20}') || true
  [[ ${st#* } == "$start" ]] || continue
  if [[ ${st%% *} == Z ]]; then zombies=$((zombies + 1)); else left=$((left + 1)); fi
done <<<"$pids10"
echo "QEMU processes of the lab left after down: $left running ($zombies exited, not yet reaped by pid 1)"
[[ $ok == yes && $left == 0 ]]
