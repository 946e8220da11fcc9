"""kexec_lu.image: the real Debian Xen images, and every way a file can be wrong."""
import gzip
import io
import json
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings, strategies as st

from hyperv_sim.mkimage import build_image
from kexec_lu import image as imagemod
from xen_public import xennotes
from kexec_lu.errors import ImageError
from kexec_lu.image import load_image, parse_image, probe
from xen_public.lustream import ALL_RECORD_TYPES, record_name


@pytest.fixture(scope="module")
def art(xen_artifacts):
    return xen_artifacts


@pytest.fixture(scope="module")
def facts(xen_facts):
    return xen_facts


@pytest.fixture(scope="module")
def xen_gz(art):
    return load_image(art.xen_gz)


@pytest.fixture(scope="module")
def xen_syms(art):
    return load_image(art.xen_syms)


@pytest.fixture(scope="module")
def xen_elf(art):
    """The decompressed xen.gz, for patching."""
    return gzip.decompress(art.xen_gz.read_bytes())


# ELF field offsets, per class: ehdr {field: (offset, fmt)}, phdr likewise.
EHDR = {32: dict(entry=(24, "I"), phoff=(28, "I"), shoff=(32, "I"), phentsize=(42, "H"),
                 phnum=(44, "H"), shnum=(48, "H")),
        64: dict(entry=(24, "Q"), phoff=(32, "Q"), shoff=(40, "Q"), phentsize=(54, "H"),
                 phnum=(56, "H"), shnum=(60, "H"))}
PHDR = {32: dict(size=32, type=(0, "I"), offset=(4, "I"), vaddr=(8, "I"), paddr=(12, "I"),
                 filesz=(16, "I"), memsz=(20, "I")),
        64: dict(size=56, type=(0, "I"), offset=(8, "Q"), vaddr=(16, "Q"), paddr=(24, "Q"),
                 filesz=(32, "Q"), memsz=(40, "Q"))}


def _cls(elf):
    return 32 * elf[4]


def patch_ehdr(elf, **fields):
    elf = bytearray(elf)
    for name, value in fields.items():
        off, fmt = EHDR[_cls(elf)][name]
        struct.pack_into("<" + fmt, elf, off, value)
    return bytes(elf)


def patch_phdr(elf, index, **fields):
    elf = bytearray(elf)
    cls = _cls(elf)
    phoff = struct.unpack_from("<" + EHDR[cls]["phoff"][1], elf, EHDR[cls]["phoff"][0])[0]
    base = phoff + index * PHDR[cls]["size"]
    for name, value in fields.items():
        off, fmt = PHDR[cls][name]
        struct.pack_into("<" + fmt, elf, base + off, value)
    return bytes(elf)


def rejected(data, *words, path="img"):
    """parse_image must fail with one line naming the file and the words."""
    with pytest.raises(ImageError) as ei:
        parse_image(data, path)
    msg = str(ei.value)
    assert msg.startswith(path + ": ") and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def small_image(**kw):
    kw.setdefault("gzip", False)
    kw.setdefault("text_size", 64 * 1024)
    kw.setdefault("mem_size", 128 * 1024)
    return build_image(**kw)


# ---------------------------------------------------------------- real xen.gz

def _version_string(facts):
    major, minor, extra = facts.version
    return "%d.%d%s" % (major, minor, extra)


def test_real_xen_gz(xen_gz, art, facts):
    img, load, mb2 = xen_gz, facts.gz_load, facts.mb2
    assert img.format == "gzip+elf32" and img.compressed and img.elf_class == 32
    assert (img.machine, img.e_machine) == ("EM_386", 3)
    assert img.entry == facts.entry
    assert (img.load_start, img.load_end, img.load_size) == \
        (load.paddr, load.paddr + load.memsz, load.memsz)
    [seg] = img.segments
    assert (seg.paddr, seg.vaddr, seg.offset, seg.filesz, seg.memsz, seg.perms) == \
        (load.paddr, load.vaddr, load.offset, load.filesz, load.memsz, load.perms)
    r = img.relocatable
    assert (r.min_addr, r.max_addr, r.align, r.preference, r.preference_name) == \
        mb2.relocatable + ("high",)
    assert img.mb2.offset == mb2.offset and img.mb2.tag_types == list(mb2.tag_types[:-1])
    assert img.mb2_missing is None
    assert img.build_id == facts.build_id
    assert str(img.xen_version) == _version_string(facts)
    assert img.xen_version.source == "banner"
    assert (img.xen_version.major, img.xen_version.minor, img.xen_version.extra) == \
        facts.version
    assert img.lu is None and img.lu_image_size is None
    assert img.file_size == art.xen_gz.stat().st_size


