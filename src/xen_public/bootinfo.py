"""The boot-information page a loader leaves for the hypervisor it starts.

Real kexec-tools loads, next to a multiboot2 kernel, a purgatory whose
register block (struct entry32_regs) sets EAX to the multiboot2 loader magic,
EBX to the boot information (MBI) and jumps to EIP.  The simulated CPU cannot
run purgatory code, so the page holds that register block as data, tagged
with a signature, and the MBI after it:

  offset  0  u64 signature "PURGATRY"
  offset  8  u32 eax, ebx, ecx, edx, esi, edi, esp, ebp, eip
  offset 64  multiboot2 boot information (cmdline, loader name, meminfo,
             load base address), see xen_public.multiboot2.encode_mbi

The entry address a loader hands over (xen_kexec_load_t.entry_maddr, or the
boot loader's jump) is this page's machine address.
"""
import struct

from . import multiboot2
from .abi import PAGE_SIZE
from .errors import FormatError

SIGNATURE = b"PURGATRY"
_REGS = struct.Struct("<8s9I")
MBI_OFFSET = 64


class BootInfo:
    __slots__ = ("eip", "mbi_addr", "cmdline", "load_base_addr", "loader_name")

    def __init__(self, eip, mbi_addr, cmdline, load_base_addr, loader_name):
        self.eip, self.mbi_addr, self.cmdline = eip, mbi_addr, cmdline
        self.load_base_addr, self.loader_name = load_base_addr, loader_name


def build_page(page_addr, eip, cmdline, load_base_addr, mem_lower_kib, mem_upper_kib,
               loader_name):
    """The page's bytes, for a page placed at machine address page_addr."""
    mbi_addr = page_addr + MBI_OFFSET
    regs = _REGS.pack(SIGNATURE, multiboot2.MB2_BOOTLOADER_MAGIC, mbi_addr,
                      0, 0, 0, 0, 0, 0, eip)
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
    return BootInfo(eip=eip, mbi_addr=ebx, cmdline=mbi.get("cmdline", ""),
                    load_base_addr=mbi.get("load_base_addr", 0),
                    loader_name=mbi.get("loader_name", ""))
