"""Soak: many consecutive live updates, alternating two images, with
workloads running and a domain created or destroyed between some of them.
`verify` must pass after every update; free frames and the hypervisor's
private memory (RSS minus the RAM file it maps) must not drift.

    python -m bench.soak [--updates 200]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from hyperv_sim.bootloader import boot, running_pid, shutdown
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.soak")
    ap.add_argument("--updates", type=int, default=200)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kexec-lu-soak-") as work:
        images = [os.path.join(work, "a.gz"), os.path.join(work, "b.gz")]
        write_image(images[0], xen_version="4.18")
        write_image(images[1], xen_version="4.19")
        state = os.path.join(work, "host")
        boot(images[0], state, 4 << 30, "liveupdate=64M dom0_mem=512M")
        ts = SocketPrivcmd(state)
        client = XenClient(ts)
        try:
            for cfg in (dict(name="pv", type="pv", memory=256 * MiB, vcpus=2),
                        dict(name="pvh", type="pvh", memory=256 * MiB, vcpus=2, event_channel_abi="fifo",
                             grant_version=2),
                        dict(name="hvm", type="hvm", memory=256 * MiB, vcpus=2, pci=["0000:03:00.0"])):
                ts.toolstack("create", **cfg)
            free0 = rss0 = None
            blackouts = []
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
                rep = run_live_update(client, timeout=120)
                if rep["state"] != "complete":
                    raise SystemExit("update %d: %s: %s" % (i, rep["state"], rep.get("error")))
                blackouts.append(rep["blackout_ms"])
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
    blackouts.sort()
    print("soak: %d live updates in %.0f s, verify passed after every one; blackout median %.1f ms, "
          "max %.1f ms; free memory drift %+d KiB, hypervisor private memory drift %+d KiB"
          % (args.updates, dt, blackouts[len(blackouts) // 2], blackouts[-1],
             ((free - free0) >> 10) if free0 is not None else 0, (rss - rss0) if rss0 is not None else 0))
    if free0 is not None and free != free0:
        sys.exit("soak: free memory drifted")


if __name__ == "__main__":
    main()
