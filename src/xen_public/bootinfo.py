"""What a loader leaves at the entry of the hypervisor it starts: the two
hand-offs a simulated hypervisor boots from.

kexec-tools loads, next to a multiboot2 kernel, a purgatory whose register
block (struct entry32_regs) sets EAX to the multiboot2 loader magic, EBX to
the boot information (MBI) and jumps to EIP; the entry it hands Xen
(xen_kexec_load_t.entry_maddr) is the purgatory's own start.  The simulated
CPU runs no code, so a hypervisor reads either hand-off as data:

* kexec-lu's and hyperv-sim boot's boot-information page: the register
  block tagged with a signature, the MBI after it, at the entry itself:

    offset  0  u64 signature "PURGATRY"
    offset  8  u32 eax, ebx, ecx, edx, esi, edi, esp, ebp, eip
    offset 64  multiboot2 boot information (cmdline, loader name, meminfo,
               load base address), see xen_public.multiboot2.encode_mbi

* kexec-tools' x86-64 purgatory (purgatory/arch/x86_64/entry64-32.S): its
  entry32_regs, u32 eax, ebx, ecx, edx, esi, edi, esp, ebp and u64 eip,
  somewhere in the purgatory loaded at the entry.  kexec-tools 2.0.25
  (kexec-mb2-x86.c) sets EAX, EBX and EIP; the others keep the purgatory's
  zeros.  It puts the purgatory's address, not the image's, in the MBI's
  load-base tag, which Xen does not read: Xen's entry (`start`) is the
  first byte of its image.
"""
import struct

from . import multiboot2
from .abi import PAGE_SIZE
from .errors import FormatError

SIGNATURE = b"PURGATRY"
_REGS = struct.Struct("<8s9I")
MBI_OFFSET = 64
_ENTRY32_REGS = struct.Struct("<8IQ")
# How far past the entry's page the purgatory's register block is looked
# for: kexec-tools 2.0.25's purgatory segment is 36 KiB.
PURGATORY_WINDOW = 64 << 10
HANDOFF_BOOT_PAGE = "boot-information page"
HANDOFF_PURGATORY = "kexec-tools purgatory"


class BootInfo:
    __slots__ = ("eip", "mbi_addr", "cmdline", "load_base_addr", "loader_name", "handoff",
                 "regs_addr", "regs_size")

    def __init__(self, eip, mbi_addr, cmdline, load_base_addr, loader_name,
                 handoff=HANDOFF_BOOT_PAGE, regs_addr=None, regs_size=PAGE_SIZE):
        self.eip, self.mbi_addr, self.cmdline = eip, mbi_addr, cmdline
        self.load_base_addr, self.loader_name = load_base_addr, loader_name
        self.handoff = handoff
        # The register block (the whole page, for a boot-information page):
        # what to clear so that no later boot starts from this hand-off again.
        self.regs_addr, self.regs_size = regs_addr, regs_size


def image_name(path):
    """The word a loader puts first on the command line it hands over, as
    GRUB 1 and kexec-tools do: the image's file name (one word)."""
    name = "".join("_" if c.isspace() else c for c in path.rstrip("/").rsplit("/", 1)[-1])
    return name or "xen"


def build_page(page_addr, eip, cmdline, load_base_addr, mem_lower_kib, mem_upper_kib,
               loader_name, image):
    """The page's bytes, for a page placed at machine address page_addr.
    The command line starts with the image's name (image: its path), which
    Xen drops, as from any loader but GRUB 2."""
    mbi_addr = page_addr + MBI_OFFSET
    regs = _REGS.pack(SIGNATURE, multiboot2.MB2_BOOTLOADER_MAGIC, mbi_addr,
                      0, 0, 0, 0, 0, 0, eip)
    cmdline = " ".join(w for w in (image_name(image), cmdline) if w)
    mbi = multiboot2.encode_mbi(cmdline=cmdline, loader_name=loader_name,
                                load_base_addr=load_base_addr,
                                mem_lower_kib=mem_lower_kib, mem_upper_kib=mem_upper_kib)
    page = regs.ljust(MBI_OFFSET, b"\0") + mbi
    if len(page) > PAGE_SIZE:
        raise FormatError("command line too long: the boot information must fit in one "
                         "4 KiB page (%d bytes)" % len(page))
    return page.ljust(PAGE_SIZE, b"\0")


def parse_page(page, page_addr):
    """Decode a boot-information page read from RAM at page_addr."""
    sig, eax, ebx, _ecx, _edx, _esi, _edi, _esp, _ebp, eip = _REGS.unpack_from(page)
    if sig != SIGNATURE:
        raise FormatError("no boot information at entry 0x%x (signature %r)" % (page_addr, sig))
    if eax != multiboot2.MB2_BOOTLOADER_MAGIC:
        raise FormatError("entry 0x%x: EAX 0x%x is not the multiboot2 loader magic"
                         % (page_addr, eax))
    if not page_addr <= ebx < page_addr + PAGE_SIZE:
        raise FormatError("entry 0x%x: boot information at 0x%x lies outside its page"
                         % (page_addr, ebx))
    mbi = multiboot2.decode_mbi(bytes(page[ebx - page_addr:]))
    return BootInfo(eip=eip, mbi_addr=ebx, cmdline=mbi.get("cmdline") or "",
                    load_base_addr=mbi.get("load_base_addr") or 0,
                    loader_name=mbi.get("loader_name") or "", regs_addr=page_addr)


def _read_mbi(read, addr):
    total = struct.unpack("<I", read(addr, 4))[0]
    if not 16 <= total <= PAGE_SIZE * 16:
        raise FormatError("multiboot2 boot information at 0x%x: total_size %d" % (addr, total))
    return multiboot2.decode_mbi(read(addr, total))


def parse_purgatory(read, entry):
    """kexec-tools' hand-off: the purgatory's entry32_regs, found in the
    PURGATORY_WINDOW bytes from the entry's page on, whose EBX leads to an
    MBI that decodes.  read(addr, n) -> bytes of machine memory."""
    base = entry - entry % PAGE_SIZE
    window = read(base, PURGATORY_WINDOW)
    magic = struct.pack("<I", multiboot2.MB2_BOOTLOADER_MAGIC)
    at = window.find(magic)
    while 0 <= at <= len(window) - _ENTRY32_REGS.size:
        eax, ebx, *rest, eip = _ENTRY32_REGS.unpack_from(window, at)
        if at % 4 == 0 and not any(rest) and eip < 1 << 32 and ebx:
            try:
                mbi = _read_mbi(read, ebx)
            except (FormatError, ValueError, struct.error):
                mbi = None
            if mbi is not None:
                return BootInfo(eip=eip, mbi_addr=ebx, cmdline=mbi.get("cmdline") or "",
                                load_base_addr=mbi.get("load_base_addr"),
                                loader_name=mbi.get("loader_name") or "",
                                handoff=HANDOFF_PURGATORY, regs_addr=base + at,
                                regs_size=_ENTRY32_REGS.size)
        at = window.find(magic, at + 1)
    raise FormatError("no boot information at entry 0x%x: neither a boot-information page "
                      "(signature %r) nor kexec-tools' purgatory (entry32_regs with EAX = the "
                      "multiboot2 magic and EBX = a boot information) in the %d KiB from there"
                      % (entry, SIGNATURE.decode(), PURGATORY_WINDOW >> 10))


def parse_entry(read, entry):
    """Whichever hand-off the loader left at `entry`."""
    page = read(entry, PAGE_SIZE)
    if page[:len(SIGNATURE)] == SIGNATURE:
        return parse_page(page, entry)
    return parse_purgatory(read, entry)
