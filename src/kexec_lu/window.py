"""Where a new hypervisor goes: load-window arithmetic.

Live update (the design, not kexec-tools' lowest-hole rule): LU bootmem and
the running Xen form one contiguous window [LU start, end of Xen).  xen#2 is
put at the top of it, aligned per its relocatable tag; below it, whole MiB,
is xen#2's LU bootmem.  The first page of that bootmem keeps the breadcrumb;
its top page holds the boot information (registers + multiboot2 MBI).
"""
from dataclasses import asdict, dataclass

from xen_public.abi import PAGE_SIZE
from .errors import KexecLuError
from xen_public.units import MiB, align_down, align_up, format_size

# xen#2 boots out of its LU bootmem until it has read the stream: the
# breadcrumb page, the boot-information page and its early allocations.
LU_BOOTMEM_MIN = 1 * MiB
ADDR_LIMIT = (1 << 64) - 1


class WindowError(KexecLuError):
    """The image does not fit; shortfall in bytes, and what would fit."""

    def __init__(self, message, shortfall=None, suggested_lu_size=None):
        super().__init__(message)
        self.shortfall = shortfall
        self.suggested_lu_size = suggested_lu_size


@dataclass
class Placement:
    kind: str
    image_start: int
    image_end: int
    bootinfo_addr: int
    region_start: int            # the window (LU) or region (crash/default) searched
    region_end: int
    bootmem_start: int = None    # live update only: xen#2's LU bootmem
    bootmem_size: int = None
    breadcrumb_addr: int = None

    def liveupdate_param(self):
        """What xen#2's command line must say: liveupdate=<size>M@0x<base>."""
        return "liveupdate=%dM@0x%x" % (self.bootmem_size // MiB, self.bootmem_start)

    def to_json(self):
        return asdict(self)


def _limits(min_addr, max_addr, mem_min, mem_max):
    low = max(min_addr or 0, mem_min or 0)
    high = min(ADDR_LIMIT if max_addr is None else max_addr,
               ADDR_LIMIT if mem_max is None else mem_max)
    return low, high


def plan_liveupdate(lu_start, lu_size, xen_start, xen_size, load_size, align,
                    min_addr=0, max_addr=None, mem_min=None, mem_max=None):
    """Place xen#2 at the top of [lu_start, xen_start + xen_size)."""
    if load_size <= 0:
        raise WindowError("image has nothing to load")
    if not lu_size:
        raise WindowError("the running hypervisor reserved no live-update bootmem: "
                          "boot it with liveupdate=<size>M")
    if lu_start + lu_size != xen_start:
        raise WindowError("LU bootmem [0x%x, 0x%x) is not directly below Xen [0x%x, 0x%x): "
                          "no contiguous load window"
                          % (lu_start, lu_start + lu_size, xen_start, xen_start + xen_size))
    align = max(align, PAGE_SIZE)
    window_end = xen_start + xen_size
    low, high = _limits(min_addr, max_addr, mem_min, mem_max)
    top = min(window_end, high + 1)
    start = align_down(top - load_size, align) if top >= load_size else -1
    floor = lu_start + LU_BOOTMEM_MIN
    if start < floor and top < window_end:
        raise WindowError("the image must end at or below 0x%x (--mem-max or the image's "
                          "max_addr), which leaves no room for it above 0x%x in the window "
                          "[0x%x, 0x%x)" % (high, floor, lu_start, window_end))
    if start < floor:
        shortfall = floor - start
        # liveupdate=S puts bootmem at [xen_start - S, xen_start); the image's
        # place depends only on the end of Xen, so S must cover the rest.
        suggested = align_up(xen_start - start + LU_BOOTMEM_MIN, MiB)
        raise WindowError(
            "image needs %d bytes more than the window [0x%x, 0x%x) holds (%s image at "
            "alignment 0x%x, %s minimum LU bootmem for xen#2); boot the running Xen with "
            "liveupdate=%s or more" % (shortfall, lu_start, window_end, format_size(load_size),
                                       align, format_size(LU_BOOTMEM_MIN), format_size(suggested)),
            shortfall=shortfall, suggested_lu_size=suggested)
    if start < low:
        raise WindowError("image would be placed at 0x%x, below its lowest allowed address 0x%x"
                          % (start, low))
    bootmem_size = align_down(start - lu_start, MiB)
    if lu_start + bootmem_size - PAGE_SIZE < (mem_min or 0):
        raise WindowError("the boot-information page goes at the top of xen#2's LU bootmem, "
                          "0x%x, below --mem-min 0x%x" % (lu_start + bootmem_size - PAGE_SIZE, mem_min))
    return Placement(kind="liveupdate", image_start=start, image_end=start + load_size,
                     bootinfo_addr=lu_start + bootmem_size - PAGE_SIZE,
                     region_start=lu_start, region_end=window_end,
                     bootmem_start=lu_start, bootmem_size=bootmem_size,
                     breadcrumb_addr=lu_start)


def plan_in_region(kind, region_start, region_size, load_size, align,
                   min_addr=0, max_addr=None, mem_min=None, mem_max=None):
    """Lowest fit in a region, boot-information page right below the image
    (crash images: the crash region; default images: at or above old Xen)."""
    if kind == "crash" and not region_size:
        raise WindowError("no crash region reserved: boot the hypervisor with crashkernel=<size>")
    align = max(align, PAGE_SIZE)
    low, high = _limits(min_addr, max_addr, mem_min, mem_max)
    region_end = region_start + region_size
    # Every segment respects the limits, the boot-information page below the
    # image included.
    start = align_up(max(region_start, low) + PAGE_SIZE, align)
    end = start + load_size
    if end > min(region_end, high + 1):
        raise WindowError("image of %d bytes does not fit in [0x%x, 0x%x) at alignment 0x%x "
                          "(%d bytes short)" % (load_size, region_start, min(region_end, high + 1),
                                                align, end - min(region_end, high + 1)),
                          shortfall=end - min(region_end, high + 1))
    return Placement(kind=kind, image_start=start, image_end=end,
                     bootinfo_addr=start - PAGE_SIZE, region_start=region_start,
                     region_end=region_end)
