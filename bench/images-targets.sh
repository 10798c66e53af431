#!/usr/bin/env bash
# Issue 19's targets for imported images (never part of the test run). Root, from the checkout,
# after `bash scripts/build.sh`; no network:
#
#   bash bench/images-targets.sh [--runs R] [--vms N] [--oci-mib M] [--only a|b]
#
# (a) `lab up` of a flat lab of N VMs (bench/gen_lab.py flat N, default 200) on one cached
#     imported image (`images: {base: {rootfs: DIR}}`, DIR = busybox-static with its applets as
#     symlinks, /etc/passwd, /etc/group) against the same lab on `host` (no image:), then R no-op
#     `lab up`s of each (must say `No changes.`) and `lab down`. Target: image <= 1.1x host.
#     Both labs share one LAB_STATE_DIR/LAB_RUN_DIR under a temporary directory; the image is
#     imported (`lab image build`) and the base layer made by a warm-up up/down of each lab before
#     anything is timed, so `up` is timed with the image cached. Runs alternate host, image.
#     After every `lab down`: `lab status` lists no lab, nothing is mounted under the temporary
#     directory, no cgroup of the lab is left, STATE/disks is empty.
# (b) `lab image import` of an OCI image layout of about M MiB (default 200) made here by python3:
#     index.json, a manifest, a config and 3 layers of random-content files (sha256 digests),
#     once with uncompressed tar layers and once with gzip layers (level 1), each into a fresh
#     state directory. Target: <= 5 s. The layout was just written, so it is in the page cache.
#
# Every lab runs with -j 2. The temporary directory is removed at the end unless something is
# still mounted under it (then it is left and said).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
LAB=${LAB:-$ROOT/build/lab}
RUNS=3
VMS=200
OCI_MIB=200
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --vms) VMS=$2; shift 2 ;;
    --oci-mib) OCI_MIB=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--runs R] [--vms N] [--oci-mib M] [--only a|b]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "root only" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs busybox-static at /bin/busybox" >&2; exit 1; }

WORK=$(mktemp -d /tmp/lab-imgtargets.XXXXXX)
export LAB_STATE_DIR=$WORK/state LAB_RUN_DIR=$WORK/run
UP_LABS=()

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

