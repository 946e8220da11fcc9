"""A passthrough device, a process of its own:

    python -I -m hyperv_sim.device --bdf 0000:03:00.0 --state-dir DIR

It maps the host's RAM and chipset (DIR/ram, DIR/chipset), finds its slot
in the chipset by its BDF, and does DMA into its guest's memory through the
IOMMU (csrc/hw_device.c) until its slot stops running.  Never part of the
hypervisor process and never restarted by a live update: the hypervisor
starts it when the device is assigned and stops it when the device is
taken away or the host powers off (docs/iommu.md).  Its command line names
its BDF and state directory, so that `ps` finds it.
"""
import mmap
import os
import sys
import threading

from xen_public.abi import PAGE_SIZE

from ._lu_hw import ffi, lib
from .chipset import Chipset, ChipsetError, parse_bdf, path_beside

RAM_FILE = "ram"
POWER_CHECK_S = 0.1


def slot_of(chipset, sid):
    """The running slot programmed for this device, or None."""
    for i in range(lib.LU_MAX_DEVICES):
        d = chipset.c.dev[i]
        if d.state == lib.LU_DEV_RUNNING and d.sid == sid:
            return i
    return None


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    pairs = dict(zip(args[::2], args[1::2]))
    if len(args) != 4 or set(pairs) != {"--bdf", "--state-dir"}:
        print("usage: python -I -m hyperv_sim.device --bdf DDDD:BB:DD.F --state-dir DIR", file=sys.stderr)
        return 2
    try:
        sid = parse_bdf(pairs["--bdf"])
    except ValueError as e:
        print("hyperv-sim device: %s" % e, file=sys.stderr)
        return 2
    ram_path = os.path.join(pairs["--state-dir"], RAM_FILE)
    try:
        fd = os.open(ram_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        ram = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError) as e:          # no RAM file, or an empty one: no machine here
        print("hyperv-sim device %s: cannot map the host's RAM %s: %s"
              % (pairs["--bdf"], ram_path, getattr(e, "strerror", None) or e), file=sys.stderr)
        return 1
    base = ffi.cast("uint8_t *", ffi.from_buffer("unsigned char[]", ram, require_writable=True))
    try:
        chipset = Chipset.open(path_beside(ram_path))
    except ChipsetError as e:
        print("hyperv-sim device %s: %s" % (pairs["--bdf"], e), file=sys.stderr)
        return 1
    slot = slot_of(chipset, sid)
    if slot is None:
        print("hyperv-sim device %s: no running slot in the chipset" % pairs["--bdf"], file=sys.stderr)
        return 1
    chipset.c.dev[slot].pid = os.getpid()
    dev = threading.Thread(target=lib.lu_dev_run, args=(chipset.c, base, size // PAGE_SIZE, slot))
    dev.start()                             # the GIL is released in C
    # Power is gone when the machine's files are: a host removed without a
    # power-off (a test's, a crashed one cleaned up by hand) stops its devices.
    while dev.is_alive():
        dev.join(POWER_CHECK_S)
        if os.fstat(chipset.fd).st_nlink == 0 or os.fstat(fd).st_nlink == 0:
            chipset.c.dev[slot].state = lib.LU_DEV_STOPPING
    return 0


if __name__ == "__main__":
    sys.exit(main())
