"""Xen hypervisor images: probe and load an x86 ELF, plain or gzip-compressed.

Like kexec-tools' loaders, a cheap probe() says whether a file can be an image
at all, and load_image() runs every check a loader needs, each failing with
one line that names the file and what is wrong.  What we learn:

* the memory image: PT_LOAD segments by physical address, the physical entry;
* the multiboot2 header (first 32 KiB of the file) and its relocatable tag,
  which decides where the new hypervisor may be placed;
* identity: GNU build-id, Xen version (XenLU note, else the xen_*_version
  functions in a symbol table, else the compile-info strings of a stripped
  image), and the XenLU live-update capabilities.
"""
import io
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE

from xen_public import abi, multiboot2, xennotes
from xen_public.errors import FormatError

from kexec_lu.errors import ImageError
from xen_public.lustream import record_name

MiB = 1 << 20
# Guards against memory exhaustion by hostile or broken files.
MAX_FILE_SIZE = 256 * MiB
MAX_DECOMPRESSED = 256 * MiB
MAX_LOAD_SIZE = 1024 * MiB
# gzip(1) takes any number of concatenated members; xen.gz has one, a
# bgzip-style file one per 64 KiB.  Each costs a few microseconds even empty.
MAX_GZIP_MEMBERS = 65536

GZIP_MAGIC = b"\x1f\x8b"
ELF_MAGIC = b"\x7fELF"
PE_MAGIC = b"MZ"

PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4

SUPPORTED_MACHINES = (abi.EM_386, abi.EM_X86_64)
_MACHINE_NAMES = {v: k for k, v in ENUM_E_MACHINE.items() if k.startswith("EM_")}

# Per class: ELF header size, program header entry size, section header entry size.
_ELF_SIZES = {32: (52, 32, 40), 64: (64, 56, 64)}


def machine_name(e_machine):
    return _MACHINE_NAMES.get(e_machine, "EM_%d" % e_machine)


@dataclass(frozen=True)
class Segment:
    index: int  # position in the program header table
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int
    data: bytes = field(repr=False)

    @property
    def perms(self):
        return "".join(c if self.flags & b else "-"
                       for c, b in (("R", PF_R), ("W", PF_W), ("X", PF_X)))

    def to_dict(self):
        return {"index": self.index, "paddr": self.paddr, "vaddr": self.vaddr,
                "offset": self.offset, "filesz": self.filesz, "memsz": self.memsz,
                "flags": self.flags, "perms": self.perms}


@dataclass(frozen=True)
class XenVersion:
    major: int
    minor: int
    extra: str
    source: str  # "note", "symbols" or "banner"

    def __str__(self):
        return abi.version_text(self.major, self.minor, self.extra)


@dataclass(frozen=True)
class LiveUpdateCaps:
    """What live-update streams an image says it can restore (XenLU STREAM note)."""
    min_version: int
    max_version: int
    record_types: tuple


@dataclass
class XenImage:
    path: str
    compressed: bool
    file_size: int
    elf_class: int
    machine: str
    e_machine: int
    entry: int
    segments: list
    load_start: int
    load_end: int
    load_size: int
    mb2: object = None  # multiboot2.Multiboot2Header
    mb2_missing: str = None  # why mb2 is None
    relocatable: object = None  # multiboot2.Relocatable
    build_id: str = None
    xen_version: XenVersion = None
    lu: LiveUpdateCaps = None
    lu_image_size: int = None
    elf_bytes: bytes = field(default=b"", repr=False)

    @property
    def format(self):
        return ("gzip+" if self.compressed else "") + "elf%d" % self.elf_class

    def loaded_bytes(self):
        """The memory image [load_start, load_end): file bytes, zeros for bss and gaps."""
        return _memory_window(self.segments, self.load_start, self.load_size)

    def to_json(self):
        r = self.relocatable
        lu = None
        if self.lu is not None:
            lu = {"stream_versions": [self.lu.min_version, self.lu.max_version],
                  "record_types": [record_name(t) for t in self.lu.record_types],
                  "image_size": self.lu_image_size}
        return {
            "path": self.path,
            "format": self.format,
            "compressed": self.compressed,
            "file_size": self.file_size,
            "class": self.elf_class,
            "machine": self.machine,
            "entry": self.entry,
            "load_start": self.load_start,
            "load_end": self.load_end,
            "load_size": self.load_size,
            "alignment": r.align if r else None,
            "relocatable": r.to_dict() if r else None,
            "multiboot2": self.mb2.to_dict() if self.mb2 else None,
            "multiboot2_missing": self.mb2_missing,
            "segments": [s.to_dict() for s in self.segments],
            "build_id": self.build_id,
            "xen_version": str(self.xen_version) if self.xen_version else None,
            "xen_version_source": self.xen_version.source if self.xen_version else None,
            "live_update": lu,
        }


