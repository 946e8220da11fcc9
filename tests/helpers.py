"""What the tests share that is not a fixture: the installed commands, the
simulated hosts (booted, in this process, stopped), and the checks and
waits more than one test file makes.

Tests import these from here, never from conftest (which holds only the
fixtures and pytest hooks); a name defined here is not defined again in a
test file (test_suite_hygiene.py checks both).
"""
import os
import pathlib
import struct
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


# --- the real Debian Xen ---------------------------------------------------

class XenArtifacts:
    """Paths inside the cache that `make fetch-xen` fills."""

    def __init__(self, root):
        self.root = root
        self.xen_gz = root / "boot" / "xen-4.17-amd64.gz"
        self.xen_efi = root / "boot" / "xen-4.17-amd64.efi"
        self.xen_syms = root / "usr" / "lib" / "debug" / "boot" / "xen-syms-4.17-amd64"
        self.include = root / "usr" / "include"
        self.kexec_h = self.include / "xen" / "kexec.h"
        # Xen's migration-stream verifier, from xen-utils, and its modules.
        self.verify_stream = root / "usr" / "lib" / "xen-4.17" / "bin" / "verify-stream-v2"
        self.xen_python = root / "usr" / "lib" / "xen-4.17" / "lib" / "python"
        version_file = root / "VERSION"
        self.deb_version = version_file.read_text().strip() if version_file.exists() else None


# --- the commands a user runs ------------------------------------------------

class CliResult:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def __repr__(self):
        return "<rc=%d stdout=%r stderr=%r>" % (self.returncode, self.stdout[-500:], self.stderr[-500:])


def installed_command(prog):
    """The console script `kexec-lu` or `hyperv-sim` that the install put
    beside this interpreter: what a user runs."""
    path = pathlib.Path(sys.executable).with_name(prog)
    if not path.exists():
        pytest.fail("%s is not installed beside %s (make install)" % (prog, sys.executable))
    return str(path)


def run_cli(prog, *args, env=None, state_dir=None, timeout=120, cwd=None):
    """Run `kexec-lu` or `hyperv-sim` as a user would: the installed command."""
    full_env = dict(os.environ, **(env or {}))
    if state_dir is not None:
        full_env["HYPERV_SIM_DIR"] = str(state_dir)
    proc = subprocess.run([installed_command(prog)] + [str(a) for a in args],
                          capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)
    return CliResult(proc)


def one_line_error(res, prog, *words, status=1):
    """Assert the failure shape a user must get from `prog`: exit status
    `status` exactly (1 for any error, as both man pages say, unless the
    caller names another), no Python traceback, nothing on stdout, exactly
    one line on stderr that starts with "PROG: ", says more than a word or
    two, and contains every one of `words` (case-insensitive).  Returns
    that line."""
    out = res.stdout + res.stderr
    assert "Traceback" not in out, res
    assert res.returncode == status, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1, "expected exactly one line on stderr: %r" % (res,)
    line = lines[0]
    assert line.startswith(prog + ": "), res
    assert len(line) > len(prog) + 12, "message too thin to help anyone: %r" % line
    for word in words:
        assert word.lower() in line.lower(), "%r not in %r" % (word, line)
    assert res.stdout == "", "a failed command must not print a partial result: %r" % (res,)
    return line


# --- simulated hosts -------------------------------------------------------

class Host:
    """A booted simulated host in a temporary directory."""

    def __init__(self, state_dir):
        from kexec_lu.hypercall import XenClient
        from xen_public.privcmd import SocketPrivcmd
        self.state_dir = state_dir
        self.privcmd = SocketPrivcmd(str(state_dir))
        self.client = XenClient(self.privcmd)

    def toolstack(self, op, **args):
        return self.privcmd.toolstack(op, **args)

    def kexec_lu(self, *args):
        return run_cli("kexec-lu", *args, state_dir=self.state_dir)

    def hyperv_sim(self, *args):
        return run_cli("hyperv-sim", *args, state_dir=self.state_dir)

    def load_lu(self, image, *extra):
        """`kexec-lu load --type liveupdate --reuse-cmdline [EXTRA...] IMAGE`,
        which must succeed."""
        res = self.kexec_lu("load", "--type", "liveupdate", "--reuse-cmdline", *extra, str(image))
        assert res.returncode == 0, res
        return res


def flat_out(cmdline):
    """Tests run guests as fast as they go (workload_rate=max) unless the
    command line they give says otherwise: steps they wait for come soon."""
    return cmdline if "workload_rate=" in cmdline else cmdline + " workload_rate=max"


def boot_host(state_dir, image, memory=2 << 30, cmdline="liveupdate=64M dom0_mem=256M"):
    from hyperv_sim.bootloader import boot
    boot(str(image), str(state_dir), memory, flat_out(cmdline))
    return Host(state_dir)


