"""The multiboot2 Xen loader: from an image and the host's ranges to the
segments and entry of a kexec_load.

Like kexec-tools' multiboot2-x86 loader it probes for a multiboot2 header and
builds the boot information itself; unlike it, a live-update image is placed
per the design (kexec_lu.window).
"""
import shlex
from dataclasses import dataclass, field

from . import window

from xen_public import abi, bootinfo
from xen_public.abi import PAGE_SIZE
from .errors import ImageError
from xen_public.units import align_up

LOADER_NAME = "kexec-lu"


@dataclass
class LoadPlan:
    ktype: int
    placement: window.Placement
    cmdline: str
    entry: int                  # the boot-information page: what the CPU jumps to
    eip: int                    # where that page sends it: the image's entry
    arch: int = abi.EM_X86_64
    segments: list = field(default_factory=list)   # [(bytes, dest, dest_size)]
    running_cmdline: str = None  # a live update's: the running hypervisor's, to compare with

    def cmdline_changes(self):
        """(words added, words dropped) against the running hypervisor's
        command line, for a live update; None for other loads."""
        if self.running_cmdline is None:
            return None
        old, new = self.running_cmdline.split(), self.cmdline.split()
        return [w for w in new if w not in old], [w for w in old if w not in new]

    def to_json(self):
        return {
            "type": abi.KEXEC_TYPE_NAMES[self.ktype],
            "placement": self.placement.to_json(),
            "cmdline": self.cmdline,
            "running_cmdline": self.running_cmdline,
            "entry": self.entry,
            "image_entry": self.eip,
            "arch": self.arch,
            "segments": [{"dest": d, "dest_size": ds, "buf_size": len(b)}
                         for b, d, ds in self.segments],
        }


def remove_parameter(cmdline, name):
    """Drop every `name` or `name=...` word, as kexec-tools does for
    crashkernel= when reusing a command line."""
    return " ".join(w for w in shlex.split(cmdline) if w.split("=", 1)[0] != name)


def compose_cmdline(ktype, given=None, append=None, reused=None):
    """The new hypervisor's command line, before any liveupdate= is added."""
    base = reused if reused is not None else (given or "")
    if reused is not None:
        if ktype == abi.KEXEC_TYPE_CRASH:
            base = remove_parameter(base, "crashkernel")
    base = remove_parameter(base, "liveupdate") if ktype == abi.KEXEC_TYPE_LIVEUPDATE else base
    return " ".join(p for p in (base, append or "") if p)


def check_loadable(image):
    """What every multiboot2 Xen load needs from the image."""
    if image.mb2 is None:
        raise ImageError("%s: no multiboot2 header in the first 32 KiB: not a multiboot2 "
                         "Xen image (xen-syms is not bootable; load xen.gz)" % image.path)


def plan_load(image, ktype, ranges, cmdline, mem_min=None, mem_max=None):
    """ranges: {range id: (start, size)} as get_range answered them."""
    check_loadable(image)
    reloc = image.relocatable
    if ktype == abi.KEXEC_TYPE_LIVEUPDATE:
        if reloc is None:
            raise ImageError("%s: no multiboot2 relocatable tag: a live-update image must be "
                             "placeable at the top of the LU window" % image.path)
        lu_start, lu_size = ranges[abi.KEXEC_RANGE_MA_LIVEUPDATE]
        xen_start, xen_size = ranges[abi.KEXEC_RANGE_MA_XEN]
        placement = window.plan_liveupdate(lu_start, lu_size, xen_start, xen_size,
                                           image.load_size, reloc.align, reloc.min_addr,
                                           reloc.max_addr, mem_min, mem_max)
        cmdline = " ".join(p for p in (cmdline, placement.liveupdate_param()) if p)
    else:
        align = reloc.align if reloc else PAGE_SIZE
        lo, hi = (reloc.min_addr, reloc.max_addr) if reloc else (image.load_start, None)
        if ktype == abi.KEXEC_TYPE_CRASH:
            start, size = ranges[abi.KEXEC_RANGE_MA_CRASH]
            placement = window.plan_in_region("crash", start, size, image.load_size, align,
                                              lo, hi, mem_min, mem_max)
        else:
            # A default kexec replaces the whole host: the image goes where a
            # boot loader would put it first, its link address or lowest
            # allowed one; the hypervisor stages it until exec.
            placement = window.plan_in_region("default", 0, window.ADDR_LIMIT,
                                              image.load_size, align, lo, hi, mem_min, mem_max)
        if reloc is None and placement.image_start != image.load_start:
            raise ImageError("%s has no relocatable tag and its link address 0x%x is not "
                             "where it must go (0x%x)" % (image.path, image.load_start,
                                                          placement.image_start))

    eip = placement.image_start + (image.entry - image.load_start)
    page = bootinfo.build_page(placement.bootinfo_addr, eip=eip, cmdline=cmdline,
                               load_base_addr=placement.image_start, mem_lower_kib=640,
                               mem_upper_kib=0, loader_name=LOADER_NAME, image=image.path)
    plan = LoadPlan(ktype=ktype, placement=placement, cmdline=cmdline,
                    entry=placement.bootinfo_addr, eip=eip)
    plan.segments.append((image_payload(image), placement.image_start,
                          align_up(image.load_size, PAGE_SIZE)))
    plan.segments.append((page, placement.bootinfo_addr, PAGE_SIZE))
    plan.segments.sort(key=lambda s: s[1])
    return plan


def image_payload(image):
    """The loaded image up to its last file byte; the rest (bss) is zeroed
    by the hypervisor as the trailing part of the segment."""
    last = max(s.paddr - image.load_start + s.filesz for s in image.segments)
    return image.loaded_bytes()[:last]
