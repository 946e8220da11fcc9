"""What an idle simulated host costs: dom0 alone, booted with the defaults
(its vCPUs at the default workload_rate=), left running.  The hypervisor
process's CPU time over a few seconds, as a share of one CPU, from
/proc/PID/stat (user + system), and the steps dom0 ran meanwhile."""
import os
import time

from hyperv_sim.bootloader import boot, running_pid, shutdown
from xen_public.privcmd import SocketPrivcmd

GiB = 1 << 30
CMDLINE = "liveupdate=64M dom0_mem=512M"        # no workload_rate=: the default


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _dom0_steps(ts):
    return ts.toolstack("list")[0]["steps"]


def run(image, workdir, seconds=5.0, settle=1.0):
    """-> {"cpu_pct": share of one CPU, "dom0_steps_per_s", "seconds"}."""
    state = os.path.join(workdir, "idle")
    boot(image, state, 2 * GiB, CMDLINE)
    try:
        pid = running_pid(state)
        ts = SocketPrivcmd(state)
        time.sleep(settle)          # dom0 built, its first bursts done
        cpu0, steps0, t0 = _cpu_seconds(pid), _dom0_steps(ts), time.monotonic()
        time.sleep(seconds)
        cpu1, steps1, t1 = _cpu_seconds(pid), _dom0_steps(ts), time.monotonic()
    finally:
        shutdown(state)
    return {"cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0), "dom0_steps_per_s": (steps1 - steps0) / (t1 - t0),
            "seconds": t1 - t0}
