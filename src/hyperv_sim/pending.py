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
  xen#2's entry        the boot information page at L + S - 4 KiB whose
                       command line says liveupdate=S@L (xen#2 clears it
                       once its guests run again, after the breadcrumb):
                       its image, its command line, and so the window the
                       update used.
"""
from xen_public import bootinfo, multiboot2, xennotes
from xen_public.abi import PAGE_SIZE
from xen_public.errors import FormatError
from xen_public.units import MiB

from . import bootline
from .errors import HypervSimError
from .liveupdate.stream import BREADCRUMB, read_breadcrumb

FIRST_BOOTINFO_ADDR = 0x1000    # where hyperv-sim's boot loader puts it, as GRUB would


class NothingPending(HypervSimError):
    """RAM holds no live update a hypervisor could restore."""


class Pending:
    """Where xen#2 was started: what a recovery plans its image from."""

    def __init__(self, lu_start, lu_size, xen_start, xen_size, cmdline, entry):
        self.lu_start, self.lu_size = lu_start, lu_size
        self.xen_start, self.xen_size = xen_start, xen_size
        self.cmdline, self.entry = cmdline, entry


def lu_bootmem_start(ram):
    """L, from the boot loader's page; NothingPending if it cannot say."""
    try:
        info = bootinfo.parse_page(ram.read(FIRST_BOOTINFO_ADDR, PAGE_SIZE), FIRST_BOOTINFO_ADDR)
        size = bootline.parse(info.cmdline).liveupdate_size
    except (FormatError, ValueError, HypervSimError) as e:
        raise NothingPending("no boot information at 0x%x (%s): not the RAM of a booted host"
                             % (FIRST_BOOTINFO_ADDR, e)) from None
    if not size:
        raise NothingPending("the host was booted without liveupdate=: no live update can be pending")
    return info.load_base_addr - size


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
        if not any(page[:8]):
            continue            # the common case: nothing there
        found = _entry_at(ram, addr, page, lu_start, size)
        if found:
            yield found


def _entry_at(ram, addr, page, lu_start, size):
    try:
        info = bootinfo.parse_page(page, addr)
        opts = bootline.parse(info.cmdline)
    except (FormatError, ValueError, HypervSimError):
        return None
    if opts.liveupdate_base != lu_start or opts.liveupdate_size != size:
        return None
    base = info.load_base_addr
    window = ram.read(base, min(xennotes.PERSONALITY_WINDOW, ram.size - base)) if base < ram.size else b""
    try:
        if multiboot2.find_header(window) is None:
            return None
        notes = xennotes.find_xenlu_notes(window)
        image_size = xennotes.decode_image(notes[xennotes.XENLU_NOTE_IMAGE])
    except (FormatError, ValueError, KeyError):
        return None
    return Pending(lu_start, size, base, image_size, info.cmdline, addr)
