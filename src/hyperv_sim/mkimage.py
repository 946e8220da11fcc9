"""Build hypervisor images for the simulator, shaped like Debian's xen.gz.

An image is an ELF (ELF32 i386 like xen.gz, or ELF64 x86-64 with xen-syms'
virtual addresses) with one RWX PT_LOAD and a PT_NOTE.  The segment starts
with a jump stub, the multiboot2 header at offset 0x18 (console flags and the
relocatable tag real Xen carries), the notes (GNU build-id; XenLU version,
stream capabilities and image size), Xen-style compile-info strings, then
deterministic filler.  Everything a loader or a freshly started hypervisor
needs sits in the first 32 KiB, as in real Xen.
"""
import gzip as _gzip
import hashlib
import re
import struct

from xen_public import multiboot2, xennotes
from xen_public.lustream import ALL_RECORD_TYPES, LU_FORMAT_VERSION
from xen_public.abi import XEN_EXTRAVERSION_LEN

PAGE_SIZE = 4096
MiB = 1 << 20
MIN_TEXT_SIZE = 64 * 1024
MAX_MEM_SIZE = 1024 * MiB  # what kexec_lu.image accepts
XEN_VIRT_BASE = 0xFFFF82D040000000  # xen-syms: vaddr = base + paddr
DEFAULT_LINK_ADDR = 0x200000

# Real Xen's relocatable tag: anywhere in [2 MiB, 4 GiB), 2 MiB aligned, high.
RELOC_MIN, RELOC_MAX, RELOC_ALIGN, RELOC_PREF = 0x200000, 0xFFFFFFFF, 0x200000, 2

MB2_OFFSET = 0x18  # in the segment, as in real xen.gz
COMPILER = b"gcc (hyperv-sim mkimage) 12.2.0"

EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
PF_RWX = 7
SHT_PROGBITS, SHT_STRTAB, SHT_NOTE = 1, 3, 7
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4

_VERSION = re.compile(r"(\d{1,9})\.(\d{1,9})((?:\.\d{1,9})?(?:-[A-Za-z0-9._+~]{1,32})?)")

# Per class: header formats, segment file offset.
_LAYOUT = {
    32: dict(ehdr="<16sHHIIIIIHHHHHH", phdr="<8I", shdr="<10I", seg_off=0x80, ptr=4),
    64: dict(ehdr="<16sHHIQQQIHHHHHH", phdr="<IIQQQQQQ", shdr="<IIQQQQIIQQ", seg_off=0xC0,
             ptr=8),
}


def parse_version(text):
    """"4.18" / "4.18.0" / "4.18-rc" / "4.18.0-rc1" -> (major, minor, extra).
    A bare X.Y is X.Y.0, as Xen's build makes it (XEN_EXTRAVERSION ?= .0)."""
    m = _VERSION.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ValueError("Xen version %r is not X.Y, X.Y.Z or X.Y-extra" % (text,))
    major, minor = int(m.group(1)), int(m.group(2))
    if major > 0xFFFFFFFF or minor > 0xFFFFFFFF:
        raise ValueError("Xen version %r: major and minor must fit in 32 bits" % text)
    extra = m.group(3) or ".0"
    if len(extra) >= XEN_EXTRAVERSION_LEN:
        raise ValueError("Xen version %r: the extra version %r is longer than Xen's %d characters"
                         % (text, extra, XEN_EXTRAVERSION_LEN - 1))
    return major, minor, extra