# ---------------------------------------------------------------- bytes in

def _read_file(path, limit=None):
    """A regular file's bytes, at most MAX_FILE_SIZE (limit: its first
    `limit`); -> (bytes, size).  Devices and FIFOs are refused unread:
    /dev/zero never ends and a FIFO may never start."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("%s: cannot read: not a regular file (an image is read from a file)" % path)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = None
            if limit is not None:
                return f.read(limit), st.st_size
            data = f.read(MAX_FILE_SIZE + 1)
            if len(data) > MAX_FILE_SIZE:
                raise ImageError("%s: file is %d MiB, larger than any Xen image (limit %d MiB)"
                                 % (path, max(st.st_size, len(data)) >> 20, MAX_FILE_SIZE >> 20))
            return data, st.st_size
    except OSError as e:
        raise ImageError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    finally:
        if fd is not None:
            os.close(fd)


# Members after the first are fed to zlib this much at a time: what zlib
# hands back after a member ends (unused_data) is then a block at most, not
# the rest of the file, which made a file of many tiny members take
# quadratic time.  The first member gets the whole file in one call, so a
# plain xen.gz decompresses into one buffer and is not copied again.
_GZIP_BLOCK = 64 * 1024


def _gunzip(raw, path, limit):
    """Decompress every gzip member; trailing non-gzip bytes are ignored, as
    gzip(1) and kexec-tools' zlib reader do."""
    out = []
    total = 0
    view = memoryview(raw)
    pos = members = 0
    try:
        while view[pos:pos + 2] == GZIP_MAGIC:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise ImageError("%s: more than %d gzip members; not a Xen image"
                                 % (path, MAX_GZIP_MEMBERS))
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not d.eof:
                if d.unconsumed_tail:
                    block = d.unconsumed_tail
                elif pos < len(view):
                    block = view[pos:] if members == 1 else view[pos:pos + _GZIP_BLOCK]
                    pos += len(block)
                else:
                    raise ImageError("%s: truncated gzip data (stream ends after %d bytes "
                                     "decompressed)" % (path, total))
                chunk = d.decompress(block, limit - total + 1)
                total += len(chunk)
                out.append(chunk)
                if total > limit:
                    raise ImageError("%s: decompresses to more than %d MiB; not a Xen image "
                                     "(gzip bomb?)" % (path, limit >> 20))
            pos -= len(d.unused_data)
    except zlib.error as e:
        raise ImageError("%s: corrupt gzip data: %s" % (path, e)) from None
    return b"".join(out)


