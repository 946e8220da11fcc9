"""Fuzzing kexec_lu.image: inputs close to valid Xen images, and hostile ones.

The property, for every input: parse_image() returns an image that is
self-consistent, or raises ImageError whose message is one non-empty line
naming the file; never another exception, within a deadline and bounded
memory.  Inputs: gzip of random bytes and broken gzip framing, the real
xen.gz / xen-syms truncated and bit-flipped, mkimage images mutated,
synthetic ELF32/ELF64 files (program headers, section headers, symbols,
notes, multiboot2 header) with random fields, multiboot2 headers with random
tags, gzip bombs.  A CLI check runs `kexec-lu info` on hostile files.

KEXEC_LU_FUZZ_SCALE=N multiplies every example count (a longer run);
`make fuzz` runs the coverage-guided fuzzer in fuzz/ instead.
"""
import gzip
import json
import os
import resource
import struct
import subprocess
import sys
import tracemalloc
import types
import zlib
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import CliResult, installed_command, one_line_error
from hyperv_sim.mkimage import build_image
from kexec_lu import image as imagemod
from xen_public import multiboot2, xennotes
from xen_public.errors import FormatError
from kexec_lu.errors import ImageError
from kexec_lu.image import parse_image

KiB, MiB = 1024, 1 << 20
SCALE = max(1, int(os.environ.get("KEXEC_LU_FUZZ_SCALE", "1")))


def fuzz(examples):
    """Settings: no wall-clock deadline (check() bounds the work instead),
    no health checks about slow or large data generation."""
    return settings(max_examples=examples * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example],
                    print_blob=True)


# ---------------------------------------------------------------- the property

# Memory a parse may use beyond a few copies of its input (pyelftools, the
# 32 KiB personality window, the interpreter's own noise).
MEM_BASE = 32 * MiB
MEM_PER_INPUT_BYTE = 6

# Work a parse may do, counted in Python calls and returns (a profile hook
# sees each), not in seconds: a hang or a blow-up in the parser or in
# pyelftools runs past it on any machine, however loaded.  Debian's xen-syms
# (24 MB, 190,000 symbols) takes about 2.5 million.
WORK_BASE = 3_000_000
WORK_PER_INPUT_BYTE = 1


class WorkBudgetExceeded(Exception):
    pass


def parse_within_budget(data, path, budget):
    """parse_image(data, path), failing once it has made `budget` calls."""
    events = [0]

    def count(frame, event, arg):
        events[0] += 1
        if events[0] > budget:
            sys.setprofile(None)
            raise WorkBudgetExceeded("parse of %d bytes made more than %d calls"
                                     % (len(data), budget))
    sys.setprofile(count)
    try:
        return parse_image(data, path)
    finally:
        sys.setprofile(None)


def one_line_message(e, path):
    """An ImageError's message: one non-empty line naming the file."""
    msg = str(e)
    assert msg.startswith(path + ": "), repr(msg)
    assert msg[len(path) + 2:].strip(), "empty message: %r" % msg
    assert "\n" not in msg and "\r" not in msg, repr(msg)
    return msg


def accepted(img):
    """What must hold of any image parse_image() returns."""
    assert img.segments and img.load_size == img.load_end - img.load_start
    assert 0 < img.load_size <= imagemod.MAX_LOAD_SIZE
    assert img.load_start <= img.entry < img.load_end
    for s in img.segments:
        assert len(s.data) == s.filesz <= s.memsz
        assert img.load_start <= s.paddr and s.paddr + s.memsz <= img.load_end
    if img.load_size <= 16 * MiB:
        assert len(img.loaded_bytes()) == img.load_size
    json.dumps(img.to_json())


def check(data, path="fuzzed", decompressed_size=None):
    """Parse data; returns the image or None (rejected with one line).
    Memory is traced: peak bounded by a constant plus a few copies of the
    input (decompressed_size for gzip inputs whose size the test knows)."""
    size = max(len(data), decompressed_size or 0)
    tracemalloc.start()
    try:
        img = parse_within_budget(data, path, WORK_BASE + WORK_PER_INPUT_BYTE * size)
    except ImageError as e:
        one_line_message(e, path)
        img = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= MEM_BASE + MEM_PER_INPUT_BYTE * size, \
        "parse of %d bytes peaked at %d MiB" % (size, peak >> 20)
    if img is not None:
        accepted(img)
    return img


# ---------------------------------------------------------------- mutations

EDGE_INTS = (0, 1, 2, 3, 7, 8, 0x10, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x7FFF, 0x8000,
             0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1,
             1 << 63, (1 << 64) - 1)


