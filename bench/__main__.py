"""Live-update benchmarks: blackout and where it goes, against the floor.

For each host size: boot a simulated host, fill about 3/4 of its RAM with a
mix of PV, PVH and HVM guests (2 vCPUs each, workloads running), then
live-update back and forth several times and keep the median.  The floor is
the same measurement on a host with dom0 only (the cost of starting a new
hypervisor at all).  Writes bench/results/latest.{md,json}.

    python -m bench [--hosts S,M] [--runs N]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from hyperv_sim.bootloader import boot, shutdown
from hyperv_sim.mkimage import write_image
from kexec_lu.hypercall import XenClient
from kexec_lu.liveupdate import run_live_update
from kexec_lu.privcmd import SocketPrivcmd

GiB, MiB = 1 << 30, 1 << 20
HOSTS = {
    # name: (RAM, domains including dom0)
    "floor": (4 * GiB, 1),
    "S": (4 * GiB, 8),
    "M": (16 * GiB, 16),
    "L": (64 * GiB, 64),
    "XL": (256 * GiB, 256),
}
HERE = os.path.dirname(os.path.abspath(__file__))


def guest_configs(ram, domains):
    """About 3/4 of RAM over domains-1 guests, types in turn."""
    n = domains - 1
    if not n:
        return []
    each = max(64, (ram * 3 // 4 - 512 * MiB) // n // MiB)
    types = ["pv", "pvh", "hvm"]
    return [dict(name="g%d" % i, type=types[i % 3], memory=each * MiB, vcpus=2,
                 event_channel_abi="fifo" if i % 2 else "2-level", grant_version=1 + i % 2)
            for i in range(n)]


def run_host(name, images, runs, workdir):
    ram, domains = HOSTS[name]
    state = os.path.join(workdir, name)
    cmdline = "liveupdate=64M dom0_mem=512M dom0_max_vcpus=2"
    t0 = time.monotonic()
    boot(images["a"], state, ram, cmdline)
    ts = SocketPrivcmd(state)
    try:
        for cfg in guest_configs(ram, domains):
            ts.toolstack("create", **cfg)
        setup_s = time.monotonic() - t0
        time.sleep(0.5)
        client = XenClient(ts)
        reports = []
        for i in range(runs):
            image = images["b" if i % 2 == 0 else "a"]
            subprocess.run([sys.executable, "-m", "kexec_lu", "load", "--type", "liveupdate",
                            "--reuse-cmdline", image], check=True, capture_output=True,
                           env=dict(os.environ, HYPERV_SIM_DIR=state))
            rep = run_live_update(client, timeout=300, show=False)
            if rep["state"] != "complete":
                raise SystemExit("%s: update %d %s: %s" % (name, i, rep["state"], rep.get("error")))
            reports.append(rep)
            time.sleep(0.2)
        verify = ts.toolstack("verify")
        if not verify["ok"]:
            raise SystemExit("%s: verify failed after the updates: %s" % (name, verify["problems"][:3]))
        gaps = [v["max_gap_ns"] for d in ts.toolstack("details")["domains"] for v in d["vcpu_states"]]
    finally:
        shutdown(state)
    phases = {}
    for rep in reports:
        for p in rep["phases"]:
            phases.setdefault(p["name"], []).append(p["ms"])
    return {
        "host": name, "ram": ram, "domains": domains, "runs": runs, "setup_s": round(setup_s, 2),
        "blackout_ms": statistics.median(r["blackout_ms"] for r in reports),
        "blackout_ms_all": [round(r["blackout_ms"], 2) for r in reports],
        "guest_max_gap_ms": max(gaps) / 1e6 if gaps else None,
        "stream_bytes": statistics.median(r["stream_bytes"] for r in reports),
        "phases_ms": {k: round(statistics.median(v), 2) for k, v in phases.items()},
    }


def markdown(results, machine):
    lines = ["# Live-update benchmark", "", "Machine: %s" % machine, "",
             "| host | RAM | domains | blackout (median ms) | x floor | guest-seen max gap (ms) | stream bytes |",
             "|---|---|---|---|---|---|---|"]
    floor = next((r["blackout_ms"] for r in results if r["host"] == "floor"), None)
    for r in results:
        ratio = "%.2f" % (r["blackout_ms"] / floor) if floor else "-"
        lines.append("| %s | %d GiB | %d | %.1f | %s | %s | %d |" % (
            r["host"], r["ram"] // GiB, r["domains"], r["blackout_ms"], ratio,
            "%.1f" % r["guest_max_gap_ms"] if r["guest_max_gap_ms"] else "-", r["stream_bytes"]))
    names = sorted({k for r in results for k in r["phases_ms"]},
                   key=lambda k: min(i for r in results for i, p in enumerate(r["phases_ms"]) if p == k))
    lines += ["", "Phases (median ms):", "", "| host | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for r in results:
        lines.append("| %s | %s |" % (r["host"], " | ".join("%.1f" % r["phases_ms"].get(n, 0) for n in names)))
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--hosts", default="floor,S", help="comma-separated: %s" % ",".join(HOSTS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    names = args.hosts.split(",")
    for n in names:
        if n not in HOSTS:
            ap.error("unknown host %r" % n)
    with tempfile.TemporaryDirectory(prefix="kexec-lu-bench-") as work:
        images = {"a": os.path.join(work, "xen-a.gz"), "b": os.path.join(work, "xen-b.gz")}
        write_image(images["a"], xen_version="4.18")
        write_image(images["b"], xen_version="4.19")
        results = []
        for n in names:
            print("bench: host %s ..." % n, flush=True)
            results.append(run_host(n, images, args.runs, work))
    machine = "%s, %d CPUs, Python %s" % (platform.machine(), os.cpu_count(), platform.python_version())
    os.makedirs(args.out, exist_ok=True)
    md = markdown(results, machine)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"machine": machine, "results": results}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