def _decompress_prefix(raw, n):
    """The first n decompressed bytes of a gzip file, for probe(); may be short."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, n)
    except zlib.error:
        return b""


def _ident(elf, path):
    """Check what the first bytes say; returns (elf_class, e_machine)."""
    if not elf:
        raise ImageError("%s: empty file" % path)
    if elf[:2] == PE_MAGIC:
        raise ImageError("%s: PE/EFI image (MZ header), not an ELF image; "
                         "use the multiboot2 image (xen.gz)" % path)
    if elf[:4] != ELF_MAGIC:
        raise ImageError("%s: not an ELF image (starts with %s)" % (path, elf[:4].hex(" ")))
    if len(elf) < 20:
        raise ImageError("%s: ELF header truncated (%d bytes)" % (path, len(elf)))
    ei_class, ei_data = elf[4], elf[5]
    if ei_class not in (1, 2):
        raise ImageError("%s: unsupported ELF class %d" % (path, ei_class))
    if ei_data != 1:
        raise ImageError("%s: unsupported ELF data encoding %d (only little-endian x86)"
                         % (path, ei_data))
    e_machine = struct.unpack_from("<H", elf, 18)[0]
    if e_machine not in SUPPORTED_MACHINES:
        raise ImageError("%s: ELF machine %s (%d), not an x86 image (EM_386 or EM_X86_64)"
                         % (path, machine_name(e_machine), e_machine))
    return 32 * ei_class, e_machine


def probe(path):
    """Cheap check that path can be a Xen image; returns its format
    ("gzip+elf32", "elf64", ...) or raises ImageError.  Reads 64 KiB at most."""
    raw, _ = _read_file(path, limit=64 * 1024)
    compressed = raw[:2] == GZIP_MAGIC
    head = _decompress_prefix(raw, 64) if compressed else raw
    if compressed and not head:
        raise ImageError("%s: corrupt gzip data" % path)
    elf_class, _ = _ident(head, path)
    return ("gzip+" if compressed else "") + "elf%d" % elf_class


def load_image(path):
    """Read and check a Xen image file; raises ImageError with one line."""
    raw, size = _read_file(path)
    return parse_image(raw, str(path), file_size=size)


def parse_image(raw, path="<memory>", file_size=None):
    """load_image() for bytes already in memory (path is only for messages)."""
    path = str(path)
    if not raw:
        raise ImageError("%s: empty file" % path)
    compressed = raw[:2] == GZIP_MAGIC
    elf = _gunzip(raw, path, MAX_DECOMPRESSED) if compressed else bytes(raw)
    if compressed and not elf:
        raise ImageError("%s: gzip data decompresses to nothing" % path)
    return _Loader(elf, path).load(compressed, len(raw) if file_size is None else file_size)


# ---------------------------------------------------------------- memory helpers

def _memory_window(segments, start, length):
    out = bytearray(length)
    for s in segments:
        lo = max(s.paddr, start)
        hi = min(s.paddr + s.filesz, start + length)
        if lo < hi:
            out[lo - start:hi - start] = s.data[lo - s.paddr:hi - s.paddr]
    return bytes(out)


def _read_vaddr(segments, vaddr, n):
    """Up to n file-backed bytes at a virtual address, or b"" if unmapped."""
    for s in segments:
        if s.vaddr <= vaddr < s.vaddr + s.filesz:
            off = vaddr - s.vaddr
            return s.data[off:off + n]
    return b""


# Xen's compile-info strings in .rodata (xen/common/version.c): a version
# string, the compiler, the extra version, NUL-separated.  Extra starts with
# "." (".7") or "-" ("-rc"), or is empty.  The linker may pad a string to
# align the next one (Debian's 4.17.5 build has six NULs after the version).
_BANNER = re.compile(
    rb"(?<![^\0])(\d{1,4})\.(\d{1,4})([^\0]{0,64})\0{1,16}"
    rb"([^\0]{0,128}(?:gcc|clang)[^\0]{0,128})\0{1,16}"
    rb"((?:[.\-][^\0]{0,32})?)\0")


# ---------------------------------------------------------------- the loader

class _Loader:
    """One pass over one ELF image; each check raises with the file's name."""

    def __init__(self, elf, path):
        self.elf = elf
        self.path = path

    def fail(self, fmt, *args):
        return ImageError("%s: %s" % (self.path, fmt % args if args else fmt))

    def load(self, compressed, file_size):
        elf = self.elf
        elf_class, e_machine = _ident(elf, self.path)
        ehsize, phentsize_std, shentsize_std = _ELF_SIZES[elf_class]
        if len(elf) < ehsize:
            raise self.fail("ELF header truncated (%d of %d bytes)", len(elf), ehsize)
        try:
            ef = ELFFile(io.BytesIO(elf))
            h = ef.header
            e_entry, phoff, phnum, phentsize = (h["e_entry"], h["e_phoff"], h["e_phnum"],
                                                h["e_phentsize"])
            shoff, shnum, shentsize = h["e_shoff"], h["e_shnum"], h["e_shentsize"]
        except Exception as e:  # pyelftools raises many types on bad input
            raise self.fail("corrupt ELF header: %s", e) from None

        if phnum == 0:
            raise self.fail("no program headers")
        if phentsize != phentsize_std:
            raise self.fail("program header entry size %d, expected %d for ELF%d",
                            phentsize, phentsize_std, elf_class)
        if phoff + phnum * phentsize > len(elf):
            raise self.fail("program headers at 0x%x (%d x %d bytes) run past end of file "
                            "(0x%x bytes)", phoff, phnum, phentsize, len(elf))

        try:
            phdrs = [ef.get_segment(i).header for i in range(phnum)]
        except Exception as e:
            raise self.fail("corrupt program headers: %s", e) from None
        segments, notes = self._segments(phdrs, elf_class)
        # Loading needs no sections, but symbols do, and a section table
        # outside the file means the file is not what its header says.
        if shnum and (shentsize != shentsize_std or shoff + shnum * shentsize > len(elf)):
            raise self.fail("section header table at 0x%x (%d x %d bytes) is outside the "
                            "file (0x%x bytes)", shoff, shnum, shentsize, len(elf))
        load_start = min(s.paddr for s in segments)
        load_end = max(s.paddr + s.memsz for s in segments)
        if load_end - load_start > MAX_LOAD_SIZE:
            raise self.fail("PT_LOAD segments span 0x%x bytes (0x%x-0x%x), more than %d MiB",
                            load_end - load_start, load_start, load_end, MAX_LOAD_SIZE >> 20)
        entry = self._entry(e_entry, segments)

        img = XenImage(path=self.path, compressed=compressed, file_size=file_size,
                       elf_class=elf_class, machine=machine_name(e_machine),
                       e_machine=e_machine, entry=entry, segments=segments,
                       load_start=load_start, load_end=load_end,
                       load_size=load_end - load_start, elf_bytes=elf)
        self._multiboot2(img)
        self._notes(img, notes, segments, load_start)
        if img.xen_version is None:
            img.xen_version = self._version_from_symbols(ef, segments)
        for s in segments:
            if img.xen_version is None:
                img.xen_version = version_from_banner(s.data)
        return img

    def _segments(self, phdrs, elf_class):
        elf = self.elf
        segments, notes = [], []
        for i, p in enumerate(phdrs):
            ptype = p["p_type"]
            if ptype not in ("PT_LOAD", "PT_NOTE", PT_LOAD, PT_NOTE):
                continue
            off, filesz, memsz = p["p_offset"], p["p_filesz"], p["p_memsz"]
            kind = "PT_LOAD" if ptype in ("PT_LOAD", PT_LOAD) else "PT_NOTE"
            if off + filesz > len(elf):
                raise self.fail("segment %d (%s) data at 0x%x+0x%x runs past end of file "
                                "(0x%x bytes)", i, kind, off, filesz, len(elf))
            if kind == "PT_NOTE":
                notes.append(elf[off:off + filesz])
                continue
            if memsz == 0:
                continue  # occupies no memory; nothing to load
            if filesz > memsz:
                raise self.fail("segment %d (PT_LOAD) has filesz 0x%x > memsz 0x%x",
                                i, filesz, memsz)
            if memsz > MAX_LOAD_SIZE:
                raise self.fail("segment %d (PT_LOAD) memsz 0x%x is more than %d MiB",
                                i, memsz, MAX_LOAD_SIZE >> 20)
            paddr, vaddr = p["p_paddr"], p["p_vaddr"]
            if elf_class == 32 and paddr + memsz > 1 << 32:
                raise self.fail("segment %d (PT_LOAD) at paddr 0x%x+0x%x runs past 4 GiB",
                                i, paddr, memsz)
            segments.append(Segment(i, paddr, vaddr, off, filesz, memsz, p["p_flags"],
                                    elf[off:off + filesz]))
        if not segments:
            raise self.fail("no PT_LOAD segment")
        total = sum(s.memsz for s in segments)
        if total > MAX_LOAD_SIZE:
            raise self.fail("PT_LOAD segments total 0x%x bytes, more than %d MiB",
                            total, MAX_LOAD_SIZE >> 20)
        ordered = sorted(segments, key=lambda s: s.paddr)
        for a, b in zip(ordered, ordered[1:]):
            if a.paddr + a.memsz > b.paddr:
                raise self.fail("segments %d and %d overlap at paddr 0x%x",
                                a.index, b.index, b.paddr)
        return segments, notes

    def _entry(self, e_entry, segments):
        # xen.gz links at its physical address; xen-syms has virtual segment
        # addresses but a physical e_entry.  Try the virtual reading first.
        for s in segments:
            if s.vaddr <= e_entry < s.vaddr + s.memsz:
                return s.paddr + (e_entry - s.vaddr)
        for s in segments:
            if s.paddr <= e_entry < s.paddr + s.memsz:
                return e_entry
        raise self.fail("entry point 0x%x is outside every PT_LOAD segment", e_entry)

    def _multiboot2(self, img):
        try:
            img.mb2 = multiboot2.find_header(self.elf)
        except FormatError as e:
            raise self.fail("%s", e) from None
        if img.mb2 is None:
            far = multiboot2.find_magic(self.elf, multiboot2.MB2_SEARCH)
            img.mb2_missing = "no multiboot2 header in the first %d bytes" % multiboot2.MB2_SEARCH
            if far is not None:
                img.mb2_missing += " (magic at file offset 0x%x, too far to be used)" % far
        else:
            img.relocatable = img.mb2.relocatable

    def _notes(self, img, note_blobs, segments, load_start):
        xenlu = {}
        for blob in note_blobs:
            for owner, ntype, desc in xennotes.iter_notes(blob):
                if owner == xennotes.GNU_OWNER and ntype == xennotes.NT_GNU_BUILD_ID:
                    if desc and img.build_id is None:
                        img.build_id = desc.hex()
                elif owner == xennotes.XENLU_OWNER:
                    xenlu.setdefault(ntype, desc)
        window = _memory_window(segments, load_start,
                                min(xennotes.PERSONALITY_WINDOW, img.load_size))
        for ntype, desc in xennotes.find_xenlu_notes(window).items():
            xenlu.setdefault(ntype, desc)
        try:
            if xennotes.XENLU_NOTE_VERSION in xenlu:
                major, minor, extra = xennotes.decode_version(xenlu[xennotes.XENLU_NOTE_VERSION])
                img.xen_version = XenVersion(major, minor, extra, "note")
            if xennotes.XENLU_NOTE_STREAM in xenlu:
                lo, hi, types = xennotes.decode_stream(xenlu[xennotes.XENLU_NOTE_STREAM])
                if lo > hi:
                    raise ValueError("XenLU stream note has min version %d > max %d" % (lo, hi))
                img.lu = LiveUpdateCaps(lo, hi, tuple(types))
            if xennotes.XENLU_NOTE_IMAGE in xenlu:
                img.lu_image_size = xennotes.decode_image(xenlu[xennotes.XENLU_NOTE_IMAGE])
        except ValueError as e:
            raise self.fail("%s", e) from None

    def _version_from_symbols(self, ef, segments):
        try:
            return version_from_symbols(ef, segments)
        except ValueError as e:
            raise self.fail("%s", e) from None


