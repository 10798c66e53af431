#!/usr/bin/env python3
"""Measures lab against the kernel's floor and Mininet (never part of the test run). Root only.

  bench/run.py                        the README's run: flat 500 (+ floor), flat 200 (+ Mininet 200),
                                      plan of 10,000, nested 10x50 and flat 1000
  bench/run.py --flat 500 --floor     one flat lab and its kernel floor
  bench/run.py --flat 200 --mininet   one flat lab and Mininet with as many hosts
  bench/run.py --nested 10x50         one nested lab (M middle VMs x K nested VMs behind NAT)
  bench/run.py --plan 10000           `lab plan` of a generated file only

Every lab runs with its own LAB_STATE_DIR/LAB_RUN_DIR under a temporary directory and is taken
down by `lab down` with the same directories, also when a step fails. Each figure is the best of
--runs runs (the machine is shared), and the load average is printed with it.

The kernel floor is one `ip -batch` making the flat lab's network objects (a namespace per VM and
one for the host, a bridge with the host's address, a veth pair per VM with its port on the bridge,
everything up) and one `ip -batch` deleting them. It runs in a private mount namespace whose
/run/netns is a fresh tmpfs, so its namespaces are seen by nobody else and deleted by the names it
gave them; it never touches the machine's interfaces.

Mininet (`mn --topo single,N --switch lxbr --controller none --test none`) runs in private PID,
network, mount and UTS namespaces: its links and bridge live in a namespace that dies with it, and
the cleanup mn runs by process-name pattern when it fails cannot reach anything but itself.
`mn -c` is never run.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_cpu():
    """CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def timed(argv, env=None, check=True, cpu=None):
    """Runs argv: (seconds, stdout, stderr, exit code). With a dict `cpu`, cpu["s"] gets the
    machine's busy CPU seconds meanwhile: kernel workers (namespace cleanup, RCU, writeback) and
    the partitions' own processes count too, which the command's rusage does not show."""
    c0 = machine_cpu()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    dt = time.monotonic() - t0
    if cpu is not None:
        cpu["s"] = machine_cpu() - c0
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{out[-2000:]}\n{err[-2000:]}")
    return dt, out, err, p.returncode


def peak_rss(argv, env):
    """Peak RSS (KiB) of one command, measured in a fresh child so no earlier command counts."""
    code = ("import os,resource,subprocess,sys;"
            "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);sys.exit(r.returncode)")
    out = subprocess.run([sys.executable, "-c", code] + argv, env=env, stdout=subprocess.PIPE, text=True)
    return int(out.stdout.strip() or 0), out.returncode


def gen(args, path):
    with open(path, "w") as f:
        subprocess.run([sys.executable, os.path.join(HERE, "gen_lab.py")] + args, stdout=f, check=True)


def lab_name(path):
    with open(path) as f:
        for line in f:
            if line.startswith("lab:"):
                return line.split(":", 1)[1].strip()
    raise RuntimeError(f"{path}: no lab name")


# ---- our own figures --------------------------------------------------------------------------

def partition_memory(lab):
    """Host memory of a running lab's partitions, from their processes (lab's cgroups).

    Per partition: PSS and RSS of the processes in its cgroup (lab-init, and whatever runs there),
    and the memory cgroup's own charge (kernel memory of its namespaces included)."""
    procs_root = "/sys/fs/cgroup/pids/lab"
    mem_root = "/sys/fs/cgroup/memory/lab"
    if not os.path.isdir(procs_root):  # cgroup v2
        procs_root = mem_root = "/sys/fs/cgroup/lab"
    marks = [d for d in os.listdir(procs_root) if re.fullmatch(re.escape(lab) + r"-[0-9a-f]{12}", d)]
    parts = []
    for mark in marks:
        for dirpath, dirnames, filenames in os.walk(os.path.join(procs_root, mark)):
            if "cgroup.procs" not in filenames:
                continue
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
            if not pids:
                continue
            pss = rss = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        for line in f:
                            if line.startswith("Pss:"):
                                pss += int(line.split()[1])
                            elif line.startswith("Rss:"):
                                rss += int(line.split()[1])
                except OSError:
                    pass
            charge = 0
            rel = os.path.relpath(dirpath, procs_root)
            for name in ("memory.usage_in_bytes", "memory.current"):
                p = os.path.join(mem_root, rel, name)
                if os.path.exists(p):
                    with open(p) as f:
                        charge = int(f.read()) // 1024
                    break
            parts.append((len(pids), pss, rss, charge))
    if not parts:
        return None
    n = len(parts)
    return {"partitions": n, "procs": sum(p[0] for p in parts),
            "pss_kib": sum(p[1] for p in parts) / n, "rss_kib": sum(p[2] for p in parts) / n,
            "cgroup_kib": sum(p[3] for p in parts) / n}