def test_real_xen_gz_json(xen_gz, facts):
    j = json.loads(json.dumps(xen_gz.to_json()))
    assert set(j) >= {"path", "format", "compressed", "class", "machine", "entry",
                      "load_start", "load_end", "load_size", "alignment", "relocatable",
                      "multiboot2", "segments", "build_id", "xen_version",
                      "xen_version_source", "live_update"}
    assert j["format"] == "gzip+elf32" and j["class"] == 32 and j["entry"] == facts.entry
    min_addr, max_addr, align, preference = facts.mb2.relocatable
    assert j["alignment"] == align and j["load_size"] == facts.gz_load.memsz
    assert j["relocatable"] == {"min_addr": min_addr, "max_addr": max_addr,
                                "align": align, "preference": preference,
                                "preference_name": "high"}
    assert j["multiboot2"]["offset"] == facts.mb2.offset
    assert [t["type"] for t in j["multiboot2"]["tags"]] == list(facts.mb2.tag_types)
    assert j["segments"][0]["filesz"] == facts.gz_load.filesz
    assert (j["xen_version"], j["xen_version_source"], j["live_update"]) == \
        (_version_string(facts), "banner", None)
    assert j["build_id"] == facts.build_id


def test_real_xen_gz_loaded_bytes(xen_gz, xen_elf, facts):
    load = facts.gz_load
    mem = xen_gz.loaded_bytes()
    assert len(mem) == load.memsz
    assert mem[:load.filesz] == xen_elf[load.offset:load.offset + load.filesz]
    assert mem[load.filesz:] == bytes(load.memsz - load.filesz)
    assert xen_gz.elf_bytes == xen_elf


# ---------------------------------------------------------------- real xen-syms

def test_real_xen_syms(xen_syms, facts):
    img, load = xen_syms, facts.syms_load
    assert img.format == "elf64" and not img.compressed
    assert (img.machine, img.e_machine) == ("EM_X86_64", 62)
    assert img.entry == facts.entry  # physical, although the segment is linked high
    [seg] = img.segments
    assert (seg.paddr, seg.vaddr, seg.memsz) == (load.paddr, load.vaddr, load.memsz)
    assert load.vaddr != load.paddr
    assert (img.load_start, img.load_size) == (load.paddr, load.memsz)
    assert img.build_id == facts.build_id
    assert str(img.xen_version) == _version_string(facts)
    assert img.xen_version.source == "symbols"
    assert img.mb2 is None and img.relocatable is None
    assert "0x%x" % facts.syms_mb2_magic in img.mb2_missing and "32768" in img.mb2_missing
    assert img.to_json()["multiboot2"] is None and img.to_json()["alignment"] is None


def test_both_version_methods_agree_on_real_images(xen_gz, xen_syms, facts):
    expected = facts.version
    for img in (xen_gz, xen_syms):
        v = imagemod.version_from_banner(img.segments[0].data)
        assert (v.major, v.minor, v.extra, v.source) == expected + ("banner",)
    v = imagemod.version_from_symbols(ELFFile(io.BytesIO(xen_syms.elf_bytes)), xen_syms.segments)
    assert (v.major, v.minor, v.extra, v.source) == expected + ("symbols",)
    # xen.gz is stripped: no symbol table.
    assert imagemod.version_from_symbols(ELFFile(io.BytesIO(xen_gz.elf_bytes)),
                                         xen_gz.segments) is None


@pytest.mark.parametrize("pad_version, pad_compiler", [(1, 1), (6, 1), (1, 4), (8, 8)])
def test_banner_strings_padded_for_alignment(pad_version, pad_compiler):
    # Debian's 4.17.5 build pads the version string with NULs before the compiler's.
    rodata = (b"\0lists.alioth.debian.org\0" + b"4.19.2+3-g1-1" + b"\0" * pad_version
              + b"x86_64-linux-gnu-gcc (Debian 12.2.0) 12.2.0" + b"\0" * pad_compiler
              + b".2\0<denied>\0")
    v = imagemod.version_from_banner(rodata)
    assert (v.major, v.minor, v.extra) == (4, 19, ".2")
    assert imagemod.version_from_banner(rodata.replace(b"gcc", b"xyz")) is None


def test_xen_efi_is_rejected(art):
    for fn in (load_image, probe):
        with pytest.raises(ImageError) as ei:
            fn(art.xen_efi)
        msg = str(ei.value)
        assert "not an ELF image" in msg and "PE/EFI" in msg and str(art.xen_efi) in msg