def interesting(bits, valid=0, related=()):
    """A field value: an edge value, one near the valid one, a value found
    elsewhere in the structure, or anything."""
    top = (1 << bits) - 1
    near = st.integers(-0x1100, 0x1100).map(lambda d: (valid + d) & top)
    parts = [st.sampled_from(sorted({v & top for v in EDGE_INTS})), near,
             st.integers(0, top)]
    if related:
        parts.append(st.sampled_from(sorted({v & top for v in related})))
    return st.one_of(*parts)


WIDTHS = {"B": 8, "H": 16, "I": 32, "Q": 64}


@st.composite
def mutated(draw, data, regions=()):
    """data with a few writes: XOR of one byte, or an interesting 1/2/4/8-byte
    value, at offsets anywhere or inside one of the named regions
    [(start, end)]; then maybe truncated or given trailing garbage."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        where = st.integers(0, len(buf) - 1)
        if regions:
            r = draw(st.sampled_from(list(regions)))
            lo, hi = max(0, min(r[0], len(buf) - 1)), max(0, min(r[1], len(buf)) - 1)
            where = st.one_of(st.integers(lo, max(lo, hi)), where)
        pos = draw(where)
        kind = draw(st.sampled_from("xBHIQ"))
        if kind == "x":
            buf[pos] ^= draw(st.integers(1, 255))
        else:
            width = WIDTHS[kind] // 8
            pos = min(pos, len(buf) - width)
            if pos < 0:
                continue
            valid = int.from_bytes(buf[pos:pos + width], "little")
            value = draw(interesting(WIDTHS[kind], valid, (len(data),)))
            buf[pos:pos + width] = value.to_bytes(width, "little")
    end = draw(st.sampled_from(["keep", "keep", "cut", "garbage"]))
    if end == "cut":
        del buf[draw(st.integers(0, len(buf))):]
    elif end == "garbage":
        buf += draw(st.binary(min_size=1, max_size=64))
    return bytes(buf)


def elf_regions(elf):
    """Byte ranges worth mutating in an ELF: headers, program and section
    header tables, the first 32 KiB (multiboot2 header, notes)."""
    cls = 64 if elf[4:5] == b"\x02" else 32
    if cls == 32:
        phoff, shoff = struct.unpack_from("<II", elf, 28)
        phnum, shnum = struct.unpack_from("<H", elf, 44)[0], struct.unpack_from("<H", elf, 48)[0]
        phsz, shsz, ehsz = 32, 40, 52
    else:
        phoff, shoff = struct.unpack_from("<QQ", elf, 32)
        phnum, shnum = struct.unpack_from("<H", elf, 56)[0], struct.unpack_from("<H", elf, 60)[0]
        phsz, shsz, ehsz = 56, 64, 64
    regions = [(0, ehsz), (phoff, phoff + phnum * phsz), (0, 0x400), (0, 32 * KiB)]
    if shnum:
        regions.append((shoff, shoff + shnum * shsz))
    return regions


# ---------------------------------------------------------------- gzip framing

@fuzz(300)
@given(st.binary(max_size=4096), st.sampled_from(["plain", "elf", "members", "trailing"]))
def test_gzip_of_random_bytes(payload, shape):
    if shape == "elf":
        payload = b"\x7fELF" + payload
    data = gzip.compress(payload, mtime=0)
    if shape == "members":
        data = data + gzip.compress(payload[::-1], mtime=0)
    elif shape == "trailing":
        data = data + payload[:64]
    check(data, decompressed_size=2 * len(payload))


@fuzz(300)
@given(st.binary(max_size=512), st.data())
def test_broken_gzip_framing(payload, data):
    """Valid members with header flags, lengths, CRC, size or deflate bytes
    changed, cut anywhere; and gzip magic followed by anything."""
    member = bytearray(gzip.compress(payload, mtime=0))
    how = data.draw(st.sampled_from(["magic+random", "mutate", "cut", "empty members"]))
    if how == "magic+random":
        out = imagemod.GZIP_MAGIC + data.draw(st.binary(max_size=512))
    elif how == "mutate":
        out = data.draw(mutated(bytes(member), regions=[(0, 10), (len(member) - 8,
                                                                 len(member))]))
    elif how == "cut":
        out = bytes(member[:data.draw(st.integers(0, len(member)))])
    else:
        out = gzip.compress(b"", mtime=0) * data.draw(st.integers(1, 64)) + bytes(member)
    check(out, decompressed_size=len(payload))


@fuzz(100)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=12), st.integers(-2, 2))
def test_decompressed_size_limit_is_exact(split, delta):
    """With the limit at 16 KiB: members whose total is over the limit are
    refused as a bomb, at or under it they are decompressed (and found
    not to be ELF)."""
    limit = 16 * KiB
    total = limit + delta
    sizes, left = [], total
    for n in split:
        sizes.append(min(n, left))
        left -= sizes[-1]
    sizes.append(left)
    data = b"".join(gzip.compress(b"A" * n, mtime=0) for n in sizes)
    with mock.patch.object(imagemod, "MAX_DECOMPRESSED", limit):
        with pytest.raises(ImageError) as e:
            parse_image(data, "bomb")
    msg = one_line_message(e.value, "bomb")
    if total > limit:
        assert "decompresses to more than 0 MiB" in msg and "gzip bomb" in msg, msg
    else:
        assert "not an ELF image" in msg, msg


def zeros_member(n):
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(c.compress(bytes(MiB)) for _ in range(n // MiB)) + c.flush()


@pytest.fixture(scope="module")
def bombs():
    """Small files that decompress past MAX_DECOMPRESSED (256 MiB): one
    member, many members, and a file of more members than allowed."""
    over = imagemod.MAX_DECOMPRESSED + MiB
    one_mib = zeros_member(MiB)
    return {
        "one member": zeros_member(over),
        "many members": one_mib * (over // MiB),
        "empty members": gzip.compress(b"", mtime=0) * (imagemod.MAX_GZIP_MEMBERS + 1),
    }


class CountingZlib:
    """zlib as kexec_lu.image uses it, counting the work: decompressors
    made, bytes handed to them (zlib copies what is left of its input once
    a member ends) and bytes they produced."""
    error = zlib.error
    MAX_WBITS = zlib.MAX_WBITS

    def __init__(self):
        self.decompressors = self.bytes_in = self.bytes_out = 0

    def decompressobj(self, wbits):
        self.decompressors += 1
        return _CountingDecompressor(zlib.decompressobj(wbits), self)


class _CountingDecompressor:
    def __init__(self, inner, counts):
        self._inner, self._counts = inner, counts

    def decompress(self, data, max_length=0):
        out = self._inner.decompress(data, max_length)
        self._counts.bytes_in += len(data)
        self._counts.bytes_out += len(out)
        return out

    def __getattr__(self, name):            # eof, unconsumed_tail, unused_data
        return getattr(self._inner, name)


@pytest.fixture
def zlib_counts(monkeypatch):
    counts = CountingZlib()
    monkeypatch.setattr(imagemod, "zlib", counts)
    return counts


@pytest.mark.parametrize("kind", ["one member", "many members", "empty members"])
def test_gzip_bombs_are_refused_after_bounded_work(bombs, kind, zlib_counts):
    data = bombs[kind]
    assert len(data) < 2 * MiB
    with pytest.raises(ImageError) as e:
        parse_image(data, "bomb.gz")
    msg = one_line_message(e.value, "bomb.gz")
    # Decompression stops one byte past the limit, and at the member limit.
    assert zlib_counts.bytes_out <= imagemod.MAX_DECOMPRESSED + 1
    assert zlib_counts.decompressors <= imagemod.MAX_GZIP_MEMBERS + 1
    if kind == "empty members":
        assert "more than 65536 gzip members" in msg, msg
    else:
        assert "decompresses to more than 256 MiB" in msg and "gzip bomb" in msg, msg


def test_many_gzip_members_take_linear_work(zlib_counts):
    """Regression: each member used to be handed the rest of the file (which
    zlib then copies), quadratic in the number of members: 14.6 MB of them
    took 27 s.  Twice the members must cost twice the bytes, not four times."""
    member = gzip.compress(bytes(range(200)), mtime=0)
    work = []
    for n in (imagemod.MAX_GZIP_MEMBERS // 4, imagemod.MAX_GZIP_MEMBERS // 2):
        zlib_counts.bytes_in = 0
        with pytest.raises(ImageError, match="not an ELF image"):
            parse_image(member * n, "members.gz")
        work.append(zlib_counts.bytes_in)
    assert work[1] <= 2.2 * work[0], work


def test_members_after_the_first_still_decompress():
    """The block-wise reading of later members keeps gzip(1)'s semantics."""
    elf = build_image(gzip=False, text_size=64 * KiB, mem_size=128 * KiB)
    cuts = [0, 1, 100, 70 * KiB, len(elf)]
    members = b"".join(gzip.compress(elf[a:b], mtime=0) for a, b in zip(cuts, cuts[1:]))
    img = parse_image(members + b"trailing junk", "m")
    assert img.elf_bytes == elf