def stop_host(state_dir):
    """Shut the host down, firmly if need be, and remove any RAM it left
    (a killed or halted host keeps it, and guest memory is reserved on disk)."""
    from hyperv_sim.bootloader import running_pid, shutdown
    pid = running_pid(str(state_dir))
    if pid:
        try:
            shutdown(str(state_dir), timeout=10)
        except Exception:
            os.kill(pid, 9)
            wait_for(lambda: running_pid(str(state_dir)) is None, "the killed hypervisor to go")
    ram = os.path.join(str(state_dir), "ram")
    # A killed hypervisor leaves its devices running, as hardware: power is cut.
    from hyperv_sim.chipset import path_beside
    from hyperv_sim.devices import stop_devices_beside
    stop_devices_beside(ram)
    for path in (ram, path_beside(ram)):
        if os.path.lexists(path):
            os.unlink(path)


def power_off(hv):
    """The end of a hypervisor made by make_hypervisor: vCPUs stopped, RAM
    let go and its file removed (guest memory is reserved on disk: a file
    left behind would hold gigabytes in pytest's kept directories)."""
    hv.close()
    for path in (hv.ram.path, hv.chipset.path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def make_hypervisor(state_dir, image, memory=2 << 30, cmdline="liveupdate=64M dom0_mem=256M"):
    """A hypervisor in this process, on fresh host RAM: for tests that look
    inside (frame table, RAM) rather than through privcmd."""
    from hyperv_sim.bootloader import power_on
    from hyperv_sim.console import Console
    from hyperv_sim.hypervisor import Hypervisor
    from hyperv_sim.ram import HostRAM
    ram_path, entry, _ = power_on(str(image), str(state_dir), memory, flat_out(cmdline))
    try:
        return Hypervisor(HostRAM.open(ram_path), entry, Console(), nr_pcpus=2)
    except BaseException:
        from hyperv_sim.chipset import path_beside
        os.unlink(ram_path)         # a boot that fails leaves no RAM, nor its chipset
        os.unlink(path_beside(ram_path))
        raise


# --- what a host holds -------------------------------------------------------

def domains_by_name(host):
    """{name: domain} as `hyperv-sim list --json` gives them."""
    return {d["name"]: d for d in host.toolstack("list")}


def loaded_images(host, ktype=None):
    """The hypervisor's description of its loaded kexec images ({type:
    image or None}), or of the one of type `ktype` (None if none)."""
    images = host.toolstack("info")["kexec"]
    return images if ktype is None else images[ktype]


def read_ram(host, addr, size):
    """`size` bytes of the host's RAM file at machine address `addr`."""
    with open(host.state_dir / "ram", "rb") as ram:
        ram.seek(addr)
        return ram.read(size)


def dirty_free_bytes(host):
    """Bytes of the host's free frames (its memory map) that are not zero:
    what a scrub left behind.  Reads only the parts of the RAM file that
    hold data (a scrub punches holes)."""
    dirty = 0
    with open(host.state_dir / "ram", "rb") as ram:
        fd = ram.fileno()
        for addr, length, use in host.toolstack("memmap"):
            if use != "free":
                continue
            pos, end = addr, addr + length
            while pos < end:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:             # ENXIO: no data past pos
                    break
                if data >= end:
                    break
                hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
                ram.seek(data)
                while data < hole:
                    chunk = ram.read(min(hole - data, 1 << 20))
                    dirty += len(chunk) - chunk.count(0)
                    data += len(chunk)
                pos = hole
    return dirty


def write_ram(host, addr, data):
    with open(host.state_dir / "ram", "r+b") as ram:
        ram.seek(addr)
        ram.write(data)


def breadcrumb_magic(host, lu_start=None):
    """The breadcrumb's first word, at the start of LU bootmem (0 when there
    is none).  Pass `lu_start` when the hypervisor cannot be asked (halted)."""
    if lu_start is None:
        lu_start = host.toolstack("info")["lu_bootmem"]["start"]
    return struct.unpack("<Q", read_ram(host, lu_start, 8))[0]


def full_state(host):
    """Every domain's whole state as `hyperv-sim list --long` gives it, and
    every mapping and PCI assignment, masking only what moves while guests
    run: steps, CPU time, xl's r/b flag, registers, run states, pending event bits.  The layout is
    the builder's, which xen#2 does not learn (null after an update).  With
    them, the loaded crash image, which a live update carries."""
    state = host.toolstack("details")
    state["crash_image"] = loaded_images(host, "crash")
    for d in state["domains"]:
        del d["steps"], d["layout"], d["cpu_time_s"], d["xl_state"]
        d["vcpu_states"] = [(v["vcpu"], v["paused"]) for v in d["vcpu_states"]]
        for port in d["ports"]:
            del port["pending"]
    return state


def assert_restored_whole(before, after):
    assert [d["name"] for d in after["domains"]] == [d["name"] for d in before["domains"]]
    for b, a in zip(before["domains"], after["domains"]):
        for key in sorted(set(b) | set(a)):
            assert a.get(key) == b.get(key), "%s: %s was %r, is %r" % (
                b["name"], key, b.get(key), a.get(key))
    assert after["mappings"] == before["mappings"]
    assert after["pci_assigned"] == before["pci_assigned"]
    assert after["crash_image"] == before["crash_image"]


# --- passthrough devices: processes of their own --------------------------------

def device_pids(state_dir):
    """{bdf: pid} of the device processes of this host, found as `ps` would."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if "hyperv_sim.device" in argv and str(state_dir) in argv:
            out[argv[argv.index("--bdf") + 1]] = int(pid)
    return out


def chipset_of(host):
    """The host's chipset file, mapped (close it)."""
    from hyperv_sim.chipset import Chipset, path_beside
    return Chipset.open(path_beside(str(host.state_dir / "ram")))


def dma_ops(host):
    """{bdf: DMA writes done} of the host's running devices."""
    from hyperv_sim.chipset import bdf_text
    chipset = chipset_of(host)
    try:
        return {bdf_text(d.sid): d.dma_ops for d in chipset.c.dev if d.state}
    finally:
        chipset.close()


def irqs_taken(host):
    """{bdf: interrupts its guest's driver has taken}, from the guest's own record."""
    from hyperv_sim._lu_hw import lib as hw
    info = host.toolstack("info")
    out = {}
    for d in info["devices"]:
        dom = next(x for x in host.toolstack("details")["domains"] if x["domid"] == d["domid"])
        out[d["bdf"]] = struct.unpack("<Q", read_ram(host, dev_page(host, dom, d["bdf"]) + hw.LU_NIC_IRQ_RECORD, 8))[0]
    return out


NIC_BDF = "0000:03:00.0"                       # conftest.nic_hv's device
NIC_COUNTS = struct.Struct("<IIQQQQQQQQQ")    # csrc/hw_nic.h, struct lu_nic_counts


def nic_traffic(host):
    """{bdf: {rx_ok, dropped_seen, bad, out_of_order, last_seq, device_dropped,
    tx_sent}}: what each guest's driver counted of its NIC's packets (from
    its memory) beside what the device counted (its registers)."""
    from hyperv_sim.chipset import bdf_text
    info = host.toolstack("info")
    domains = {x["domid"]: x for x in host.toolstack("details")["domains"]}
    chipset = chipset_of(host)
    try:
        regs = {bdf_text(d.sid): (d.rx_dropped, d.tx_sent) for d in chipset.c.dev if d.state}
    finally:
        chipset.close()
    out = {}
    for d in info["devices"]:
        c = NIC_COUNTS.unpack(read_ram(host, dev_page(host, domains[d["domid"]], d["bdf"]) + 192, NIC_COUNTS.size))
        out[d["bdf"]] = dict(rx_ok=c[2], dropped_seen=c[3], bad=c[4], out_of_order=c[5], last_seq=c[6],
                             device_dropped=regs[d["bdf"]][0], tx_sent=regs[d["bdf"]][1])
    return out


def dev_page(host, dom, bdf):
    """The machine address of the page the device writes in its guest."""
    from hyperv_sim.chipset import bdf_text
    chipset = chipset_of(host)
    try:
        iova = next(d.dma_iova for d in chipset.c.dev if d.state and bdf_text(d.sid) == bdf)
    finally:
        chipset.close()
    gfn = iova // 4096
    mfn = next(m + gfn - g for g, m, n in dom["p2m"] if g <= gfn < g + n)
    return mfn * 4096 + iova % 4096


# --- waiting -------------------------------------------------------------------

def wait_for(cond, what, timeout=10.0):
    """Until cond() is true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.005)


def wait_steps(host, since=None, names=None, at_least=1, timeout=20):
    """Until guests make progress; returns domains_by_name(host) then.

    With `since` (a domains_by_name() snapshot): every domain of `names`,
    by default every domain running in `since`, has taken steps beyond its
    count there.  Without: every domain of `names`, by default every domain
    running now, has taken at least `at_least` steps.  A domain of `names`
    that is not there fails at once, and so does having none to wait for."""
    deadline = time.monotonic() + timeout
    while True:
        now = domains_by_name(host)
        if names is not None:
            which = list(names)
        else:
            which = [n for n, d in (since if since is not None else now).items()
                     if d["state"] == "running"]
        assert which, "no running domain to wait for: %s" % now
        missing = [n for n in which if n not in now]
        assert not missing, "gone: %s; now %s" % (missing, now)
        if since is not None:
            if all(now[n]["steps"] > since[n]["steps"] for n in which):
                return now
        elif all(now[n]["steps"] >= at_least for n in which):
            return now
        assert time.monotonic() < deadline, "domains do not run: %s, then %s" % (
            {n: since[n]["steps"] for n in which} if since is not None
            else "at least %d steps" % at_least, now)
        time.sleep(0.02)
