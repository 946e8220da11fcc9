"""Multiboot2: the OS image header and the boot information (MBI).

Pure ``struct``: the simulated hypervisor decodes its MBI at boot, and start-up
time is the floor of every live-update blackout, so nothing heavy is imported.

Image header (Multiboot2 spec, section 3.1): 8-byte aligned, entirely within
the first 32768 bytes of the OS image; u32 magic, architecture, header_length,
checksum (the four sum to 0 mod 2**32), then tags {u16 type, u16 flags,
u32 size}, each starting 8-aligned, ended by a type-0 tag.

Boot information (section 3.6): u32 total_size, u32 reserved, then tags
{u32 type, u32 size}, 8-aligned, ended by {0, 8}.
"""
import struct

from .errors import FormatError

MB2_HEADER_MAGIC = 0xE85250D6
MB2_BOOTLOADER_MAGIC = 0x36D76289
MB2_SEARCH = 32768
MB2_HEADER_ALIGN = 8
MB2_TAG_ALIGN = 8

MB2_ARCH_I386 = 0
MB2_ARCH_MIPS32 = 4
ARCH_NAMES = {MB2_ARCH_I386: "i386", MB2_ARCH_MIPS32: "mips32"}

# Header tag flags: bit 0 = the loader may ignore the tag.
MB2_TAG_OPTIONAL = 1

# Header tag types.
MB2_HEADER_TAG_END = 0
MB2_HEADER_TAG_INFORMATION_REQUEST = 1
MB2_HEADER_TAG_ADDRESS = 2
MB2_HEADER_TAG_ENTRY_ADDRESS = 3
MB2_HEADER_TAG_CONSOLE_FLAGS = 4
MB2_HEADER_TAG_FRAMEBUFFER = 5
MB2_HEADER_TAG_MODULE_ALIGN = 6
MB2_HEADER_TAG_EFI_BS = 7
MB2_HEADER_TAG_ENTRY_ADDRESS_EFI32 = 8
MB2_HEADER_TAG_ENTRY_ADDRESS_EFI64 = 9
MB2_HEADER_TAG_RELOCATABLE = 10

# Console flags (tag 4).
MB2_CONSOLE_FLAGS_CONSOLE_REQUIRED = 1
MB2_CONSOLE_FLAGS_EGA_TEXT_SUPPORTED = 2

# Relocatable preference (tag 10).
MB2_LOAD_PREFERENCE_NONE = 0
MB2_LOAD_PREFERENCE_LOW = 1
MB2_LOAD_PREFERENCE_HIGH = 2
PREFERENCE_NAMES = {0: "none", 1: "low", 2: "high"}

# type -> (name, u32 field names); None = variable length (information request).
_HEADER_TAGS = {
    MB2_HEADER_TAG_END: ("end", ()),
    MB2_HEADER_TAG_INFORMATION_REQUEST: ("information_request", None),
    MB2_HEADER_TAG_ADDRESS: ("address", ("header_addr", "load_addr", "load_end_addr",
                                         "bss_end_addr")),
    MB2_HEADER_TAG_ENTRY_ADDRESS: ("entry_address", ("entry_addr",)),
    MB2_HEADER_TAG_CONSOLE_FLAGS: ("console_flags", ("console_flags",)),
    MB2_HEADER_TAG_FRAMEBUFFER: ("framebuffer", ("width", "height", "depth")),
    MB2_HEADER_TAG_MODULE_ALIGN: ("module_align", ()),
    MB2_HEADER_TAG_EFI_BS: ("efi_boot_services", ()),
    MB2_HEADER_TAG_ENTRY_ADDRESS_EFI32: ("entry_address_efi32", ("entry_addr",)),
    MB2_HEADER_TAG_ENTRY_ADDRESS_EFI64: ("entry_address_efi64", ("entry_addr",)),
    MB2_HEADER_TAG_RELOCATABLE: ("relocatable", ("min_addr", "max_addr", "align",
                                                 "preference")),
}

