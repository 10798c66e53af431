#!/usr/bin/env bash
# Installs the Debian 12 packages lab needs to build, test and run, if any is missing.
# Only Debian's own packages: nothing is downloaded from anywhere else.
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libyaml-dev libcli11-dev libsqlite3-dev libspdlog-dev nlohmann-json3-dev catch2
  libnl-3-dev libnl-route-3-dev libnftables-dev libseccomp-dev
  libarchive-dev libssl-dev   # machine images: imports (tar, OCI, docker save) and their sha256
  busybox-static   # the tests' small images, made offline
  dnsmasq-base ccache
  libarchive-dev   # the qemu driver: the kernel .deb, its payload, the initramfs (hv/qemu/)
  qemu-system-x86 busybox-static   # the qemu driver's tests boot real guests (busybox: commands in them)
  qemu-utils e2fsprogs   # the qemu driver: qcow2 disks of VMs (qemu-img), ext4 disks of images (mkfs.ext4 -d)
  nftables   # the qemu guest test runs nft inside a guest whose root is the host tree (never from lab)
  dpkg-dev file   # the Debian package (cpack -G DEB: dpkg-shlibdeps finds its Depends)
  graphviz        # lab graph --format svg|png runs its dot; the graph tests render every lab with it
  clang-14 libclang-rt-14-dev   # the fuzzer and the sanitizer build (scripts/fuzz.sh, scripts/sanitize.sh)
  mmdebstrap   # machine images built from Debian's packages (debian: images; their [root] test)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "lab: missing Debian packages: ${missing[*]}; run this as root to install them" >&2
    exit 1
  fi
  echo "lab: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