def test_probe(art, tmp_path):
    assert probe(art.xen_gz) == "gzip+elf32"
    assert probe(art.xen_syms) == "elf64"
    bad = tmp_path / "arm.gz"
    bad.write_bytes(gzip.compress(small_image()[:18] + b"\x28\0" + bytes(64)))
    with pytest.raises(ImageError, match="EM_ARM"):
        probe(bad)


# ---------------------------------------------------------------- files and compression

def test_missing_file(tmp_path):
    p = tmp_path / "nope.gz"
    with pytest.raises(ImageError, match="cannot read") as ei:
        load_image(p)
    assert str(p) in str(ei.value)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path)  # a directory


def test_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(p)
    rejected(gzip.compress(b""), "decompresses to nothing")


def test_truncated_gzip(art):
    raw = art.xen_gz.read_bytes()
    rejected(raw[:len(raw) // 2], "truncated gzip")


def test_corrupt_gzip(art):
    raw = bytearray(art.xen_gz.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 64] = bytes(64)
    rejected(bytes(raw), "corrupt gzip data")


def test_gzip_of_garbage():
    rejected(gzip.compress(b"this is not a hypervisor\n" * 100), "not an ELF image")


def test_gzip_bomb_is_capped(monkeypatch):
    monkeypatch.setattr(imagemod, "MAX_DECOMPRESSED", 1 << 20)
    rejected(gzip.compress(bytes(2 << 20)), "more than 1 MiB")


def test_gzip_of_pe_says_pe():
    rejected(gzip.compress(b"MZ" + bytes(200)), "PE/EFI", "not an ELF image")


def test_gzip_detected_by_magic_not_name(tmp_path):
    p = tmp_path / "xen.elf"
    p.write_bytes(small_image(gzip=True))
    assert load_image(p).compressed
    q = tmp_path / "xen.gz"
    q.write_bytes(small_image(gzip=False))
    assert not load_image(q).compressed


def test_trailing_garbage_after_gzip_is_ignored():
    img = parse_image(small_image(gzip=True) + b"\0\0garbage")
    assert img.compressed and img.xen_version.source == "note"


# ---------------------------------------------------------------- ELF checks

def test_wrong_machine(xen_elf):
    rejected(xen_elf[:18] + struct.pack("<H", 40) + xen_elf[20:], "EM_ARM", "(40)")


def test_unsupported_class_and_endianness(xen_elf):
    rejected(xen_elf[:4] + b"\x03" + xen_elf[5:], "unsupported ELF class 3")
    rejected(xen_elf[:5] + b"\x02" + xen_elf[6:], "data encoding 2")


def test_not_elf():
    rejected(b"\x00\x01\x02\x03hello", "not an ELF image", "00 01 02 03")


def test_truncated_elf(xen_elf):
    rejected(xen_elf[:19], "ELF header truncated")
    rejected(xen_elf[:40], "ELF header truncated (40 of 52 bytes)")
    rejected(xen_elf[:60], "program headers at 0x34", "past end of file")
    rejected(xen_elf[:0x1000], "segment 0 (PT_LOAD)", "past end of file")


def test_segment_past_eof(xen_elf):
    rejected(patch_phdr(xen_elf, 0, offset=len(xen_elf) - 16), "segment 0 (PT_LOAD)",
             "runs past end of file")
    rejected(patch_phdr(xen_elf, 1, filesz=0x10000000), "segment 1 (PT_NOTE)")


def test_no_program_headers_or_no_load(xen_elf):
    rejected(patch_ehdr(xen_elf, phnum=0), "no program headers")
    rejected(patch_phdr(xen_elf, 0, type=0), "no PT_LOAD")
    rejected(patch_ehdr(xen_elf, phentsize=20), "program header entry size 20")


def test_filesz_above_memsz(xen_elf, facts):
    rejected(patch_phdr(xen_elf, 0, memsz=0x1000),
             "filesz 0x%x > memsz 0x1000" % facts.gz_load.filesz)


def test_overlapping_segments():
    elf = small_image()
    # Our PT_NOTE lies inside the PT_LOAD: as a second PT_LOAD it overlaps.
    rejected(patch_phdr(elf, 1, type=1), "segments 0 and 1 overlap")


def test_entry_outside_every_segment(xen_elf):
    rejected(patch_ehdr(xen_elf, entry=0x100000), "entry point 0x100000")


def test_virtual_entry_is_translated():
    elf = small_image(elf_class=64)
    img = parse_image(patch_ehdr(elf, entry=0xFFFF82D040200040))
    assert img.entry == 0x200040
    assert parse_image(elf).entry == 0x200000


def test_absurd_sizes(xen_elf):
    rejected(patch_phdr(xen_elf, 0, memsz=0x50000000), "more than 1024 MiB")
    rejected(patch_phdr(xen_elf, 0, paddr=0xFFF00000), "runs past 4 GiB")
    elf = small_image()
    far = patch_phdr(elf, 1, type=1, paddr=0x80000000, vaddr=0x80000000)
    rejected(far, "span", "more than 1024 MiB")


def test_section_headers_outside_file(xen_elf):
    rejected(patch_ehdr(xen_elf, shoff=len(xen_elf)), "section header table")


# ---------------------------------------------------------------- multiboot2 in images

def test_no_mb2_header_is_reported_not_rejected():
    img = parse_image(small_image(with_mb2=False))
    assert img.mb2 is None and img.relocatable is None
    assert img.mb2_missing == "no multiboot2 header in the first 32768 bytes"
    assert img.to_json()["multiboot2_missing"] == img.mb2_missing


def test_corrupt_mb2_checksum(xen_elf, facts):
    elf = bytearray(xen_elf)
    elf[facts.mb2.offset + 12] ^= 0xFF
    msg = rejected(bytes(elf), "multiboot2 header at offset 0x%x" % facts.mb2.offset,
                   "bad checksum",
                   path="/boot/xen.gz")
    assert msg.count("/boot/xen.gz") == 1


def test_relocatable_tag_absent(xen_elf, facts):
    img = parse_image(small_image(relocatable=False))
    assert img.mb2.tag_types == [4] and img.relocatable is None
    assert img.to_json()["alignment"] is None
    # Real Xen with tag 10 re-typed: the header stays valid (the checksum
    # covers only the fixed part), the tag is kept raw, no relocation info.
    elf = bytearray(xen_elf)
    assert struct.unpack_from("<H", elf, facts.mb2.reloc_offset)[0] == 10
    struct.pack_into("<H", elf, facts.mb2.reloc_offset, 0x63)
    img = parse_image(bytes(elf))
    assert img.relocatable is None and img.mb2.tag(0x63).name == "unknown(99)"
    assert img.mb2.tag(0x63).raw == struct.pack("<4I", *facts.mb2.relocatable)


# ---------------------------------------------------------------- notes

def test_xenlu_notes_found_without_pt_note():
    elf = small_image()
    img = parse_image(patch_phdr(elf, 1, type=0))  # PT_NOTE -> PT_NULL
    assert img.build_id is None  # only PT_NOTE carries the GNU note
    assert img.lu.record_types == ALL_RECORD_TYPES and img.xen_version.source == "note"
    assert img.lu_image_size == 128 * 1024


def test_malformed_xenlu_stream_note():
    elf = bytearray(small_image(lu_stream_versions=(1, 1)))
    stream = xennotes.encode_stream(1, 1, ALL_RECORD_TYPES)
    pos = elf.find(stream)
    struct.pack_into("<I", elf, pos, 5)
    rejected(bytes(elf), "min version 5 > max 1")


def test_live_update_json():
    j = parse_image(small_image(lu_stream_versions=(1, 3), lu_record_types=[0x40000000, 0x80000002, 0])).to_json()
    assert j["live_update"] == {"stream_versions": [1, 3],
                                "record_types": ["END", "LU_VERSION", "X86_PV_INFO|OPTIONAL"],
                                "image_size": 128 * 1024}
    assert j["live_update"]["record_types"][2] == record_name(0x80000002)


# ---------------------------------------------------------------- robustness

SMALL = small_image(xen_version="4.18.1")
SMALL_GZ = small_image(xen_version="4.18.1", gzip=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(),
       st.lists(st.tuples(st.one_of(st.integers(0, 0x200), st.integers(0, len(SMALL) - 1)),
                          st.integers(0, 255)), min_size=1, max_size=6),
       st.one_of(st.just(0), st.integers(0, len(SMALL))))
def test_mutations_only_raise_image_error(use_gzip, mutations, cut):
    data = bytearray(SMALL_GZ if use_gzip else SMALL)
    for pos, val in mutations:
        data[pos % len(data)] = val
    if cut:
        data = data[:cut % len(data)]
    try:
        img = parse_image(bytes(data), "mutant")
    except ImageError as e:
        assert str(e).startswith("mutant: ") and "\n" not in str(e)
        return
    # Whatever was accepted must be self-consistent.
    assert img.load_start <= img.entry < img.load_end
    assert img.load_size <= imagemod.MAX_LOAD_SIZE
    assert len(img.loaded_bytes()) == img.load_size
    json.dumps(img.to_json())