# ---------------------------------------------------------------- real images

@fuzz(30)
@given(st.data())
def test_real_xen_gz_truncated_or_flipped(real_xen, data):
    gz = real_xen["xen.gz"]
    out = data.draw(mutated(gz, regions=[(0, 64), (len(gz) - 16, len(gz))]))
    check(out, decompressed_size=len(real_xen["xen"]))


@fuzz(60)
@given(st.data(), st.booleans())
def test_real_xen_elf_mutated(real_xen, data, compress):
    elf = real_xen["xen"]
    out = data.draw(mutated(elf, regions=elf_regions(elf)))
    if compress:
        out = gzip.compress(out, compresslevel=1, mtime=0)
    check(out, decompressed_size=len(out) if not compress else len(elf) + 64)


@fuzz(20)
@given(st.data())
def test_real_xen_syms_mutated(real_xen, data):
    syms = real_xen["xen-syms"]
    shoff = struct.unpack_from("<Q", syms, 40)[0]
    symtab = [(o, o + 4096) for o in range(shoff // 2, shoff, shoff // 8)]
    check(data.draw(mutated(syms, regions=elf_regions(syms) + symtab)))


# ---------------------------------------------------------------- mkimage images

MKIMAGES = {
    (cls, gz, pers): build_image(xen_version="4.19.2", elf_class=cls, gzip=gz, personality=pers,
                                 text_size=64 * KiB, mem_size=192 * KiB)
    for cls in (32, 64) for gz in (False, True) for pers in (False, True)
}


@fuzz(400)
@given(st.sampled_from(sorted(MKIMAGES)), st.data())
def test_mkimage_images_mutated(key, data):
    cls, gz, pers = key
    img = MKIMAGES[key]
    elf = gzip.decompress(img) if gz else img
    out = data.draw(mutated(elf, regions=elf_regions(elf)))
    if gz:
        out = gzip.compress(out, mtime=0)
    check(out, decompressed_size=len(elf) + 64)


# ---------------------------------------------------------------- synthetic ELF

EHDR = {
    32: [("e_type", "H"), ("e_machine", "H"), ("e_version", "I"), ("e_entry", "I"),
         ("e_phoff", "I"), ("e_shoff", "I"), ("e_flags", "I"), ("e_ehsize", "H"),
         ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"), ("e_shnum", "H"),
         ("e_shstrndx", "H")],
    64: [("e_type", "H"), ("e_machine", "H"), ("e_version", "I"), ("e_entry", "Q"),
         ("e_phoff", "Q"), ("e_shoff", "Q"), ("e_flags", "I"), ("e_ehsize", "H"),
         ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"), ("e_shnum", "H"),
         ("e_shstrndx", "H")],
}
PHDR = {
    32: [("p_type", "I"), ("p_offset", "I"), ("p_vaddr", "I"), ("p_paddr", "I"),
         ("p_filesz", "I"), ("p_memsz", "I"), ("p_flags", "I"), ("p_align", "I")],
    64: [("p_type", "I"), ("p_flags", "I"), ("p_offset", "Q"), ("p_vaddr", "Q"),
         ("p_paddr", "Q"), ("p_filesz", "Q"), ("p_memsz", "Q"), ("p_align", "Q")],
}
SHDR = {
    32: [("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "I"), ("sh_addr", "I"),
         ("sh_offset", "I"), ("sh_size", "I"), ("sh_link", "I"), ("sh_info", "I"),
         ("sh_addralign", "I"), ("sh_entsize", "I")],
    64: [("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "Q"), ("sh_addr", "Q"),
         ("sh_offset", "Q"), ("sh_size", "Q"), ("sh_link", "I"), ("sh_info", "I"),
         ("sh_addralign", "Q"), ("sh_entsize", "Q")],
}
SYM = {
    32: [("st_name", "I"), ("st_value", "I"), ("st_size", "I"), ("st_info", "B"),
         ("st_other", "B"), ("st_shndx", "H")],
    64: [("st_name", "I"), ("st_info", "B"), ("st_other", "B"), ("st_shndx", "H"),
         ("st_value", "Q"), ("st_size", "Q")],
}
NOTE = [("n_namesz", "I"), ("n_descsz", "I"), ("n_type", "I")]
MB2 = [("mb2_magic", "I"), ("mb2_arch", "I"), ("mb2_header_length", "I"), ("mb2_checksum", "I")]
MB2_TAG = [("tag_type", "H"), ("tag_flags", "H"), ("tag_size", "I")]

LINK = 0x200000
XEN_VIRT_BASE = 0xFFFF82D040000000


def size_of(spec):
    return struct.calcsize("<" + "".join(f for _, f in spec))


class Layout:
    """A file being built, and every header field in it: (name, offset,
    format, valid value), so a test can change any of them."""

    def __init__(self):
        self.buf = bytearray()
        self.fields = []

    def at(self, off, spec, prefix, **values):
        if len(self.buf) < off + size_of(spec):
            self.buf.extend(bytes(off + size_of(spec) - len(self.buf)))
        for name, fmt in spec:
            v = values.get(name, 0)
            struct.pack_into("<" + fmt, self.buf, off, v)
            self.fields.append((prefix + name, off, fmt, v))
            off += struct.calcsize(fmt)

    def put(self, off, data):
        if len(self.buf) < off + len(data):
            self.buf.extend(bytes(off + len(data) - len(self.buf)))
        self.buf[off:off + len(data)] = data


def encode_notes(layout, off, notes):
    """notes: [(owner bytes, type, desc)] at off; fields recorded."""
    start = off
    for i, (owner, ntype, desc) in enumerate(notes):
        name = owner + b"\0"
        layout.at(off, NOTE, "note%d." % i, n_namesz=len(name), n_descsz=len(desc), n_type=ntype)
        off += 12
        layout.put(off, name.ljust(-(-len(name) // 4) * 4, b"\0"))
        off += -(-len(name) // 4) * 4
        layout.put(off, desc.ljust(-(-len(desc) // 4) * 4, b"\0"))
        off += -(-len(desc) // 4) * 4
    return off - start


def synthetic_elf(cls, text_len=0x2000, bss=0x3000, second_load=True, mb2=None, mb2_at=0x18,
                  notes=None, symtab=True):
    """A small Xen-like ELF: a text PT_LOAD holding an entry stub, the
    multiboot2 header, notes, xen_{major,minor,extra}_version and a compile
    banner; maybe a second PT_LOAD; a PT_NOTE over the notes; sections
    .text, .symtab, .strtab, .shstrtab.  Returns the Layout."""
    L = Layout()
    ehsz, phsz, shsz = {32: (52, 32, 40), 64: (64, 56, 64)}[cls]
    sym_sz = size_of(SYM[cls])
    vbase = XEN_VIRT_BASE if cls == 64 else 0
    text_off = 0x100
    if notes is None:
        notes = [(b"GNU", xennotes.NT_GNU_BUILD_ID, bytes(range(20))),
                 (b"XenLU", xennotes.XENLU_NOTE_VERSION, xennotes.encode_version(4, 19, ".1")),
                 (b"XenLU", xennotes.XENLU_NOTE_IMAGE, xennotes.encode_image(text_len + bss))]
    if mb2 is None:
        mb2 = multiboot2.build_header(multiboot2.console_flags_tag(),
                                      multiboot2.relocatable_tag(0x200000, 0xFFFFFFFF, 0x200000, 2))
    # Text: stub, multiboot2 header, notes, functions, banner.
    L.put(text_off, (b"\xe9" + struct.pack("<i", 0x600 - 5)).ljust(0x18, b"\x90"))
    L.put(text_off + mb2_at, mb2)
    notes_at = 0x400
    notes_len = encode_notes(L, text_off + notes_at, notes)
    funcs = (notes_at + max(notes_len, 0x100) + 8) & ~7
    func_at = [funcs + 0x10 * i for i in range(3)]  # major, minor, extra
    extra_str = funcs + 0x40
    L.put(text_off + func_at[0], b"\xb8" + struct.pack("<I", 4) + b"\xc3")  # mov $4, %eax
    L.put(text_off + func_at[1], b"\xb8" + struct.pack("<I", 19) + b"\xc3")
    L.put(text_off + func_at[2], b"\x48\x8d\x05"  # lea extra_str(%rip), %rax
          + struct.pack("<i", extra_str - (func_at[2] + 7)) + b"\xc3")
    L.put(text_off + extra_str, b".1\0")
    L.put(text_off + extra_str + 8, b"\x004.19.1\0gcc (fuzz) 12.2.0\0.1\0")
    L.put(text_off + text_len - 1, b"\0")
    # Second PT_LOAD: data after text, page-aligned physical address.
    data_off = text_off + text_len
    data_len = 0x100 if second_load else 0
    if second_load:
        L.put(data_off, bytes(range(256)))
    data_paddr = (LINK + text_len + bss + 0xFFF) & ~0xFFF
    # Sections.
    shstr = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    strtab = b"\0xen_major_version\0xen_minor_version\0xen_extra_version\0"
    strtab_off = (data_off + data_len + 7) & ~7
    L.put(strtab_off, strtab)
    symtab_off = (strtab_off + len(strtab) + 7) & ~7
    names = [1, 19, 37]
    if symtab:
        for i in range(4):
            if i == 0:
                L.at(symtab_off, SYM[cls], "sym0.")
                continue
            L.at(symtab_off + i * sym_sz, SYM[cls], "sym%d." % i, st_name=names[i - 1],
                 st_value=vbase + LINK + func_at[i - 1],
                 st_size=8, st_info=0x12, st_shndx=1)
    shstr_off = symtab_off + 4 * sym_sz
    L.put(shstr_off, shstr)
    shoff = (shstr_off + len(shstr) + 7) & ~7
    sections = [
        {},
        dict(sh_name=1, sh_type=1, sh_flags=7, sh_addr=vbase + LINK, sh_offset=text_off,
             sh_size=text_len, sh_addralign=64),
        dict(sh_name=7, sh_type=2, sh_offset=symtab_off, sh_size=4 * sym_sz, sh_link=3,
             sh_info=1, sh_addralign=8, sh_entsize=sym_sz),
        dict(sh_name=15, sh_type=3, sh_offset=strtab_off, sh_size=len(strtab), sh_addralign=1),
        dict(sh_name=23, sh_type=3, sh_offset=shstr_off, sh_size=len(shstr), sh_addralign=1),
    ]
    if symtab:
        for i, s in enumerate(sections):
            L.at(shoff + i * shsz, SHDR[cls], "sh%d." % i, **s)
    # Program headers.
    phdrs = [dict(p_type=1, p_offset=text_off, p_vaddr=vbase + LINK, p_paddr=LINK,
                  p_filesz=text_len, p_memsz=text_len + bss, p_flags=7, p_align=0x40)]
    if second_load:
        phdrs.append(dict(p_type=1, p_offset=data_off, p_vaddr=vbase + data_paddr,
                          p_paddr=data_paddr, p_filesz=data_len, p_memsz=0x1000, p_flags=6,
                          p_align=0x1000))
    phdrs.append(dict(p_type=4, p_offset=text_off + notes_at, p_vaddr=vbase + LINK + notes_at,
                      p_paddr=LINK + notes_at, p_filesz=notes_len, p_memsz=notes_len,
                      p_flags=4, p_align=4))
    for i, p in enumerate(phdrs):
        L.at(ehsz + i * phsz, PHDR[cls], "ph%d." % i, **p)
    ident = b"\x7fELF" + bytes([cls // 32, 1, 1, 0]) + bytes(8)
    L.put(0, ident)
    for name, off in (("EI_CLASS", 4), ("EI_DATA", 5), ("EI_VERSION", 6)):
        L.fields.append((name, off, "B", ident[off]))
    L.at(16, EHDR[cls], "", e_type=2, e_machine=3 if cls == 32 else 62, e_version=1,
         e_entry=vbase + LINK, e_phoff=ehsz, e_shoff=shoff if symtab else 0, e_ehsize=ehsz,
         e_phentsize=phsz, e_phnum=len(phdrs), e_shentsize=shsz,
         e_shnum=len(sections) if symtab else 0, e_shstrndx=4 if symtab else 0)
    return L


def parse_synthetic(cls, **kw):
    return parse_image(bytes(synthetic_elf(cls, **kw).buf), "synthetic")


@pytest.mark.parametrize("cls", [32, 64])
def test_synthetic_elf_is_a_valid_image(cls):
    """The base the field fuzzing starts from parses, with every part found."""
    img = parse_synthetic(cls)
    assert img.entry == LINK and len(img.segments) == 2
    assert img.mb2.offset == 0x118 and img.relocatable.align == 0x200000
    assert img.build_id == bytes(range(20)).hex()
    assert str(img.xen_version) == "4.19.1" and img.xen_version.source == "note"
    assert img.lu_image_size == 0x5000
    no_notes = parse_synthetic(cls, notes=[])
    assert str(no_notes.xen_version) == "4.19.1" and no_notes.xen_version.source == "symbols"
    stripped = parse_synthetic(cls, notes=[], symtab=False)
    assert str(stripped.xen_version) == "4.19.1" and stripped.xen_version.source == "banner"


@st.composite
def field_writes(draw, layout, max_writes=6):
    """New values for a few of the layout's fields."""
    fields = layout.fields
    values = [v for _, _, _, v in fields]
    related = values + [len(layout.buf), len(layout.buf) - 1, len(layout.buf) + 1]
    out = []
    for _ in range(draw(st.integers(1, max_writes))):
        name, off, fmt, valid = draw(st.sampled_from(fields))
        out.append((name, off, fmt, draw(interesting(WIDTHS[fmt], valid, related))))
    return out


def apply(layout, writes):
    buf = bytearray(layout.buf)
    for _, off, fmt, value in writes:
        struct.pack_into("<" + fmt, buf, off, value)
    return bytes(buf)


SYNTH = {(cls, second, symtab): synthetic_elf(cls, second_load=second, symtab=symtab)
         for cls in (32, 64) for second in (False, True) for symtab in (False, True)}


@fuzz(1000)
@given(st.sampled_from(sorted(SYNTH)), st.data())
def test_synthetic_elf_fields(key, data):
    """ELF32/ELF64 with random header fields: program headers out of bounds,
    huge or overlapping, e_phnum huge, section and symbol tables broken."""
    layout = SYNTH[key]
    writes = data.draw(field_writes(layout))
    out = apply(layout, writes)
    how = data.draw(st.sampled_from(["raw", "raw", "cut", "gzip"]))
    if how == "cut":
        out = out[:data.draw(st.integers(0, len(out)))]
    elif how == "gzip":
        out = gzip.compress(out, mtime=0)
    check(out, decompressed_size=len(layout.buf))


@pytest.mark.parametrize("cls", [32, 64])
@pytest.mark.parametrize("writes, words", [
    ({"e_phnum": 0xFFFF}, ["program headers", "run past end of file"]),
    ({"ph0.p_filesz": "top"}, ["segment 0 (PT_LOAD)", "runs past end of file"]),
    ({"ph0.p_offset": "top"}, ["segment 0 (PT_LOAD)", "runs past end of file"]),
    ({"ph0.p_memsz": 0x40000001}, ["more than 1024 MiB"]),
    ({"ph1.p_paddr": LINK + 0x1000}, ["segments 0 and 1 overlap"]),
    ({"e_phentsize": 8}, ["program header entry size 8"]),
    ({"e_shnum": 0xFFFF}, ["section header table"]),
    ({"sh2.sh_entsize": 0}, ["corrupt section headers"]),
    ({"e_entry": 0x100000}, ["entry point 0x100000"]),
])
def test_synthetic_elf_directed(cls, writes, words):
    """Program headers out of the file, huge, overlapping or of the wrong
    size, e_phnum huge, a broken section or symbol table: each refused with
    what is wrong."""
    layout = synthetic_elf(cls, notes=[])  # no XenLU version: the symbols are read
    top = (1 << cls) - 1
    byname = {name: (off, fmt) for name, off, fmt, _ in layout.fields}
    buf = bytearray(layout.buf)
    for name, value in writes.items():
        off, fmt = byname[name]
        struct.pack_into("<" + fmt, buf, off, (top if value == "top" else value)
                         & ((1 << WIDTHS[fmt]) - 1))
    with pytest.raises(ImageError) as e:
        parse_image(bytes(buf), "synth")
    msg = one_line_message(e.value, "synth")
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------- multiboot2 headers

RELOC_VALUES = st.one_of(st.sampled_from([0, 1, 0x1000, 0x200000, 0x80000000, 0xFFFFFFFF]),
                         st.integers(0, 0xFFFFFFFF))


@st.composite
def mb2_tag(draw):
    ttype = draw(st.one_of(st.integers(1, 11), st.integers(0, 0xFFFF)))
    flags = draw(st.sampled_from([0, 1, 2, 0xFFFF]))
    if ttype == multiboot2.MB2_HEADER_TAG_RELOCATABLE and draw(st.booleans()):
        body = struct.pack("<4I", draw(RELOC_VALUES), draw(RELOC_VALUES),
                           draw(st.sampled_from([0, 1, 3, 0x1000, 0x200000, 1 << 31])),
                           draw(st.integers(0, 4)))
    elif ttype == multiboot2.MB2_HEADER_TAG_INFORMATION_REQUEST:
        body = draw(st.binary(max_size=24))
    elif draw(st.booleans()):
        words = draw(st.integers(0, 5))
        body = b"".join(struct.pack("<I", draw(RELOC_VALUES)) for _ in range(words))
    else:
        body = draw(st.binary(max_size=24))
    size = 8 + len(body)
    if draw(st.integers(0, 4)) == 0:
        size = draw(st.one_of(st.sampled_from([0, 4, 7, 8, 0xFFFFFFFF]),
                              st.integers(0, 0x200)))
    return ttype, flags, size, body


@st.composite
def mb2_header(draw):
    """A multiboot2 header from random tags; sizes, the end tag, the header
    length, the checksum and the magic are right or wrong at random."""
    body = b""
    for ttype, flags, size, tbody in draw(st.lists(mb2_tag(), max_size=6)):
        enc = struct.pack("<HHI", ttype, flags, size) + tbody
        if draw(st.integers(0, 5)):
            enc = enc.ljust(-(-len(enc) // 8) * 8, b"\0")
        body += enc
    end = draw(st.sampled_from(["end", "end", "none", "short", "long"]))
    body += {"end": struct.pack("<HHI", 0, 0, 8), "none": b"",
             "short": struct.pack("<HHI", 0, 0, 4), "long": struct.pack("<HHI", 0, 0, 64)}[end]
    arch = draw(st.one_of(st.sampled_from([0, 4]), st.integers(0, 0xFFFFFFFF)))
    length = 16 + len(body)
    if draw(st.integers(0, 4)) == 0:
        length = draw(interesting(32, length))
    magic = multiboot2.MB2_HEADER_MAGIC
    checksum = -(magic + arch + length) & 0xFFFFFFFF
    if draw(st.integers(0, 5)) == 0:
        checksum = draw(interesting(32, checksum))
    return struct.pack("<4I", magic, arch, length, checksum) + body


@fuzz(600)
@given(mb2_header(), st.sampled_from([0x18, 0x18, 0x20, 0x1C, 0x7FF8 - 0x100, 0x7FE0 - 0x100]),
       st.sampled_from([32, 64]))
def test_multiboot2_headers(header, where, cls):
    """Random headers at the usual place, unaligned, and near the end of the
    32 KiB search window; both the header decoder and the whole parse."""
    layout = synthetic_elf(cls, text_len=0x8200, mb2=header, mb2_at=where)
    buf = bytes(layout.buf)
    try:
        hdr = multiboot2.find_header(buf)
    except FormatError as e:
        assert str(e).startswith("multiboot2 header at offset 0x") and "\n" not in str(e)
    else:
        if hdr is not None:
            hdr.to_dict()
            hdr.relocatable
    img = check(buf)
    if img is not None and img.mb2 is not None:
        assert img.mb2.offset % 8 == 0 and img.mb2.offset + img.mb2.header_length <= 32 * KiB


# ---------------------------------------------------------------- notes

@st.composite
def one_note(draw):
    owner = draw(st.one_of(st.sampled_from([b"XenLU", b"XenLU", b"GNU", b"Xen"]),
                           st.binary(max_size=70)))
    ntype = draw(st.one_of(st.integers(1, 3), st.integers(0, 4), st.integers(0, 0xFFFFFFFF)))
    kind = draw(st.sampled_from(["version", "stream", "image", "random"]))
    if kind == "version":
        desc = struct.pack("<II", draw(st.integers(0, 0xFFFFFFFF)),
                           draw(st.integers(0, 0xFFFFFFFF))) + draw(st.binary(max_size=40))
    elif kind == "stream":
        types = draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=8))
        nr = draw(st.one_of(st.just(len(types)), st.integers(0, 0xFFFFFFFF)))
        desc = struct.pack("<III", draw(st.integers(0, 5)), draw(st.integers(0, 5)), nr) + \
            b"".join(struct.pack("<I", t) for t in types)
    elif kind == "image":
        desc = draw(st.binary(min_size=0, max_size=12))
    else:
        desc = draw(st.binary(max_size=64))
    return owner, ntype, desc


@fuzz(300)
@given(st.lists(one_note(), max_size=6), st.sampled_from([32, 64]), st.data())
def test_notes(notes, cls, data):
    """GNU and XenLU notes with random owners, types and descriptors, seen
    both through the PT_NOTE and in the first 32 KiB of the loaded image."""
    layout = synthetic_elf(cls, notes=notes)
    note_fields = [f for f in layout.fields if f[0].startswith("note")]
    buf = bytes(layout.buf)
    if note_fields and data.draw(st.booleans()):
        writes = []
        for _ in range(data.draw(st.integers(1, 3))):
            name, off, fmt, valid = data.draw(st.sampled_from(note_fields))
            writes.append((name, off, fmt, data.draw(interesting(32, valid))))
        buf = apply(layout, writes)
    check(buf)


# ---------------------------------------------------------------- the CLI

def _cli():
    return [installed_command("kexec-lu")]


def _limit_memory():
    # The bomb decompresses to 256 MiB + 1 at most; twice that and the
    # interpreter fit well in 1.5 GiB of address space.
    resource.setrlimit(resource.RLIMIT_AS, (1536 * MiB, 1536 * MiB))


def test_cli_one_line_on_hostile_files(tmp_path, real_xen, bombs):
    """`kexec-lu info` on hostile files: non-zero exit, exactly one line on
    stderr, no traceback; run concurrently, each with a 1.5 GiB address
    space and a time limit."""
    xen = real_xen["xen"]
    layout = synthetic_elf(64)
    byname = {name: (off, fmt) for name, off, fmt, _ in layout.fields}
    huge = bytearray(layout.buf)
    struct.pack_into("<Q", huge, byname["ph0.p_filesz"][0], (1 << 64) - 1)
    phnum = bytearray(xen)
    struct.pack_into("<H", phnum, 44, 0xFFFF)
    bad_mb2 = bytearray(xen)
    bad_mb2[0x98 + 12] ^= 0xFF
    files = {
        "bomb-one-member.gz": bombs["one member"],
        "bomb-many-members.gz": bombs["many members"],
        "empty-members.gz": bombs["empty members"],
        "truncated.gz": real_xen["xen.gz"][:len(real_xen["xen.gz"]) // 2],
        "phnum-ffff.elf": bytes(phnum),
        "huge-filesz.elf": bytes(huge),
        "bad-mb2-checksum.elf": bytes(bad_mb2),
        "random.bin": bytes((i * 167 + 13) & 0xFF for i in range(4096)),
        "gzip-of-random.gz": gzip.compress(bytes((i * 31) & 0xFF for i in range(4096))),
    }
    procs = {}
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        procs[name] = subprocess.Popen(_cli() + ["info", str(p)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True,
                                       preexec_fn=_limit_memory)
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        res = CliResult(types.SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err))
        try:
            line = one_line_error(res, "kexec-lu")
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e))
        assert line.startswith("kexec-lu: %s: " % (tmp_path / name)), (name, err)
