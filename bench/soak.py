"""Soak: many consecutive live updates, alternating two images, with
workloads running and a domain created or destroyed between some of them.
`verify` must pass after every update; free frames and the hypervisor's
private memory (RSS minus the RAM file it maps) must not drift.

With --kill-one-in N, about one update in N has xen#2 killed with SIGKILL
at a random moment between the exec and its commit (the breadcrumb still
in RAM; a kill that would land after the commit is not made), and
`hyperv-sim recover` must finish it with every domain whole.

    python -m bench.soak [--updates 200] [--kill-one-in 10]
"""
import argparse
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from hyperv_sim.bootloader import boot, recover, running_pid, shutdown
from hyperv_sim.mkimage import write_image
from kexec_lu.hypercall import XenClient
from kexec_lu.liveupdate import run_live_update
from xen_public.privcmd import SocketPrivcmd

MiB = 1 << 20


def private_kib(pid):
    """Anonymous (private) memory of the hypervisor: not the RAM file."""
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["RssAnon"].split()[0])


def breadcrumb_present(state, lu_start):
    with open(os.path.join(state, "ram"), "rb") as ram:
        ram.seek(lu_start)
        return struct.unpack("<Q", ram.read(8))[0] != 0


def exec_lines(state):
    with open(os.path.join(state, "console.log"), errors="replace") as f:
        return f.read().count("exec into the new hypervisor")


def kill_xen2(state, pid, lu_start, rng, outcome):
    """Once xen#1 has logged its exec into xen#2 (past the point of no
    return), wait a random 0-15 ms, stop the process; kill it if xen#2 has
    not committed (the breadcrumb is still in RAM), else let it go."""
    seen = exec_lines(state)
    deadline = time.monotonic() + 30
    while exec_lines(state) == seen:
        if time.monotonic() > deadline:
            outcome.append("gone")
            return
        time.sleep(0.0005)
    time.sleep(rng.uniform(0, 0.015))
    os.kill(pid, signal.SIGSTOP)
    if breadcrumb_present(state, lu_start):
        os.kill(pid, signal.SIGKILL)
        outcome.append("killed")
    else:
        os.kill(pid, signal.SIGCONT)
        outcome.append("committed first")