# Boot information tag types (the ones our loaders write).
MBI_TAG_END = 0
MBI_TAG_CMDLINE = 1
MBI_TAG_BOOT_LOADER_NAME = 2
MBI_TAG_BASIC_MEMINFO = 4
MBI_TAG_LOAD_BASE_ADDR = 21

_U32 = 0xFFFFFFFF


def _align(n, a):
    return (n + a - 1) & ~(a - 1)


# Plain classes rather than dataclasses: every hypervisor start (each live
# update execs one) imports this module, and `dataclasses` costs milliseconds.
class _Value:
    """Equality and repr over _FIELDS."""
    __slots__ = ()
    _FIELDS = ()

    def _key(self):
        return tuple(getattr(self, f) for f in self._FIELDS)

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % (f, getattr(self, f)) for f in self._FIELDS))


class Relocatable(_Value):
    __slots__ = _FIELDS = ("min_addr", "max_addr", "align", "preference", "preference_name")

    def __init__(self, min_addr, max_addr, align, preference, preference_name):
        self.min_addr, self.max_addr, self.align = min_addr, max_addr, align
        self.preference, self.preference_name = preference, preference_name

    def to_dict(self):
        return {"min_addr": self.min_addr, "max_addr": self.max_addr, "align": self.align,
                "preference": self.preference, "preference_name": self.preference_name}


class Mb2Tag(_Value):
    """One header tag.  ``fields`` holds the decoded values of a known tag
    (empty for unknown ones); ``raw`` is always the body after the 8-byte
    tag header, so unknown tags survive a decode/encode round trip.
    ``offset`` (where it was found) is not part of its value."""
    __slots__ = ("type", "flags", "size", "name", "fields", "raw", "offset")
    _FIELDS = ("type", "flags", "size", "name", "fields")

    def __init__(self, type, flags, size, name, fields, raw, offset=None):
        self.type, self.flags, self.size, self.name = type, flags, size, name
        self.fields, self.raw, self.offset = fields, raw, offset

    def _key(self):
        return (self.type, self.flags, self.size, self.name, self.fields, self.raw)

    @property
    def optional(self):
        return bool(self.flags & MB2_TAG_OPTIONAL)

    def to_dict(self):
        d = {"type": self.type, "name": self.name, "flags": self.flags, "size": self.size,
             "optional": self.optional, "offset": self.offset}
        if self.name.startswith("unknown"):
            d["raw"] = self.raw.hex()
        else:
            d["fields"] = {k: list(v) if isinstance(v, tuple) else v
                           for k, v in self.fields.items()}
        return d


class Multiboot2Header(_Value):
    __slots__ = _FIELDS = ("offset", "arch", "header_length", "checksum",
                           "tags")  # tags: of Mb2Tag, end tag included

    def __init__(self, offset, arch, header_length, checksum, tags):
        self.offset, self.arch, self.header_length = offset, arch, header_length
        self.checksum, self.tags = checksum, tags

    def tag(self, tag_type):
        """The first tag of a type, or None."""
        for t in self.tags:
            if t.type == tag_type:
                return t
        return None

    @property
    def arch_name(self):
        return ARCH_NAMES.get(self.arch, "unknown(%d)" % self.arch)

    @property
    def relocatable(self):
        t = self.tag(MB2_HEADER_TAG_RELOCATABLE)
        if t is None:
            return None
        f = t.fields
        return Relocatable(f["min_addr"], f["max_addr"], f["align"], f["preference"],
                           PREFERENCE_NAMES[f["preference"]])

    @property
    def tag_types(self):
        """Tag types in order, without the end tag."""
        return [t.type for t in self.tags if t.type != MB2_HEADER_TAG_END]

    def to_dict(self):
        return {"offset": self.offset, "arch": self.arch, "arch_name": self.arch_name,
                "header_length": self.header_length, "checksum": self.checksum,
                "tags": [t.to_dict() for t in self.tags]}


# ---------------------------------------------------------------- header decode

