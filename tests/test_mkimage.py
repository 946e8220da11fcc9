"""hyperv_sim.mkimage: images kexec_lu.image reads back exactly, built reproducibly."""
import gzip
import hashlib
import io
import struct

import pytest
from elftools.elf.elffile import ELFFile

from hyperv_sim import mkimage
from hyperv_sim.mkimage import build_image, write_image
from xen_public import xennotes
from kexec_lu.image import load_image, parse_image
from xen_public.lustream import ALL_RECORD_TYPES, LU_FORMAT_VERSION

KiB, MiB = 1024, 1 << 20
SMALL = dict(text_size=64 * KiB, mem_size=128 * KiB)


def _elf(data):
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@pytest.mark.parametrize("elf_class", [32, 64])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("personality, lu", [(True, True), (True, False), (False, False)],
                         ids=["live-update", "no-stream-note", "no-notes"])
def test_round_trip(elf_class, compress, personality, lu):
    data = build_image(xen_version="4.18.2", elf_class=elf_class, gzip=compress,
                       personality=personality, lu=lu)
    img = parse_image(data, "x")
    assert img.format == ("gzip+" if compress else "") + "elf%d" % elf_class
    assert img.compressed == compress
    assert img.machine == ("EM_386" if elf_class == 32 else "EM_X86_64")
    assert img.entry == 0x200000  # start of the segment, like real Xen
    [seg] = img.segments
    assert seg.paddr == 0x200000 and seg.filesz == MiB and seg.memsz == 3 * MiB
    assert seg.vaddr == (0x200000 if elf_class == 32 else 0xFFFF82D040200000)
    assert seg.perms == "RWX"
    assert (img.load_start, img.load_size) == (0x200000, 3 * MiB)
    # Like real xen.gz: multiboot2 header 0x18 into the segment (file 0x98 for ELF32).
    assert img.mb2.offset == seg.offset + 0x18
    assert img.mb2.offset == (0x98 if elf_class == 32 else 0xD8)
    assert img.mb2.tag_types == [4, 10]
    r = img.relocatable
    assert (r.min_addr, r.max_addr, r.align, r.preference, r.preference_name) == \
        (0x200000, 0xFFFFFFFF, 0x200000, 2, "high")
    assert len(img.build_id) == 40
    assert str(img.xen_version) == "4.18.2"
    assert img.xen_version.source == ("note" if personality else "banner")
    assert img.lu_image_size == (3 * MiB if personality else None)
    if lu:
        assert (img.lu.min_version, img.lu.max_version) == (LU_FORMAT_VERSION,) * 2
        assert img.lu.record_types == tuple(sorted(ALL_RECORD_TYPES))
    else:
        assert img.lu is None


def test_custom_sizes_and_placement():
    img = parse_image(build_image(text_size=100 * KiB + 3, mem_size=1 * MiB,
                                  link_addr=0x1000000, gzip=False))
    [seg] = img.segments
    assert (seg.paddr, seg.filesz, seg.memsz) == (0x1000000, 100 * KiB + 3, MiB)
    assert img.entry == 0x1000000 and img.load_end == 0x1100000
    assert img.lu_image_size == MiB


def test_default_mem_size_is_text_plus_2m_page_rounded():
    img = parse_image(build_image(text_size=64 * KiB + 1, gzip=False))
    assert img.segments[0].memsz == 64 * KiB + 2 * MiB + 4096


@pytest.mark.parametrize("version,parts,text", [
    ("4.18", (4, 18, ".0"), "4.18.0"),      # as Xen's build: XEN_EXTRAVERSION ?= .0
    ("4.18.0", (4, 18, ".0"), "4.18.0"), ("4.19-rc", (4, 19, "-rc"), "4.19-rc"),
    ("5.0.1-pre", (5, 0, ".1-pre"), "5.0.1-pre"), ("4.17.3-pre123456789", (4, 17, ".3-pre123456789"), None),
])
def test_versions(version, parts, text):
    for lu in (True, False):
        v = parse_image(build_image(xen_version=version, lu=lu, gzip=False, **SMALL)).xen_version
        assert (v.major, v.minor, v.extra) == parts and str(v) == (text or version)


def test_stream_capabilities():
    img = parse_image(build_image(lu_stream_versions=(1, 3), gzip=False,
                                  lu_record_types=[0x4000000A, 0x40000000, 0x40000000], **SMALL))
    assert (img.lu.min_version, img.lu.max_version) == (1, 3)
    assert img.lu.record_types == (0x40000000, 0x4000000A)


def test_without_mb2_or_relocatable():
    img = parse_image(build_image(with_mb2=False, gzip=False, **SMALL))
    assert img.mb2 is None and img.relocatable is None
    assert img.xen_version.source == "note"
    img = parse_image(build_image(relocatable=False, gzip=False, **SMALL))
    assert img.mb2.tag_types == [4] and img.relocatable is None