def ours(path, runs, jobs, do_check=True):
    """plan, up, no-op up, check, memory and down of one lab file, best of `runs`."""
    lab = os.environ.get("LAB", os.path.join(ROOT, "build", "lab"))
    name = lab_name(path)
    best = {}
    extra = {}
    for r in range(runs):
        work = tempfile.mkdtemp(prefix="lab-bench-")
        env = dict(os.environ, LAB_STATE_DIR=work + "/state", LAB_RUN_DIR=work + "/run")
        jobs_args = ["--jobs", str(jobs)] if jobs else []
        figures = {"load": load()}
        try:
            figures["plan"] = timed([lab, "plan", path], env)[0]
            cpu = {}
            dt, out, _, _ = timed([lab, "up", path] + jobs_args, env, cpu=cpu)
            figures["up"] = dt
            figures["up_machine_cpu"] = cpu["s"]
            extra["up_summary"] = out.strip().splitlines()[-1] if out.strip() else ""
            dt, out, _, _ = timed([lab, "up", path] + jobs_args, env)
            figures["noop_up"] = dt
            if "No changes." not in out:
                raise RuntimeError("a second `lab up` changed something:\n" + out[-2000:])
            if do_check:
                dt, out, _, code = timed([lab, "check", name], env, check=False)
                figures["check"] = dt
                m = re.search(r"(\d+) passed, (\d+) failed", out)
                extra["checks"] = m.group(0) if m else out.strip()[-200:]
                if code != 0:
                    raise RuntimeError("lab check failed:\n" + out[-3000:])
            mem = partition_memory(name)
            if mem:
                extra["memory"] = mem
            dt, out, _, _ = timed([lab, "down", name] + jobs_args, env, cpu=cpu)
            figures["down"] = dt
            figures["down_machine_cpu"] = cpu["s"]
        finally:
            # Whatever happened: the lab goes down with the same directories.
            subprocess.run([lab, "down", name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Peak memory of `lab up` (its own process), in a run of its own.
        kib, code = peak_rss([lab, "up", path] + jobs_args, env)
        if code == 0:
            figures["up_peak_rss_mib"] = kib / 1024
        subprocess.run([lab, "down", name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
        for k, v in figures.items():
            if k == "load":
                continue
            if k not in best or v < best[k][0]:
                best[k] = (v, figures["load"])
        print(f"  run {r + 1}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in figures.items()), flush=True)
    return best, extra


def plan_only(path, runs):
    lab = os.environ.get("LAB", os.path.join(ROOT, "build", "lab"))
    work = tempfile.mkdtemp(prefix="lab-bench-")
    env = dict(os.environ, LAB_STATE_DIR=work + "/state", LAB_RUN_DIR=work + "/run")
    best = None
    for _ in range(runs):
        l = load()
        dt = timed([lab, "plan", path], env)[0]
        if best is None or dt < best[0]:
            best = (dt, l)
    shutil.rmtree(work, ignore_errors=True)
    return best


# ---- the kernel floor -------------------------------------------------------------------------

def floor_batches(n):
    """The flat lab's network objects as `ip -n h -batch` (made inside the host namespace h)."""
    up = [f"netns add v{i}" for i in range(n)]
    up += ["link add br0 type bridge", "addr add 10.0.0.1/16 dev br0", "link set br0 up", "link set lo up"]
    for i in range(n):
        up += [f"link add p{i} type veth peer name eth0 netns v{i}",
               f"link set p{i} master br0", f"link set p{i} up"]
    down = [f"netns del v{i}" for i in range(n)] + ["link del br0"]
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def floor_inner(n):
    """Runs inside a private mount namespace (see floor): prints {"up": s, "down": s}."""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    os.makedirs("/run/netns", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "lab-bench-floor", "/run/netns"], check=True)
    up, down = floor_batches(n)
    work = tempfile.mkdtemp(prefix="lab-bench-floor-")
    with open(work + "/up", "w") as f:
        f.write(up)
    with open(work + "/down", "w") as f:
        f.write(down)
    made = False
    try:
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "add", "h"], check=True)
        made = True
        subprocess.run(["ip", "-n", "h", "-batch", work + "/up"], check=True)
        t_up = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run(["ip", "-n", "h", "-batch", work + "/down"], check=True)
        subprocess.run(["ip", "netns", "del", "h"], check=True)
        made = False
        t_down = time.monotonic() - t0
    finally:
        if made:  # a failed batch: delete what has a name here, one by one
            for name in os.listdir("/run/netns"):
                subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"up": t_up, "down": t_down}))