leftovers() {  # what a `lab down` of lab $1 must not leave
  local name=$1 bad=0
  if grep -q " $WORK/" /proc/mounts; then echo "LEFT: mounts under $WORK"; grep " $WORK/" /proc/mounts | head -3; bad=1; fi
  if ls -d /sys/fs/cgroup/*/lab/"$name"-* /sys/fs/cgroup/lab/"$name"-* 2>/dev/null | grep -q .; then
    echo "LEFT: cgroups of $name"; bad=1
  fi
  if [ -n "$(ls -A "$LAB_STATE_DIR/disks" 2>/dev/null)" ]; then echo "LEFT: disks in $LAB_STATE_DIR/disks"; bad=1; fi
  if "$LAB" status 2>/dev/null | grep -q "$name"; then echo "LEFT: lab status lists $name"; bad=1; fi
  return $bad
}

cleanup() {
  set +e
  for name in "${UP_LABS[@]}"; do "$LAB" down -j 2 "$name" >/dev/null 2>&1; done
  if grep -q " $WORK/" /proc/mounts; then
    echo "still mounted under $WORK: left in place" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

echo "images targets: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), main at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"

# ---- (a) flat lab on one cached image vs on host ---------------------------------------------

bench_a() {
  local rootfs=$WORK/rootfs
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,run,var}
  chmod 1777 "$rootfs/tmp"; chmod 700 "$rootfs/root"
  cp /bin/busybox "$rootfs/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"
  echo 'root:x:0:' > "$rootfs/etc/group"
  echo "rootfs: busybox $(/bin/busybox | head -1 | awk '{print $2}'), $(ls "$rootfs/bin" | wc -l) entries in /bin, $(du -sh "$rootfs" | cut -f1)"

  local host=$WORK/flat-host.yaml img=$WORK/flat-image.yaml
  python3 "$HERE/gen_lab.py" flat "$VMS" > "$host"
  # The same lab on the image: its own name, `images:` after the name, `image: base` on each VM.
  sed -e "s/^lab: bench-flat-$VMS\$/lab: bench-flat-$VMS-image\nimages:\n  base: {rootfs: ${rootfs//\//\\/}}/" \
      -e 's/^\(      vm[0-9]*: {\)/\1image: base, /' "$host" > "$img"
  [ "$(grep -c 'image: base' "$img")" = "$VMS" ] || { echo "lab file on the image not made" >&2; exit 1; }
  "$LAB" validate "$img" >/dev/null
  local t0 t1
  t0=$(now); "$LAB" image build "$img" >/dev/null; t1=$(now)
  echo "image imported (lab image build): $(secs "$t0" "$t1") s; $("$LAB" image ls | tail -n +2 | head -1)"

  declare -A up noop down
  local kind file name out
  # warm-up: the base layer, the image's first use, the page cache
  for kind in host image; do
    file=$([ $kind = host ] && echo "$host" || echo "$img"); name=$(sed -n 's/^lab: //p' "$file")
    UP_LABS+=("$name")
    "$LAB" up -j 2 "$file" >/dev/null; "$LAB" down -j 2 "$name" >/dev/null
    leftovers "$name"
  done
  for r in $(seq 1 "$RUNS"); do
    for kind in host image; do
      file=$([ $kind = host ] && echo "$host" || echo "$img"); name=$(sed -n 's/^lab: //p' "$file")
      local l; l=$(load)
      t0=$(now); "$LAB" up -j 2 "$file" >/dev/null; t1=$(now)
      up[$kind]+="$(secs "$t0" "$t1") "
      local n=""
      for k in 1 2 3; do
        t0=$(now); out=$("$LAB" up -j 2 "$file"); t1=$(now)
        grep -q "No changes." <<<"$out" || { echo "a second up of $name changed something: $out" | tail -5 >&2; exit 1; }
        n+="$(secs "$t0" "$t1") "
      done
      noop[$kind]+="$(median $n) "
      t0=$(now); "$LAB" down -j 2 "$name" >/dev/null; t1=$(now)
      down[$kind]+="$(secs "$t0" "$t1") "
      leftovers "$name"
      echo "  run $r $kind: up $(echo "${up[$kind]}" | awk '{print $NF}') s, no-op up (median of 3: $n) $(median $n) s, down $(echo "${down[$kind]}" | awk '{print $NF}') s, load $l"
    done
  done
  local uh ui nh ni
  uh=$(median ${up[host]}); ui=$(median ${up[image]}); nh=$(median ${noop[host]}); ni=$(median ${noop[image]})
  echo "(a) flat $VMS, median of $RUNS runs (-j 2):"
  echo "    up: host $uh s, image $ui s, ratio $(python3 -c "print(f'{$ui/$uh:.2f}x')") (target <= 1.1x); all runs host: ${up[host]}/ image: ${up[image]}"
  echo "    no-op up: host $nh s, image $ni s, ratio $(python3 -c "print(f'{$ni/$nh:.2f}x')")"
  echo "    down: host $(median ${down[host]}) s, image $(median ${down[image]}) s"
  echo "    lab down left nothing (mounts, cgroups, disks, lab status) after every run"
}

# ---- (b) import of a ~200 MiB OCI layout -----------------------------------------------------

make_oci() {  # make_oci DIR gzip|tar MIB
  python3 - "$1" "$2" "$3" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
out, comp, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)
def tar_of(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "link":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, data, 0o777
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), (0o755 if name.endswith("busybox") else 0o644)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()
total = mib << 20
# Layer 1: a small system (busybox + applets) and 45% of the bytes in 1 MiB files; layer 2: 35%
# in 256 KiB files; layer 3: 20% in 16 KiB files (many small files).
with open("/bin/busybox", "rb") as f:
    bb = f.read()
applets = [a for a in os.popen("/bin/busybox --list").read().split() if a != "busybox"]
layers = []
l1 = [("bin", "dir", None), ("etc", "dir", None), ("tmp", "dir", None), ("data1", "dir", None),
      ("bin/busybox", "file", bb), ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n")]
l1 += [("bin/" + a, "link", "busybox") for a in applets]
for share, size, d in ((45, 1 << 20, "data1"), (35, 256 << 10, "data2"), (20, 16 << 10, "data3")):
    n = total * share // 100 // size
    entries = l1 if d == "data1" else [(d, "dir", None)]
    entries += [(f"{d}/f{i:05d}", "file", os.urandom(size)) for i in range(n)]
    layers.append((d, n, tar_of(entries)))
descs = []
for d, n, raw in layers:
    data = gzip.compress(raw, compresslevel=1, mtime=0) if comp == "gzip" else raw
    digest, size = put(data)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if comp == "gzip" else ""),
                  "digest": digest, "size": size})
    print(f"  layer {d}: {n} files, tar {len(raw) / 2**20:.1f} MiB, blob {size / 2**20:.1f} MiB")
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest() for _, _, raw in layers]},
                     "config": {}}).encode()
cd, cs = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                       "layers": descs}).encode()
md, ms = put(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion": "1.0.0"}')
EOF
}

bench_b() {
  local comp layout t0 t1 times
  for comp in tar gzip; do
    layout=$WORK/oci-$comp
    t0=$(now); make_oci "$layout" "$comp" "$OCI_MIB"; t1=$(now)
    echo "OCI layout ($comp layers) made in $(secs "$t0" "$t1") s: $(du -sm "$layout" | cut -f1) MiB"
    times=""
    for r in $(seq 1 "$RUNS"); do
      local st=$WORK/import-state-$comp-$r
      local l; l=$(load)
      t0=$(now); LAB_STATE_DIR=$st "$LAB" image import "$layout" --name big >/dev/null; t1=$(now)
      times+="$(secs "$t0" "$t1") "
      echo "  import $r: $(secs "$t0" "$t1") s, tree $(du -sm "$st/images" | cut -f1) MiB, load $l"
      rm -rf "$st"
    done
    echo "(b) import of the ${OCI_MIB} MiB OCI layout, $comp layers: median $(median $times) s of $RUNS ($times) (target <= 5 s)"
    rm -rf "$layout"
  done
}

[ "$ONLY" = b ] || bench_a
[ "$ONLY" = a ] || bench_b