def version_from_symbols(ef, segments):
    """Xen's version from the bodies of xen_{major,minor,extra}_version, or
    None if the symbol table does not name them or the code is not the
    expected mov/lea.  Sections pyelftools cannot read -> ValueError."""
    try:
        symtab = ef.get_section_by_name(".symtab")
    except Exception as e:  # pyelftools raises many types on bad input
        raise ValueError("corrupt section headers: %s" % e) from None
    if symtab is None or not hasattr(symtab, "get_symbol_by_name"):
        return None
    try:
        addrs = {}
        for what in ("major", "minor", "extra"):
            syms = symtab.get_symbol_by_name("xen_%s_version" % what)
            if not syms:
                return None
            addrs[what] = syms[0]["st_value"]
    except Exception as e:  # pyelftools raises many types on bad input
        raise ValueError("corrupt symbol table: %s" % e) from None
    major = _decode_return_u32(_read_vaddr(segments, addrs["major"], 5))
    minor = _decode_return_u32(_read_vaddr(segments, addrs["minor"], 5))
    extra = _decode_return_string(segments, addrs["extra"])
    if major is None or minor is None or extra is None:
        return None
    return XenVersion(major, minor, extra, "symbols")


def _decode_return_u32(code):
    if code[:1] == b"\xb8" and len(code) >= 5:  # mov $imm32, %eax
        return struct.unpack_from("<I", code, 1)[0]
    if code[:2] == b"\x31\xc0":  # xor %eax, %eax
        return 0
    return None


def _decode_return_string(segments, vaddr):
    code = _read_vaddr(segments, vaddr, 7)
    if code[:3] != b"\x48\x8d\x05" or len(code) < 7:  # lea disp32(%rip), %rax
        return None
    target = vaddr + 7 + struct.unpack_from("<i", code, 3)[0]
    s = _read_vaddr(segments, target, 64)
    if b"\0" not in s:
        return None
    try:
        return s.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def version_from_banner(data):
    """Xen's version from the compile-info strings in a stripped image's bytes,
    or None; prefers a version string that agrees with major.minor+extra."""
    first = None
    for m in _BANNER.finditer(data):
        try:
            extra = m.group(5).decode("ascii")
            full = m.group(0).split(b"\0", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            continue
        v = XenVersion(int(m.group(1)), int(m.group(2)), extra, "banner")
        if full.startswith(str(v)):
            return v
        first = first or v
    return first