def floor(n, runs):
    best = {}
    for _ in range(runs):
        l = load()
        out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                              os.path.abspath(__file__), "--floor-inner", str(n)],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        for k, v in r.items():
            if k not in best or v < best[k][0]:
                best[k] = (v, l)
    return best


# ---- Mininet ----------------------------------------------------------------------------------

def mininet(n, runs):
    if not shutil.which("mn"):
        raise RuntimeError("mn is missing: apt-get install mininet bridge-utils")
    best = {}
    for _ in range(runs):
        l = load()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Private PID, network, mount and UTS namespaces: see the module's docstring.
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--mount", "--uts",
                "mn", "--topo", f"single,{n}", "--switch", "lxbr", "--controller", "none", "--test", "none"]
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t_started = t_stop = None
        lines = []
        for line in p.stdout:
            now = time.monotonic() - t0
            lines.append(line)
            if t_started is None and lines[-2:-1] and lines[-2].startswith("*** Starting") and "switches" in lines[-2]:
                t_started = now  # the line after "Starting N switches": the switch is up
            if line.startswith("*** Stopping") and t_stop is None:
                t_stop = now
        p.wait()
        total = time.monotonic() - t0
        if p.returncode != 0 or t_started is None:
            raise RuntimeError("mn failed:\n" + "".join(lines[-30:]))
        r = {"up": t_started, "down": total - t_stop, "total": total}
        for k, v in r.items():
            if k not in best or v < best[k][0]:
                best[k] = (v, l)
    return best


# ---- report -----------------------------------------------------------------------------------

def show(title, best, extra=None):
    print(f"{title}")
    for k, (v, l) in best.items():
        unit = "MiB" if k.endswith("_mib") else "s"
        print(f"  {k:<16} {v:8.3f} {unit}   (load {l})")
    for k, v in (extra or {}).items():
        print(f"  {k:<16} {v}")
    sys.stdout.flush()


def ratio(a, b):
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flat", type=int, action="append", help="flat lab of N VMs (repeatable)")
    p.add_argument("--nested", action="append", help="nested lab MxK (repeatable)")
    p.add_argument("--plan", type=int, action="append", help="lab plan of a flat file of N VMs")
    p.add_argument("--floor", action="store_true", help="the kernel floor beside each flat lab")
    p.add_argument("--mininet", action="store_true", help="Mininet beside each flat lab")
    p.add_argument("--runs", type=int, default=3, help="best of this many runs (default 3)")
    p.add_argument("--jobs", type=int, default=0, help="lab --jobs (default: lab's own, = cores)")
    p.add_argument("--floor-inner", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.floor_inner is not None:
        return floor_inner(a.floor_inner)
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (it makes real partitions)")
    if not (a.flat or a.nested or a.plan):
        a.flat, a.nested, a.plan = [500, 200, 1000], ["10x50"], [10000]
        a.floor = a.mininet = True
    work = tempfile.mkdtemp(prefix="lab-bench-files-")
    print(f"lab bench: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {load()}, best of {a.runs}")
    try:
        for n in a.plan or []:
            path = f"{work}/flat{n}.yaml"
            gen(["flat", str(n)], path)
            v, l = plan_only(path, a.runs)
            print(f"lab plan, flat {n}: {v:.3f} s   (load {l})", flush=True)
        for n in a.flat or []:
            path = f"{work}/flat{n}.yaml"
            gen(["flat", str(n)], path)
            print(f"flat {n}: lab", flush=True)
            best, extra = ours(path, a.runs, a.jobs)
            show(f"flat {n}: lab (best)", best, extra)
            if a.floor:
                fl = floor(n, a.runs)
                show(f"flat {n}: kernel floor (one ip -batch)", fl)
                print(f"  lab up / floor up     = {ratio(best['up'][0], fl['up'][0])}")
                print(f"  lab down / floor down = {ratio(best['down'][0], fl['down'][0])}")
            if a.mininet:
                mn = mininet(n, a.runs)
                show(f"flat {n}: Mininet (mn --topo single,{n} --switch lxbr)", mn)
                print(f"  mn up / lab up        = {ratio(mn['up'][0], best['up'][0])}")
                print(f"  mn down / lab down    = {ratio(mn['down'][0], best['down'][0])}")
        for mk in a.nested or []:
            m, k = mk.split("x")
            path = f"{work}/nested{m}x{k}.yaml"
            gen(["nested", m, k], path)
            print(f"nested {m}x{k}: lab", flush=True)
            best, extra = ours(path, a.runs, a.jobs)
            show(f"nested {m}x{k}: lab (best)", best, extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
