#!/usr/bin/env python3
"""Debian-built images against mmdebstrap alone (never part of the test run). Root and network.

  bench/images.py               first build of a minbase image with 4 packages by `lab image build`
                                and by `mmdebstrap` alone for the same packages, in the same run
                                (target: lab <= 1.2x), then a from: layer of 2 packages over it
                                (target: <= 10 s), then a second `lab image build` (cached: no
                                mirror asked)
  bench/images.py --runs 2      each figure the best of 2 (the machine is shared)

Each lab run starts from an empty LAB_STATE_DIR (no .deb cache, no apt lists): a first build.
mmdebstrap alone is given the same sources lab uses (Debian's archive with -updates and
-security) and the same variant, and builds into a directory, as lab does.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAB = os.path.join(ROOT, "build", "lab")

PACKAGES = ["iproute2", "iputils-ping", "nftables", "nginx-light"]
LAYER = ["curl", "jq"]
SOURCES = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://security.debian.org/debian-security bookworm-security main",
]

LAB_FILE = """lab: bench-images
images:
  base:
    debian: bookworm
    packages: [%s]
  tools:
    from: base
    packages: [%s]
hosts:
  hv1:
    switches:
      Lab: {type: internal, ip: 10.61.0.1/24}
    vms:
      vm1:
        image: tools
        adapters:
          - {switch: Lab, ip: 10.61.0.10/24}
""" % (", ".join(PACKAGES), ", ".join(LAYER))


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(argv, env=None):
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("bench: %s failed (exit %d):\n%s" % (" ".join(argv[:3]), p.returncode, p.stdout[-3000:]))
    return dt, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    if not shutil.which("mmdebstrap"):
        sys.exit("bench: mmdebstrap is not installed (apt-get install mmdebstrap)")
    best = {}
    for run in range(args.runs):
        tmp = tempfile.mkdtemp(prefix="lab-bench-images.")
        try:
            lab_file = os.path.join(tmp, "bench.yaml")
            with open(lab_file, "w") as f:
                f.write(LAB_FILE)
            env = dict(os.environ, LAB_STATE_DIR=os.path.join(tmp, "state"), LAB_RUN_DIR=os.path.join(tmp, "run"))
            # mmdebstrap alone first, then lab: the archive's answers are as warm for one as for the other.
            t, _ = timed(["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
                          "--include=" + ",".join(PACKAGES), "bookworm", os.path.join(tmp, "alone")] + SOURCES,
                         env=dict(os.environ, SOURCE_DATE_EPOCH="1686355200"))
            l0 = load()
            tl, out = timed([LAB, "--no-color", "image", "build", lab_file, "base"], env=env)
            tf, out_f = timed([LAB, "--no-color", "image", "build", lab_file, "tools"], env=env)
            # Cached: a proxy that answers nothing proves no mirror is asked.
            tc, out_c = timed([LAB, "--no-color", "image", "build", lab_file],
                              env=dict(env, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9"))
            figures = {"mmdebstrap alone": t, "lab image build (first)": tl, "from: layer of 2": tf,
                       "lab image build (cached)": tc}
            print("run %d (load %s): %s" % (run + 1, l0, ", ".join("%s %.1f s" % kv for kv in figures.items())))
            print("  ratio lab/mmdebstrap %.2fx" % (tl / t))
            for k, v in figures.items():
                best[k] = min(best.get(k, v), v)
            best["ratio"] = min(best.get("ratio", tl / t), tl / t)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", tmp])
    print("best of %d: mmdebstrap alone %.1f s, lab first build %.1f s (%.2fx, target <= 1.2x), "
          "from: layer %.1f s (target <= 10 s), cached build %.2f s"
          % (args.runs, best["mmdebstrap alone"], best["lab image build (first)"], best["ratio"],
             best["from: layer of 2"], best["lab image build (cached)"]))


if __name__ == "__main__":
    main()