def test_gzip_wraps_the_plain_image_reproducibly():
    plain = build_image(**SMALL, gzip=False)
    packed = build_image(**SMALL)
    assert gzip.decompress(packed) == plain
    assert packed[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_deterministic():
    for kw in (dict(), dict(elf_class=64, gzip=False, personality=False)):
        assert build_image(**kw) == build_image(**kw)


def test_build_id_is_sha1_of_image_with_field_zeroed():
    elf = bytearray(build_image(gzip=False, **SMALL))
    img = parse_image(bytes(elf))
    bid = bytes.fromhex(img.build_id)
    pos = elf.find(bid)
    assert pos > 0 and elf.find(bid, pos + 1) < 0
    elf[pos:pos + 20] = bytes(20)
    assert hashlib.sha1(bytes(elf)).digest() == bid


def test_build_id_and_content_change_with_version():
    a = parse_image(build_image(xen_version="4.18.0", gzip=False, **SMALL))
    b = parse_image(build_image(xen_version="4.18.1", gzip=False, **SMALL))
    assert a.build_id != b.build_id
    assert a.segments[0].data[-4096:] != b.segments[0].data[-4096:]  # filler too


def test_filler_compresses_well():
    assert len(build_image(text_size=8 * MiB)) < 256 * KiB


def test_personality_in_first_32k_of_memory():
    for elf_class in (32, 64):
        img = parse_image(build_image(elf_class=elf_class, gzip=False, **SMALL))
        notes = xennotes.find_xenlu_notes(img.loaded_bytes())
        assert xennotes.decode_version(notes[xennotes.XENLU_NOTE_VERSION]) == (4, 18, ".0")
        assert xennotes.decode_image(notes[xennotes.XENLU_NOTE_IMAGE]) == 128 * KiB


def test_sections_and_notes_are_consistent_for_elf_tools():
    for elf_class in (32, 64):
        elf = build_image(elf_class=elf_class, gzip=False, **SMALL)
        ef = ELFFile(io.BytesIO(elf))
        assert [s.name for s in ef.iter_sections()] == ["", ".text", ".note", ".shstrtab"]
        note_seg = ef.get_segment(1)
        assert note_seg["p_type"] == "PT_NOTE"
        assert ef.get_section_by_name(".note").data() == note_seg.data()
        assert [n["n_name"] for n in note_seg.iter_notes()] == ["GNU", "XenLU", "XenLU", "XenLU"]
        text = ef.get_section_by_name(".text")
        assert text["sh_addr"] == ef.get_segment(0)["p_vaddr"]
        assert text.data() == ef.get_segment(0).data()
        # The note segment lies inside the loaded segment, at the same place.
        load = ef.get_segment(0)
        off = note_seg["p_offset"] - load["p_offset"]
        assert note_seg["p_paddr"] == load["p_paddr"] + off
        assert note_seg["p_vaddr"] == load["p_vaddr"] + off


def test_entry_stub_jumps_past_the_header():
    img = parse_image(build_image(gzip=False, **SMALL))
    code = img.segments[0].data
    assert code[0] == 0xE9
    target = 5 + struct.unpack_from("<i", code, 1)[0]
    assert target % 8 == 0 and img.mb2.offset - img.segments[0].offset < target < 32 * KiB


def test_write_image(tmp_path):
    p = tmp_path / "xen-4.18.gz"
    data = write_image(p, xen_version="4.18", **SMALL)
    assert p.read_bytes() == data
    assert str(load_image(p).xen_version) == "4.18.0"


@pytest.mark.parametrize("kwargs,words", [
    (dict(xen_version="4"), "not X.Y"),
    (dict(xen_version="four.18"), "not X.Y"),
    (dict(xen_version="4.18.0.1"), "not X.Y"),
    (dict(xen_version=4.18), "not X.Y"),
    # xen_extraversion_t is char[16]: 15 characters and the NUL.
    (dict(xen_version="4.17.3-pre1234567890"), "longer than Xen's 15 characters"),
    (dict(elf_class=16), "elf_class"),
    (dict(text_size=32 * KiB), "at least 64 KiB"),
    (dict(text_size=-1), "at least 64 KiB"),
    (dict(mem_size=3 * MiB + 1), "multiple of 4096"),
    (dict(mem_size=0), "multiple of 4096"),
    (dict(text_size=2 * MiB, mem_size=MiB), "smaller than text_size"),
    (dict(mem_size=2048 * MiB), "more than 1024 MiB"),
    (dict(link_addr=0x200001), "page-aligned"),
    (dict(link_addr=0xFFF00000), "below 4 GiB"),
    (dict(lu_stream_versions=(2, 1)), "min <= max"),
    (dict(lu_stream_versions=(1,)), "(min, max) pair"),
    (dict(lu_record_types=[-1]), "not a u32"),
    (dict(lu_record_types=range(10000)), "first 32 KiB"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as ei:
        build_image(**kwargs)
    assert words in str(ei.value) and "\n" not in str(ei.value)


def test_parse_version():
    assert mkimage.parse_version("4.17.7") == (4, 17, ".7")
    assert mkimage.parse_version("4.18-unstable") == (4, 18, "-unstable")
