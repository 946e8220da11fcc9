"""The hypervisor's side of passthrough devices (docs/iommu.md): a slot in
the chipset per device, programmed when the device is assigned, its process
(hyperv_sim.device) started then and stopped when the device is taken away
or the host powers off; and what a device did in a window of time, for a
live update's report.  A live update starts and stops nothing: the devices
run through it, and xen#2 finds them in the chipset.
"""
import os
import sys
import time

from xen_public import abi
from xen_public.abi import PAGE_SIZE

from ._lu_core import ffi as core_ffi
from ._lu_hw import ffi, lib as hw
from .chipset import Chipset, ChipsetError, bdf_text, path_beside
from .guest import P2M

DMA_PERIOD_NS = 100_000             # a round (a packet from the wire) every 100 µs
STOP_WAIT_S = 2.0


class DeviceError(Exception):
    """A device the chipset cannot take: no free slot, or pages not
    page-aligned (both the builder's to prevent)."""


def _alive(pid):
    """Whether the process still runs (a zombie waiting for init does not:
    nothing of it runs)."""
    # Imported here, as subprocess in start() and signal in _kill(): the
    # privcmd client brings socket and json, signal brings enum,
    # milliseconds a hypervisor's start-up (a live update's blackout) has
    # no use for; it never starts or stops a device.
    from xen_public.privcmd import process_gone
    return not process_gone(pid)


def _kill(pid):
    import signal
    os.kill(pid, signal.SIGKILL)