def _malformed(offset, problem):
    return FormatError("multiboot2 header at offset 0x%x: %s" % (offset, problem))


def _decode_fields(tag_type, body, hdr_off, tag_off):
    """Known tag body -> (name, fields); unknown -> ("unknown(N)", {})."""
    spec = _HEADER_TAGS.get(tag_type)
    if spec is None:
        return "unknown(%d)" % tag_type, {}
    name, names = spec
    if names is None:
        if len(body) % 4:
            raise _malformed(hdr_off, "information request tag at 0x%x has a %d-byte body, "
                             "not a multiple of 4" % (tag_off, len(body)))
        return name, {"requests": struct.unpack("<%dI" % (len(body) // 4), body)}
    need = 4 * len(names)
    if len(body) < need:
        raise _malformed(hdr_off, "%s tag at 0x%x is %d bytes, needs %d"
                         % (name, tag_off, 8 + len(body), 8 + need))
    fields = dict(zip(names, struct.unpack_from("<%dI" % len(names), body)))
    problem = _relocatable_problem(fields) if tag_type == MB2_HEADER_TAG_RELOCATABLE else None
    if problem:
        raise _malformed(hdr_off, "relocatable tag at 0x%x has %s" % (tag_off, problem))
    return name, fields


def _relocatable_problem(f):
    """What makes relocatable fields unusable, or None.  Load-window
    arithmetic downstream relies on these."""
    if f["preference"] not in PREFERENCE_NAMES:
        return "unknown preference %d" % f["preference"]
    if f["min_addr"] > f["max_addr"]:
        return "min_addr 0x%x above max_addr 0x%x" % (f["min_addr"], f["max_addr"])
    a = f["align"]
    if a == 0 or a & (a - 1):
        return "align 0x%x, not a power of two" % a
    return None


def _decode_header(buf, off):
    if off + 16 > len(buf):
        raise _malformed(off, "truncated: %d bytes left, the fixed part needs 16"
                         % (len(buf) - off))
    magic, arch, length, checksum = struct.unpack_from("<4I", buf, off)
    total = (magic + arch + length + checksum) & _U32
    if total:
        raise _malformed(off, "bad checksum 0x%08x (fields sum to 0x%08x, not 0)"
                         % (checksum, total))
    if length < 16 + 8:
        raise _malformed(off, "header_length %d is too small for a header with an end tag"
                         % length)
    end = off + length
    if end > len(buf):
        raise _malformed(off, "header_length 0x%x runs past the end of the image (0x%x bytes)"
                         % (length, len(buf)))
    if end > MB2_SEARCH:
        raise _malformed(off, "header_length 0x%x runs past the first %d bytes"
                         % (length, MB2_SEARCH))
    tags = []
    pos = off + 16
    while True:
        if pos + 8 > end:
            raise _malformed(off, "no end tag within header_length 0x%x" % length)
        ttype, tflags, tsize = struct.unpack_from("<HHI", buf, pos)
        if tsize < 8:
            raise _malformed(off, "tag type %d at 0x%x has size %d (< 8)" % (ttype, pos, tsize))
        if pos + tsize > end:
            raise _malformed(off, "tag type %d at 0x%x (size %d) runs past header_length 0x%x"
                             % (ttype, pos, tsize, length))
        body = bytes(buf[pos + 8:pos + tsize])
        name, fields = _decode_fields(ttype, body, off, pos)
        tags.append(Mb2Tag(ttype, tflags, tsize, name, fields, body, pos))
        if ttype == MB2_HEADER_TAG_END:
            break
        pos += _align(tsize, MB2_TAG_ALIGN)
    return Multiboot2Header(off, arch, length, checksum, tuple(tags))


def find_magic(buf, start=0, end=None):
    """Offset of the first 8-aligned header magic in buf[start:end], or None.
    Lets callers explain a header that lies past the search window."""
    needle = struct.pack("<I", MB2_HEADER_MAGIC)
    end = len(buf) if end is None else end
    pos = buf.find(needle, start, end)
    while pos >= 0 and pos % MB2_HEADER_ALIGN:
        pos = buf.find(needle, pos + 1, end)
    return None if pos < 0 else pos


def find_header(buf):
    """The multiboot2 header in the first 32768 bytes of ``buf`` (bytes-like).

    Returns None when there is no magic at an 8-aligned position there; raises
    FormatError when there is one but the header around it is malformed.
    """
    off = find_magic(bytes(buf[:MB2_SEARCH]))
    return None if off is None else _decode_header(buf, off)


# ---------------------------------------------------------------- header encode

def make_tag(tag_type, flags=0, raw=None, **fields):
    """An Mb2Tag ready for build_header.  Known types take their fields by
    name (information_request takes ``requests``); unknown types take ``raw``."""
    try:
        return _make_tag(tag_type, flags, raw, fields)
    except struct.error:
        raise ValueError("multiboot2 tag type %d: a field does not fit in 32 bits"
                         % tag_type) from None


def _make_tag(tag_type, flags, raw, fields):
    spec = _HEADER_TAGS.get(tag_type)
    if not 0 <= tag_type <= 0xFFFF or not 0 <= flags <= 0xFFFF:
        raise ValueError("multiboot2 tag type and flags are u16")
    if spec is None:
        if fields:
            raise ValueError("unknown multiboot2 tag type %d takes raw bytes only" % tag_type)
        body = bytes(raw or b"")
        name, fields = "unknown(%d)" % tag_type, {}
    else:
        if raw is not None:
            raise ValueError("multiboot2 %s tag takes fields, not raw bytes" % spec[0])
        name, names = spec
        if names is None:
            requests = tuple(fields.pop("requests", ()))
            if fields:
                raise ValueError("multiboot2 %s tag takes field requests only" % name)
            names, values = ("requests",), [requests]
            body = struct.pack("<%dI" % len(requests), *requests)
        else:
            values = [fields.pop(n) for n in names if n in fields]
            if len(values) != len(names) or fields:
                raise ValueError("multiboot2 %s tag takes fields %s" % (name, ", ".join(names)))
            body = struct.pack("<%dI" % len(names), *values)
        fields = dict(zip(names, values))
        problem = _relocatable_problem(fields) if tag_type == MB2_HEADER_TAG_RELOCATABLE else None
        if problem:
            raise ValueError("multiboot2 relocatable tag: " + problem)
    return Mb2Tag(tag_type, flags, 8 + len(body), name, fields, body)


def relocatable_tag(min_addr, max_addr, align, preference, flags=MB2_TAG_OPTIONAL):
    return make_tag(MB2_HEADER_TAG_RELOCATABLE, flags, min_addr=min_addr, max_addr=max_addr,
                    align=align, preference=preference)


def console_flags_tag(console_flags=MB2_CONSOLE_FLAGS_EGA_TEXT_SUPPORTED,
                      flags=MB2_TAG_OPTIONAL):
    return make_tag(MB2_HEADER_TAG_CONSOLE_FLAGS, flags, console_flags=console_flags)


def build_header(*tags, arch=MB2_ARCH_I386):
    """Encode a header from Mb2Tags; the end tag is appended unless given last."""
    tags = list(tags)
    if not tags or tags[-1].type != MB2_HEADER_TAG_END:
        tags.append(make_tag(MB2_HEADER_TAG_END))
    body = b""
    for t in tags:
        enc = struct.pack("<HHI", t.type, t.flags, 8 + len(t.raw)) + t.raw
        body += enc.ljust(_align(len(enc), MB2_TAG_ALIGN), b"\0")
    length = 16 + len(body)
    checksum = -(MB2_HEADER_MAGIC + arch + length) & _U32
    return struct.pack("<4I", MB2_HEADER_MAGIC, arch, length, checksum) + body


# ---------------------------------------------------------------- boot information

def _mbi_tag(tag_type, body):
    enc = struct.pack("<II", tag_type, 8 + len(body)) + body
    return enc.ljust(_align(len(enc), MB2_TAG_ALIGN), b"\0")


def _mbi_string(what, s):
    b = s.encode("utf-8")
    if b"\0" in b:
        raise ValueError("%s contains a NUL character" % what)
    return b + b"\0"


def encode_mbi(cmdline, loader_name, load_base_addr, mem_lower_kib, mem_upper_kib):
    """The boot information a loader hands to a multiboot2 image (in %ebx)."""
    for what, v in (("load_base_addr", load_base_addr), ("mem_lower", mem_lower_kib),
                    ("mem_upper", mem_upper_kib)):
        if not 0 <= v <= _U32:
            raise ValueError("%s %#x does not fit in 32 bits" % (what, v))
    tags = (_mbi_tag(MBI_TAG_CMDLINE, _mbi_string("command line", cmdline))
            + _mbi_tag(MBI_TAG_BOOT_LOADER_NAME, _mbi_string("boot loader name", loader_name))
            + _mbi_tag(MBI_TAG_BASIC_MEMINFO, struct.pack("<II", mem_lower_kib, mem_upper_kib))
            + _mbi_tag(MBI_TAG_LOAD_BASE_ADDR, struct.pack("<I", load_base_addr))
            + _mbi_tag(MBI_TAG_END, b""))
    return struct.pack("<II", 8 + len(tags), 0) + tags


def _mbi_error(problem):
    return FormatError("multiboot2 boot information: " + problem)


def _mbi_str(body, pos, what):
    if b"\0" not in body:
        raise _mbi_error("%s tag at 0x%x is not NUL-terminated" % (what, pos))
    try:
        return body.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _mbi_error("%s tag at 0x%x is not valid UTF-8" % (what, pos)) from None


def decode_mbi(buf):
    """The fields encode_mbi writes; unknown tags are skipped, absent ones None."""
    buf = bytes(buf)
    if len(buf) < 16:
        raise _mbi_error("%d bytes, need at least 16" % len(buf))
    total, _reserved = struct.unpack_from("<II", buf)
    if total < 16 or total > len(buf):
        raise _mbi_error("total_size %d outside [16, %d]" % (total, len(buf)))
    out = dict(cmdline=None, loader_name=None, load_base_addr=None,
               mem_lower=None, mem_upper=None)
    seen = set()
    pos = 8
    while True:
        if pos + 8 > total:
            raise _mbi_error("no end tag within total_size %d" % total)
        ttype, tsize = struct.unpack_from("<II", buf, pos)
        if tsize < 8 or pos + tsize > total:
            raise _mbi_error("tag type %d at 0x%x has size %d, outside the %d-byte buffer"
                             % (ttype, pos, tsize, total))
        if ttype == MBI_TAG_END:
            return out
        if ttype in seen:
            raise _mbi_error("duplicate tag type %d at 0x%x" % (ttype, pos))
        seen.add(ttype)
        body = buf[pos + 8:pos + tsize]
        if ttype == MBI_TAG_CMDLINE:
            out["cmdline"] = _mbi_str(body, pos, "command line")
        elif ttype == MBI_TAG_BOOT_LOADER_NAME:
            out["loader_name"] = _mbi_str(body, pos, "boot loader name")
        elif ttype == MBI_TAG_BASIC_MEMINFO:
            if len(body) < 8:
                raise _mbi_error("basic meminfo tag at 0x%x is %d bytes, needs 16" % (pos, tsize))
            out["mem_lower"], out["mem_upper"] = struct.unpack_from("<II", body)
        elif ttype == MBI_TAG_LOAD_BASE_ADDR:
            if len(body) < 4:
                raise _mbi_error("load base addr tag at 0x%x is %d bytes, needs 12" % (pos, tsize))
            out["load_base_addr"] = struct.unpack_from("<I", body)[0]
        pos += _align(tsize, MB2_TAG_ALIGN)
