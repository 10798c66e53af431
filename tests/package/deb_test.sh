#!/usr/bin/env bash
# The Debian package as a user gets it: built with cpack from this build tree, its control
# fields, its files unpacked into a scratch root (no install on this machine), the unpacked lab
# run from there (it finds its lab-init in libexec/lab with no variable set), and, where the
# package archive's lists are present, apt's verdict that every Depends: can be installed.
#   tests/package/deb_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
for tool in cpack dpkg-deb dpkg-shlibdeps; do
  if ! command -v "$tool" >/dev/null; then echo "SKIP: the .deb test needs $tool (apt-get install dpkg-dev)"; exit 0; fi
done
work=$(mktemp -d /tmp/lab-deb-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
check() {  # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok: $1"; else echo "FAILED: $1"; fail=1; fi
}

(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; echo "FAILED: cpack"; exit 1; }
deb=$(ls "$work"/out/lab_*.deb)
echo "built $(basename "$deb")"

control=$(dpkg-deb -f "$deb")
echo "$control" | sed 's/^/  /'
depends=$(dpkg-deb -f "$deb" Depends)
check "Package is lab" test "$(dpkg-deb -f "$deb" Package)" = lab
check "Version is the project's" grep -qx "$(sed -n 's/^project(lab VERSION \([0-9.]*\).*/\1/p' "$(dirname "$0")/../../CMakeLists.txt")" <<<"$(dpkg-deb -f "$deb" Version)"
# Each library lab links, by its Debian package (dpkg-shlibdeps), and dnsmasq, which it runs.
for p in dnsmasq-base libnl-3-200 libnl-route-3-200 libnftables1 libseccomp2 libsqlite3-0 libyaml-0-2 libc6 libstdc++6; do
  check "Depends names $p" grep -q "\b$p\b" <<<"$depends"
done

root="$work/root"
dpkg-deb -x "$deb" "$root"
for f in usr/bin/lab usr/libexec/lab/lab-init usr/share/doc/lab/README.md usr/share/doc/lab/rules.md \
         usr/share/doc/lab/examples/nested-nat.yaml usr/share/man/man1/lab.1 usr/share/bash-completion/completions/lab \
         usr/share/zsh/vendor-completions/_lab usr/share/fish/vendor_completions.d/lab.fish; do
  check "the package holds /$f" test -f "$root/$f"
done
check "lab and lab-init are executable" test -x "$root/usr/bin/lab" -a -x "$root/usr/libexec/lab/lab-init"
version=$(env -u LAB_INIT "$root/usr/bin/lab" --version)
echo "  $version"
check "lab --version names the version and commit" grep -Eq '^lab [0-9]+\.[0-9]+\.[0-9]+ \(([0-9a-f]{7,}(-dirty)?|unknown)\)$' <<<"$version"
check "the unpacked lab validates its example" env -u LAB_INIT "$root/usr/bin/lab" validate "$root/usr/share/doc/lab/examples/nested-nat.yaml"
# The doctor says where lab-init is: the unpacked one, found from the unpacked lab with no variable.
init_line=$(env -u LAB_INIT "$root/usr/bin/lab" --no-color doctor --json 2>/dev/null |
            python3 -c 'import json,sys; print(next(c["state"]+" "+c["detail"] for c in json.load(sys.stdin) if c["name"]=="lab-init"))')
echo "  lab-init: $init_line"
check "the unpacked lab finds its own lab-init" test "$init_line" = "ok $root/usr/libexec/lab/lab-init"

# apt resolves the Depends against the archive (simulated: nothing is installed). Without the
# archive's lists (apt-get update never ran) there is nothing to resolve against.
if compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  if apt-get install -s -q "$deb" >"$work/apt.log" 2>&1; then
    echo "ok: apt-get install -s accepts the package"
  else
    cat "$work/apt.log"; echo "FAILED: apt-get install -s"; fail=1
  fi
else
  echo "SKIP: apt-get install -s (no package lists; run apt-get update)"
fi
exit $fail