def _check_args(xen_version, elf_class, text_size, mem_size, link_addr,
                lu_stream_versions, lu_record_types):
    parse_version(xen_version)
    if elf_class not in (32, 64):
        raise ValueError("elf_class must be 32 or 64, not %r" % (elf_class,))
    if not isinstance(text_size, int) or text_size < MIN_TEXT_SIZE:
        raise ValueError("text_size must be at least %d KiB, not %r"
                         % (MIN_TEXT_SIZE // 1024, text_size))
    if not isinstance(mem_size, int) or mem_size <= 0 or mem_size % PAGE_SIZE:
        raise ValueError("mem_size must be a positive multiple of %d, not %r"
                         % (PAGE_SIZE, mem_size))
    if mem_size < text_size:
        raise ValueError("mem_size 0x%x is smaller than text_size 0x%x" % (mem_size, text_size))
    if mem_size > MAX_MEM_SIZE:
        raise ValueError("mem_size 0x%x is more than %d MiB" % (mem_size, MAX_MEM_SIZE >> 20))
    if not isinstance(link_addr, int) or link_addr < 0 or link_addr % PAGE_SIZE:
        raise ValueError("link_addr must be a page-aligned address, not %r" % (link_addr,))
    if link_addr + mem_size > 1 << 32:
        raise ValueError("image at 0x%x+0x%x does not fit below 4 GiB" % (link_addr, mem_size))
    lo, hi = lu_stream_versions
    if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 0xFFFFFFFF):
        raise ValueError("lu_stream_versions must be (min, max) with 0 <= min <= max < 2**32, "
                         "not %r" % (lu_stream_versions,))
    for t in lu_record_types:
        if not isinstance(t, int) or not 0 <= t <= 0xFFFFFFFF:
            raise ValueError("record type %r is not a u32" % (t,))


def _personality(xen_version, relocatable, with_mb2, personality, lu, lu_stream_versions,
                 lu_record_types, mem_size, stub_len):
    """Segment bytes from MB2_OFFSET up to the filler, and where the notes and
    the build-id descriptor sit in them (offsets from segment start)."""
    major, minor, extra = parse_version(xen_version)
    out = b""
    if with_mb2:
        tags = [multiboot2.console_flags_tag()]
        if relocatable:
            tags.append(multiboot2.relocatable_tag(RELOC_MIN, RELOC_MAX, RELOC_ALIGN,
                                                   RELOC_PREF))
        out += multiboot2.build_header(*tags)
    out += b"\0" * (-(stub_len + len(out)) % 8)
    notes_at = stub_len + len(out)
    notes = xennotes.encode_note(xennotes.GNU_OWNER, xennotes.NT_GNU_BUILD_ID, b"\0" * 20)
    build_id_at = notes_at + len(notes) - 20
    # The personality (version, image size) makes an image bootable by the
    # simulator; the stream note says it can restore a live-update stream.
    if personality:
        notes += xennotes.encode_note(xennotes.XENLU_OWNER, xennotes.XENLU_NOTE_VERSION,
                                      xennotes.encode_version(major, minor, extra))
        if lu:
            notes += xennotes.encode_note(xennotes.XENLU_OWNER, xennotes.XENLU_NOTE_STREAM,
                                          xennotes.encode_stream(*lu_stream_versions,
                                                                 lu_record_types))
        notes += xennotes.encode_note(xennotes.XENLU_OWNER, xennotes.XENLU_NOTE_IMAGE,
                                      xennotes.encode_image(mem_size))
    out += notes
    # Xen's compile-info strings (version, compiler, extra), so that a
    # stripped image without XenLU notes still says which Xen it is.
    out += b"\0" + ("%d.%d%s" % (major, minor, extra)).encode() + b"\0" + COMPILER + b"\0"
    out += extra.encode() + b"\0"
    out += b"\0" * (-(stub_len + len(out)) % 8)
    if stub_len + len(out) > xennotes.PERSONALITY_WINDOW:
        raise ValueError("multiboot2 header and notes take %d bytes, more than the first "
                         "%d KiB (too many record types?)"
                         % (stub_len + len(out), xennotes.PERSONALITY_WINDOW // 1024))
    return out, notes_at, len(notes), build_id_at


def _filler(xen_version, length, salt):
    """Cheap, deterministic, version-dependent bytes: one 4 KiB block, each
    copy stamped with its page number (repeats gzip fast)."""
    block = hashlib.shake_256(b"hyperv-sim filler %s %d" % (xen_version.encode(), salt)) \
        .digest(PAGE_SIZE)
    pages = -(-length // PAGE_SIZE)
    return b"".join(struct.pack("<Q", i) + block[8:] for i in range(pages))[:length]


def _stray_markers(head, personality_end):
    """True if filler in the first 32 KiB looks like a multiboot2 header or a
    XenLU note, which would confuse a loader."""
    tail = head[personality_end:]
    return (multiboot2.find_magic(bytes(tail)) is not None
            or xennotes.XENLU_OWNER + b"\0" in tail)


def build_image(xen_version="4.18.0", elf_class=32, gzip=True, text_size=MiB, mem_size=None,
                relocatable=True, with_mb2=True, personality=True, lu=True,
                lu_stream_versions=(LU_FORMAT_VERSION, LU_FORMAT_VERSION),
                lu_record_types=ALL_RECORD_TYPES, link_addr=DEFAULT_LINK_ADDR):
    """The image file's bytes.  ``relocatable`` only matters with ``with_mb2``;
    ``lu`` (the stream note) only with ``personality`` (the XenLU notes that
    make the simulator boot it).  Same arguments, same bytes."""
    if mem_size is None and isinstance(text_size, int):
        mem_size = -(-(text_size + 2 * MiB) // PAGE_SIZE) * PAGE_SIZE
    lu_stream_versions = tuple(lu_stream_versions)
    lu_record_types = tuple(lu_record_types)
    if len(lu_stream_versions) != 2:
        raise ValueError("lu_stream_versions must be a (min, max) pair")
    _check_args(xen_version, elf_class, text_size, mem_size, link_addr,
                lu_stream_versions, lu_record_types)
    lay = _LAYOUT[elf_class]
    seg_off = lay["seg_off"]
    vaddr = link_addr + (XEN_VIRT_BASE if elf_class == 64 else 0)

    pers, notes_at, notes_len, build_id_at = _personality(
        xen_version, relocatable, with_mb2, personality, lu, lu_stream_versions, lu_record_types,
        mem_size, MB2_OFFSET)
    # Entry stub: jmp rel32 over header and notes (never executed: the
    # simulator only records the entry), nops up to the multiboot2 header.
    code_at = MB2_OFFSET + len(pers)
    stub = (b"\xe9" + struct.pack("<i", code_at - 5)).ljust(MB2_OFFSET, b"\x90")
    head = stub + pers  # < 32 KiB <= text_size, checked by _personality
    for salt in range(1000):
        text = head + _filler(xen_version, text_size - len(head), salt)
        if not _stray_markers(text[:xennotes.PERSONALITY_WINDOW], len(head)):
            break

    shstrtab = b"\0.text\0.note\0.shstrtab\0"
    shstr_off = seg_off + text_size
    shoff = -(-(shstr_off + len(shstrtab)) // 8) * 8
    ehsize, phentsize, shentsize = struct.calcsize(lay["ehdr"]), struct.calcsize(lay["phdr"]), \
        struct.calcsize(lay["shdr"])
    ident = b"\x7fELF" + bytes([elf_class // 32, 1, 1, 0]) + bytes(8)
    ehdr = struct.pack(lay["ehdr"], ident, 2, EM_386 if elf_class == 32 else EM_X86_64, 1,
                       link_addr, ehsize, shoff, 0, ehsize, phentsize, 2, shentsize, 4, 3)

    note_paddr, note_vaddr = link_addr + notes_at, vaddr + notes_at
    if elf_class == 32:
        load = struct.pack(lay["phdr"], PT_LOAD, seg_off, vaddr, link_addr, text_size,
                           mem_size, PF_RWX, 0x40)
        note = struct.pack(lay["phdr"], PT_NOTE, seg_off + notes_at, note_vaddr, note_paddr,
                           notes_len, notes_len, 4, 4)
    else:
        load = struct.pack(lay["phdr"], PT_LOAD, PF_RWX, seg_off, vaddr, link_addr, text_size,
                           mem_size, 0x40)
        note = struct.pack(lay["phdr"], PT_NOTE, 4, seg_off + notes_at, note_vaddr, note_paddr,
                           notes_len, notes_len, 4)
    shdrs = b"".join(struct.pack(lay["shdr"], *fields) for fields in (
        (0,) * 10,
        (1, SHT_PROGBITS, SHF_WRITE | SHF_ALLOC | SHF_EXECINSTR, vaddr, seg_off, text_size,
         0, 0, 64, 0),
        (7, SHT_NOTE, SHF_ALLOC, note_vaddr, seg_off + notes_at, notes_len, 0, 0, 4, 0),
        (13, SHT_STRTAB, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ))
    elf = bytearray((ehdr + load + note).ljust(seg_off, b"\0") + text
                    + shstrtab.ljust(shoff - shstr_off, b"\0") + shdrs)

    # Build-id: sha1 of the whole file with the descriptor still zero.
    bid = seg_off + build_id_at
    elf[bid:bid + 20] = hashlib.sha1(bytes(elf)).digest()
    if not gzip:
        return bytes(elf)
    return _gzip.compress(bytes(elf), compresslevel=6, mtime=0)


def write_image(path, **kwargs):
    """build_image(**kwargs) written to path; returns the bytes written."""
    data = build_image(**kwargs)
    with open(path, "wb") as f:
        f.write(data)
    return data