def comparable(details):
    """Every domain's state, masking what runs (as tests/helpers.full_state)."""
    for d in details["domains"]:
        del d["steps"], d["layout"], d["cpu_time_s"], d["xl_state"]
        d["vcpu_states"] = [(v["vcpu"], v["paused"]) for v in d["vcpu_states"]]
        for port in d["ports"]:
            del port["pending"]
    return details


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.soak")
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--kill-one-in", type=int, default=0, metavar="N",
                    help="kill xen#2 at random in about one update of N, then recover")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--iommu", choices=("intpost", "no-intpost"), default="intpost",
                    help="posted interrupts (the default) or not: xen#2 then injects one per device on resume")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    kills = {"killed": 0, "committed first": 0, "gone": 0}
    with tempfile.TemporaryDirectory(prefix="kexec-lu-soak-") as work:
        images = [os.path.join(work, "a.gz"), os.path.join(work, "b.gz")]
        write_image(images[0], xen_version="4.18")
        write_image(images[1], xen_version="4.19")
        state = os.path.join(work, "host")
        boot(images[0], state, 4 << 30, "liveupdate=64M dom0_mem=512M workload_rate=max iommu=" + args.iommu)
        ts = SocketPrivcmd(state)
        client = XenClient(ts)
        try:
            # Two HVM guests and a PV one, each with a passthrough NIC.
            for cfg in (dict(name="pv", type="pv", memory=256 * MiB, vcpus=2, pci=["0000:04:00.0"]),
                        dict(name="pvh", type="pvh", memory=256 * MiB, vcpus=2, event_channel_abi="fifo",
                             grant_version=2),
                        dict(name="hvm", type="hvm", memory=256 * MiB, vcpus=2, pci=["0000:03:00.0"]),
                        dict(name="hvm2", type="hvm", memory=256 * MiB, vcpus=1, pci=["0000:03:01.0"])):
                ts.toolstack("create", **cfg)
            free0 = rss0 = None
            blackouts, dma = [], []
            t0 = time.monotonic()
            for i in range(args.updates):
                if i % 10 == 5:
                    ts.toolstack("create", name="extra", type="pvh", memory=64 * MiB, vcpus=1)
                if i % 10 == 8:
                    ts.toolstack("destroy", domain="extra")
                load = subprocess.run([sys.executable, "-m", "kexec_lu", "load", "--type", "liveupdate",
                                       "--reuse-cmdline", images[(i + 1) % 2]], capture_output=True,
                                      text=True, env=dict(os.environ, HYPERV_SIM_DIR=state))
                if load.returncode:
                    raise SystemExit("update %d: load failed: %s" % (i, load.stderr.strip()))
                if args.kill_one_in and rng.randrange(args.kill_one_in) == 0:
                    killed_update(state, ts, client, images[(i + 1) % 2], rng, kills, i)
                else:
                    rep = run_live_update(client, timeout=120)
                    if rep["state"] != "complete":
                        raise SystemExit("update %d: %s: %s" % (i, rep["state"], rep.get("error")))
                    blackouts.append(rep["blackout_ms"])
                    # The passthrough devices ran on through the blackout
                    # (verify, below, accounts for every packet).
                    for dev in rep["devices"]:
                        if not dev["dma_ops_in_blackout"]:
                            raise SystemExit("update %d: device %s did no DMA in the blackout" % (i, dev["bdf"]))
                        dma.append((dev["dma_ops_in_blackout"], dev["max_dma_stall_ms"], dev["dropped"]))
                ver = ts.toolstack("verify")
                if not ver["ok"]:
                    raise SystemExit("update %d: verify failed: %s" % (i, ver["problems"][:3]))
                info = ts.toolstack("info")
                free, rss = info["free_memory"], private_kib(running_pid(state))
                if i == 9:                                  # settled
                    free0, rss0 = free, rss
                if i % 20 == 19:
                    print("update %d: blackout %.1f ms, free %d MiB, hypervisor private %d KiB"
                          % (i + 1, rep["blackout_ms"], free >> 20, rss), flush=True)
            dt = time.monotonic() - t0
        finally:
            shutdown(state)
    if args.kill_one_in:
        print("soak: xen#2 killed and recovered in %d updates (%d more committed before the "
              "kill could land), every domain whole each time" % (kills["killed"], kills["committed first"]))
    blackouts.sort()
    print("soak: %d live updates in %.0f s, verify passed after every one; blackout median %.1f ms, "
          "max %.1f ms; free memory drift %+d KiB, hypervisor private memory drift %+d KiB"
          % (args.updates, dt, blackouts[len(blackouts) // 2], blackouts[-1],
             ((free - free0) >> 10) if free0 is not None else 0, (rss - rss0) if rss0 is not None else 0))
    if dma:
        print("soak: the passthrough devices did DMA in every blackout: at least %d rounds, longest stall "
              "%.2f ms, at most %d packets dropped for a full ring; every packet received once and intact "
              "or counted dropped (verify)" % (min(n for n, _, _ in dma), max(s for _, s, _ in dma),
                                                max(d for _, _, d in dma)))
    if free0 is not None and free != free0:
        sys.exit("soak: free memory drifted")


def killed_update(state, ts, client, image, rng, kills, i):
    """One update whose xen#2 is killed at a random moment, recovered."""
    info = ts.toolstack("info")
    lu_start = info["lu_bootmem"]["start"]
    pid = running_pid(state)
    before = comparable(ts.toolstack("details"))
    outcome = []
    killer = threading.Thread(target=kill_xen2, args=(state, pid, lu_start, rng, outcome))
    killer.start()
    try:
        rep = run_live_update(client, timeout=120)
    except Exception as e:              # kexec_lu: "the hypervisor ... died"
        rep = {"state": "died", "error": str(e)}
    killer.join()
    if outcome == ["killed"]:
        if rep["state"] != "died":
            raise SystemExit("update %d: xen#2 killed, but exec said %s" % (i, rep))
        recover(image, state)
    elif rep["state"] != "complete":
        raise SystemExit("update %d: %s: %s" % (i, rep["state"], rep.get("error")))
    kills[outcome[0] if outcome else "gone"] += 1
    after = comparable(ts.toolstack("details"))
    if after["domains"] != before["domains"] or after["mappings"] != before["mappings"]:
        changed = sorted({"%s.%s" % (b["name"], k) for b, a in zip(before["domains"], after["domains"])
                          for k in set(a) | set(b) if a.get(k) != b.get(k)})
        raise SystemExit("update %d: a domain changed across the killed update: %s"
                         % (i, ", ".join(changed) or "mappings"))


if __name__ == "__main__":
    main()
