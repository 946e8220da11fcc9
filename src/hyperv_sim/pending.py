"""A live update left pending in host RAM, found from RAM alone.

After the point of no return the RAM file is the only truth: whatever
happened to the process (xen#2 killed, crashed, halted, or a recover cut
short), `hyperv-sim recover` finds here what it needs to start another
hypervisor on the same RAM, and takes nothing from a process's answer.

  LU bootmem start L   the boot loader's first boot information, at
                       FIRST_BOOTINFO_ADDR in reserved low memory no guest
                       can own: its load base minus its liveupdate= size.
                       Every update keeps L (xen#2's bootmem starts there).
  the breadcrumb       at L; without it nothing is pending.
  xen#2's entry        the hand-off whose command line says liveupdate=S@L:
                       kexec-lu's boot information page at L + S - 4 KiB,
                       or the register block of kexec-tools' purgatory just
                       above the breadcrumb (xen#2 clears it once its guests
                       run again): its image, its command line, and so the
                       window the update used.
"""
from xen_public import bootinfo
from xen_public.abi import PAGE_SIZE
from xen_public.errors import FormatError
from xen_public.units import MiB

from . import bootline
from .entry import cook_cmdline, enter
from .errors import BootFailure, HypervSimError
from .liveupdate.stream import BREADCRUMB, read_breadcrumb

FIRST_BOOTINFO_ADDR = 0x1000    # where hyperv-sim's boot loader puts it, as GRUB would


class NothingPending(HypervSimError):
    """RAM holds no live update a hypervisor could restore."""


class Pending:
    """Where xen#2 was started: what a recovery plans its image from."""

    def __init__(self, lu_start, lu_size, xen_start, xen_size, cmdline, handoff):
        self.lu_start, self.lu_size = lu_start, lu_size
        self.xen_start, self.xen_size = xen_start, xen_size
        self.cmdline, self.handoff = cmdline, handoff     # handoff: a bootinfo.BootInfo


def lu_bootmem_start(ram):
    """L, from the boot loader's page; NothingPending if it cannot say."""
    try:
        info = bootinfo.parse_page(ram.read(FIRST_BOOTINFO_ADDR, PAGE_SIZE), FIRST_BOOTINFO_ADDR)
        size = bootline.parse(cook_cmdline(info.cmdline, info.loader_name)).liveupdate_size
    except (FormatError, ValueError, HypervSimError) as e:
        raise NothingPending("no boot information at 0x%x (%s): not the RAM of a booted host"
                             % (FIRST_BOOTINFO_ADDR, e)) from None
    if not size:
        raise NothingPending("the host was booted without liveupdate=: no live update can be pending")
    return info.eip - size         # Xen's entry is its image's first byte


def find(ram):
    """The pending update in `ram`, or NothingPending saying why not."""
    lu_start = lu_bootmem_start(ram)
    if read_breadcrumb(ram.read(lu_start, BREADCRUMB.size)) is None:
        raise NothingPending("no breadcrumb at 0x%x: no live update is pending" % lu_start)
    entries = list(_entries(ram, lu_start))
    if not entries:
        raise NothingPending("a breadcrumb at 0x%x but no boot information for a new hypervisor "
                             "in LU bootmem: the update stopped before its point of no return"
                             % lu_start)
    # Two only if a recover was cut short between writing its own and
    # clearing the one it planned from; that one's window holds the other.
    return max(entries, key=lambda p: p.xen_start + p.xen_size)


def _entries(ram, lu_start):
    for size in range(MiB, ram.size - lu_start + 1, MiB):
        addr = lu_start + size - PAGE_SIZE
        page = ram.read(addr, PAGE_SIZE)
        if page[:len(bootinfo.SIGNATURE)] != bootinfo.SIGNATURE:
            continue            # the common case: nothing there
        found = _entry_at(ram, addr, lu_start, size)
        if found:
            yield found
    # kexec-tools puts its purgatory at the bottom of the window it is
    # given, the page above the breadcrumb.
    found = _entry_at(ram, lu_start + PAGE_SIZE, lu_start, None)
    if found:
        yield found


def _entry_at(ram, addr, lu_start, size):
    try:
        entered = enter(ram.read, addr, ram.size)
    except BootFailure:
        return None
    opts = entered.opts
    if opts.liveupdate_base != lu_start or opts.liveupdate_size != (size or opts.liveupdate_size):
        return None
    return Pending(lu_start, opts.liveupdate_size, entered.image_start,
                   entered.personality.image_size, entered.cmdline, entered.info)