def _is_our_device(pid, state_dir):
    """A pid in a slot is only signalled if it is a device of this host
    (pids are reused)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"hyperv_sim.device" in argv and os.fsencode(state_dir) in argv


class Devices:
    """powered: whether devices run at all.  A hypervisor a test runs inside
    its own process (to look at its frame table, to feed it streams) has
    its devices unpowered: nothing there may change under the test."""

    def __init__(self, chipset, state_dir, powered=True):
        self.chipset = chipset
        self.state_dir = state_dir
        self.powered = powered

    def slots(self):
        """{bdf: slot index} of every device slot in use."""
        c = self.chipset.c
        return {bdf_text(c.dev[i].sid): i for i in range(hw.LU_MAX_DEVICES) if c.dev[i].state != hw.LU_DEV_FREE}

    def free_slots(self):
        if not self.powered:
            return hw.LU_MAX_DEVICES
        return sum(1 for i in range(hw.LU_MAX_DEVICES) if self.chipset.c.dev[i].state == hw.LU_DEV_FREE)

    def regs(self, bdf):
        return self.chipset.c.dev[self.slots()[bdf]]

    def start(self, sid, dma_iova, route):
        """Program a free slot for the device, route(slot) its interrupt,
        and start its process."""
        if not self.powered:
            return
        if dma_iova % PAGE_SIZE:        # the NIC's pages are whole pages (hw_nic.h)
            raise DeviceError("device DMA address 0x%x is not page-aligned" % dma_iova)
        c = self.chipset.c
        free = [i for i in range(hw.LU_MAX_DEVICES) if c.dev[i].state == hw.LU_DEV_FREE]
        if not free:            # the builder checks first: this is a bug's safety net
            raise DeviceError("no free device slot in the chipset (at most %d devices)" % hw.LU_MAX_DEVICES)
        d = c.dev[free[0]]
        ffi.memmove(ffi.addressof(d), bytes(ffi.sizeof(d)), ffi.sizeof(d))
        d.sid, d.kind, d.dma_iova, d.period_ns = sid, hw.LU_DEV_NIC, dma_iova, DMA_PERIOD_NS
        d.msi_index = free[0]
        route(free[0])
        d.state = hw.LU_DEV_RUNNING
        # Through a shell that exits at once: the device is no child of the
        # hypervisor (it belongs to the machine, not to this process).
        import subprocess
        shell = subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh",
                                sys.executable, "-I", "-m", "hyperv_sim.device", "--bdf", bdf_text(sid),
                                "--state-dir", self.state_dir],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True, close_fds=True, check=True)
        d.pid = int(shell.stdout)

    def stop(self, bdf):
        """The device stops (function-level reset) and its slot is freed."""
        slot = self.slots().get(bdf)
        if slot is None:
            return
        d = self.chipset.c.dev[slot]
        d.state = hw.LU_DEV_STOPPING
        pid, deadline = d.pid, time.monotonic() + STOP_WAIT_S
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        if pid and _alive(pid) and _is_our_device(pid, self.state_dir):
            _kill(pid)
            while _alive(pid) and time.monotonic() < deadline + STOP_WAIT_S:
                time.sleep(0.005)
        d.state = hw.LU_DEV_FREE

    def describe(self, assigned):
        """[{bdf, domid, pid, dma_ops, dma_faults, rx_delivered, rx_dropped,
        tx_sent}] of the running devices; assigned: {bdf: domid}."""
        out = []
        for bdf, slot in sorted(self.slots().items()):
            d = self.chipset.c.dev[slot]
            out.append({"bdf": bdf, "domid": assigned.get(bdf, abi.DOMID_INVALID), "pid": d.pid,
                        "dma_ops": d.dma_ops, "dma_faults": d.dma_faults, "rx_delivered": d.rx_delivered,
                        "rx_dropped": d.rx_dropped, "tx_sent": d.tx_sent})
        return out

    def window(self, bdf, from_ns, to_ns):
        """(rounds of DMA completed in [from_ns, to_ns], longest time in it
        without one, in ns, packets dropped in it for a full ring)."""
        gap = ffi.new("uint64_t *")
        regs = ffi.addressof(self.regs(bdf))
        n = hw.lu_dev_window(regs, from_ns, to_ns, gap)
        return n, gap[0], hw.lu_dev_drops_in(regs, from_ns, to_ns)


def connect_drivers(hv, dom):
    """The guest's drivers of its devices run in its vCPU 0: each takes the
    interrupts posted for its device, and works the NIC's rings in the
    guest's pages (hw_nic.h)."""
    slots = hv.devices.slots()
    bdfs = [b for b in dom.devices if b in slots]
    nics = core_ffi.new("struct lu_nic[]", len(bdfs))
    p2m = P2M(dom.p2m)
    for n, bdf in zip(nics, bdfs):
        d = hv.chipset.c.dev[slots[bdf]]
        n.pi_desc = hv.iommu.pi_desc(slots[bdf])
        n.dev_ack = ffi.addressof(d, "irq_outstanding")
        n.iova = d.dma_iova
        for i in range(hw.LU_NIC_PAGES):
            n.page[i] = hv.ram.pointer(p2m.mfn(d.dma_iova // PAGE_SIZE + i) * PAGE_SIZE, "uint8_t *")
    v = dom.vcpu_state[0]
    dom.nic_drivers = nics          # the vCPU holds pointers into it
    v.nics, v.nr_nics = nics, len(bdfs)


def stop_devices_beside(ram_path):
    """Power is gone (a power-off, or a host that stopped without one being
    discarded): the devices in the chipset beside this RAM stop too."""
    try:
        chipset = Chipset.open(path_beside(ram_path))
    except ChipsetError:
        return
    try:
        stop_orphans(chipset, os.path.dirname(os.path.abspath(ram_path)))
    finally:
        chipset.close()


def stop_orphans(chipset, state_dir):
    """Every device of the chipset stops, whoever started it."""
    killed = []
    for i in range(hw.LU_MAX_DEVICES):
        d = chipset.c.dev[i]
        if d.state != hw.LU_DEV_FREE:
            d.state = hw.LU_DEV_STOPPING
            if d.pid and _alive(d.pid) and _is_our_device(d.pid, state_dir):
                _kill(d.pid)
                killed.append(d.pid)
            d.state = hw.LU_DEV_FREE
    # Gone (or a zombie: nothing of it runs) before power counts as cut.
    deadline = time.monotonic() + STOP_WAIT_S
    while any(_alive(p) and _is_our_device(p, state_dir) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.002)
