"""What a hypervisor finds where it is entered: the hand-off its loader
left (kexec-lu's boot-information page or kexec-tools' purgatory), its own
image at the entry point, and its command line as Xen reads it.

One reader for both sides of a live update: xen#2 boots from it, and xen#1's
pre-flight runs it over the loaded image's bytes, so that a hand-off xen#2
could not boot from is refused before any domain is paused.
"""
from xen_public import abi, bootinfo, multiboot2, xennotes
from xen_public.abi import PAGE_SIZE
from xen_public.errors import FormatError

from . import bootline
from .errors import BootFailure


class Personality:
    """Who this hypervisor is, read from its image's XenLU notes."""

    def __init__(self, notes):
        if xennotes.XENLU_NOTE_VERSION not in notes or xennotes.XENLU_NOTE_IMAGE not in notes:
            raise BootFailure("image carries no hyperv-sim personality (XenLU version and "
                              "image notes): it can be inspected and loaded, not run")
        self.major, self.minor, self.extra = xennotes.decode_version(notes[xennotes.XENLU_NOTE_VERSION])
        self.image_size = xennotes.decode_image(notes[xennotes.XENLU_NOTE_IMAGE])
        if xennotes.XENLU_NOTE_STREAM in notes:
            lo, hi, types = xennotes.decode_stream(notes[xennotes.XENLU_NOTE_STREAM])
            self.lu_versions, self.lu_records = (lo, hi), frozenset(types)
        else:
            self.lu_versions, self.lu_records = None, frozenset()

    @property
    def version(self):
        return abi.version_text(self.major, self.minor, self.extra)


def loader_is_grub2(loader_name):
    """GRUB 2 calls itself "GRUB 2.xx" (GRUB 1 was "GNU GRUB 0.xx")."""
    at = loader_name.find("GRUB ")
    return at >= 0 and loader_name[at + 5:at + 6] != "0"


def cook_cmdline(cmdline, loader_name):
    """The command line as Xen keeps it (cmdline_cook, xen/arch/x86/setup.c):
    leading blanks go, and so does the first word, the image's name, unless
    the loader is GRUB 2, which does not put it there."""
    text = cmdline.lstrip(" ")
    if loader_is_grub2(loader_name):
        return text
    _name, _sep, rest = text.partition(" ")
    return rest.lstrip(" ")


class Entered:
    """What a hypervisor entered at `entry` has to start from."""
    __slots__ = ("entry", "info", "image_start", "personality", "cmdline", "opts")

    def __init__(self, entry, info, image_start, personality, cmdline, opts):
        self.entry, self.info, self.image_start = entry, info, image_start
        self.personality, self.cmdline, self.opts = personality, cmdline, opts

    @property
    def image_end(self):
        return self.image_start + self.personality.image_size


def enter(read, entry, ram_size):
    """Decode what is at `entry`; BootFailure says what a hypervisor
    entered there could not boot from.  read(addr, n) -> bytes of machine
    memory (RAM, or the bytes a loaded image will put there)."""
    try:
        info = bootinfo.parse_entry(read, entry)
        # Xen's entry is the first byte of its image: it finds itself there.
        start = info.eip
        if not 0 <= start < ram_size:
            raise BootFailure("entry point 0x%x (EIP) is outside RAM" % start)
        window = read(start, min(xennotes.PERSONALITY_WINDOW, ram_size - start))
        if multiboot2.find_header(window) is None:
            raise BootFailure("no multiboot2 header at the entry point 0x%x (EIP of the %s at "
                              "0x%x)" % (start, info.handoff, entry))
        personality = Personality(xennotes.find_xenlu_notes(window))
        cmdline = cook_cmdline(info.cmdline, info.loader_name)
        opts = bootline.parse(cmdline)
    except (FormatError, ValueError, bootline.BootLineError) as e:
        raise BootFailure(str(e))
    return Entered(entry, info, start, personality, cmdline, opts)


def check_bootmem(entered):
    """What a hypervisor entered for a live update checks of the bootmem its
    command line names (liveupdate=SIZE@BASE), before it trusts anything
    there: the breadcrumb page and the bootmem lie below its own image."""
    opts = entered.opts
    base, size = opts.liveupdate_base, opts.liveupdate_size
    if base is None:
        return
    if base % PAGE_SIZE:
        raise BootFailure("liveupdate=...@0x%x: the bootmem base is not page-aligned" % base)
    if base + size > entered.image_start:
        raise BootFailure("liveupdate=%dM@0x%x: the bootmem [0x%x, 0x%x) overlaps this "
                          "hypervisor's own image at 0x%x" % (size >> 20, base, base, base + size,
                                                              entered.image_start))
