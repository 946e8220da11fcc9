"""Multiboot2 image header and boot information: real Xen, round trips, bad input."""
import gzip
import struct

import pytest
from hypothesis import given, settings, strategies as st

from kexec_lu import multiboot2 as mb2
from kexec_lu.errors import ImageError

@pytest.fixture(scope="module")
def real(xen_artifacts):
    elf = gzip.decompress(xen_artifacts.xen_gz.read_bytes())
    return elf, xen_artifacts.xen_syms.read_bytes()


def _header(*tags, at=0, size=None):
    buf = bytearray(b"\xaa" * at) + mb2.build_header(*tags)
    if size is not None:
        buf += b"\0" * (size - len(buf))
    return buf


def _refix_checksum(buf, off):
    magic, arch, length = struct.unpack_from("<3I", buf, off)
    struct.pack_into("<I", buf, off + 12, -(magic + arch + length) & 0xFFFFFFFF)


# ---------------------------------------------------------------- real Xen

def test_real_xen_header(real, xen_facts):
    elf, _ = real
    facts = xen_facts.mb2
    h = mb2.find_header(elf)
    assert (h.offset, h.arch, h.header_length) == \
        (facts.offset, mb2.MB2_ARCH_I386, facts.header_length)
    assert (0xE85250D6 + h.arch + h.header_length + h.checksum) & 0xFFFFFFFF == 0
    assert [t.type for t in h.tags] == list(facts.tag_types)
    assert h.tag_types == list(facts.tag_types[:-1])
    assert h.tag(1).fields == {"requests": facts.requests}
    assert not h.tag(1).optional and h.tag(10).optional
    assert h.tag(4).fields == {"console_flags": facts.console_flags}
    width, height, depth = facts.framebuffer
    assert h.tag(5).fields == {"width": width, "height": height, "depth": depth}
    assert h.tag(9).name == "entry_address_efi64"
    assert h.relocatable == mb2.Relocatable(*facts.relocatable, "high")
    assert h.tag(10).offset == facts.reloc_offset
    assert h.to_dict()["tags"][2]["fields"]["align"] == facts.relocatable[2]


def test_real_xen_header_reencodes_to_the_same_tags(real):
    elf, _ = real
    h = mb2.find_header(elf)
    again = mb2.find_header(mb2.build_header(*h.tags))
    assert again.tags == h.tags and again.header_length == h.header_length


def test_xen_syms_header_is_past_the_search_window(real, xen_facts):
    _, syms = real
    assert mb2.find_header(syms) is None
    assert mb2.find_magic(syms) == xen_facts.syms_mb2_magic > mb2.MB2_SEARCH


# ---------------------------------------------------------------- encode/decode

def test_round_trip_of_every_known_tag():
    tags = (
        mb2.make_tag(mb2.MB2_HEADER_TAG_INFORMATION_REQUEST, requests=[4, 6, 21]),
        mb2.make_tag(mb2.MB2_HEADER_TAG_ADDRESS, header_addr=1, load_addr=2, load_end_addr=3,
                     bss_end_addr=4),
        mb2.make_tag(mb2.MB2_HEADER_TAG_ENTRY_ADDRESS, entry_addr=0x200000),
        mb2.console_flags_tag(),
        mb2.make_tag(mb2.MB2_HEADER_TAG_FRAMEBUFFER, 1, width=80, height=25, depth=0),
        mb2.make_tag(mb2.MB2_HEADER_TAG_MODULE_ALIGN),
        mb2.make_tag(mb2.MB2_HEADER_TAG_EFI_BS, 1),
        mb2.make_tag(mb2.MB2_HEADER_TAG_ENTRY_ADDRESS_EFI32, entry_addr=5),
        mb2.make_tag(mb2.MB2_HEADER_TAG_ENTRY_ADDRESS_EFI64, entry_addr=6),
        mb2.relocatable_tag(0x100000, 0x7FFFFFFF, 0x1000, mb2.MB2_LOAD_PREFERENCE_LOW),
        mb2.make_tag(0x1234, raw=b"odd"),  # unknown: kept raw, 11 bytes, padded
    )
    h = mb2.find_header(_header(*tags, at=0x40, size=4096))
    assert h.offset == 0x40
    assert h.tags[:-1] == tags and h.tags[-1].type == mb2.MB2_HEADER_TAG_END
    assert h.tags[-2].name == "unknown(4660)" and h.tags[-2].raw == b"odd"
    assert [t.offset % 8 for t in h.tags] == [0] * len(h.tags)
    assert h.relocatable.preference_name == "low"
    assert h.header_length == 16 + sum((t.size + 7) & ~7 for t in h.tags)


def test_build_header_keeps_a_given_end_tag_and_checksums():
    end = mb2.make_tag(mb2.MB2_HEADER_TAG_END)
    raw = mb2.build_header(mb2.console_flags_tag(), end)
    assert raw == mb2.build_header(mb2.console_flags_tag())
    assert sum(struct.unpack_from("<4I", raw)) & 0xFFFFFFFF == 0
    assert len(raw) == 16 + 16 + 8


def test_no_header():
    assert mb2.find_header(b"") is None
    assert mb2.find_header(bytes(65536)) is None
    # Magic only at an unaligned position, or only past 32 KiB: no header.
    assert mb2.find_header(b"\0" * 4 + mb2.build_header()) is None
    far = bytes(mb2.MB2_SEARCH) + mb2.build_header()
    assert mb2.find_header(far) is None
    assert mb2.find_magic(far) == mb2.MB2_SEARCH


def test_header_ending_exactly_at_32k_is_accepted():
    hdr = mb2.build_header()
    buf = bytes(mb2.MB2_SEARCH - len(hdr)) + hdr + bytes(64)
    assert mb2.find_header(buf).offset == mb2.MB2_SEARCH - len(hdr)


# ---------------------------------------------------------------- malformed

def _expect_malformed(buf, *words, offset=0):
    with pytest.raises(ImageError) as ei:
        mb2.find_header(bytes(buf))
    msg = str(ei.value)
    assert "\n" not in msg and "offset 0x%x" % offset in msg
    for w in words:
        assert w in msg
    return msg


def test_bad_checksum_names_offset():
    buf = _header(mb2.console_flags_tag(), at=0x18, size=256)
    buf[0x18 + 12] ^= 1
    _expect_malformed(buf, "bad checksum", offset=0x18)


def test_header_length_past_the_buffer():
    buf = _header(mb2.console_flags_tag(), size=None)
    struct.pack_into("<I", buf, 8, 0x1000)
    _refix_checksum(buf, 0)
    _expect_malformed(buf, "header_length 0x1000", "past the end")


def test_header_longer_than_the_search_window():
    hdr = bytearray(mb2.build_header())
    buf = bytearray(mb2.MB2_SEARCH - 16) + hdr + bytes(64)
    _expect_malformed(buf, "past the first 32768 bytes", offset=mb2.MB2_SEARCH - 16)


def test_truncated_fixed_part():
    buf = bytes(8) + struct.pack("<2I", mb2.MB2_HEADER_MAGIC, 0)
    _expect_malformed(buf, "truncated", offset=8)


def test_tag_past_header_length():
    buf = _header(mb2.console_flags_tag(), size=256)
    struct.pack_into("<I", buf, 16 + 4, 0x40)  # console tag claims 64 bytes
    _expect_malformed(buf, "tag type 4 at 0x10", "past header_length")


def test_tag_smaller_than_its_header():
    buf = _header(mb2.console_flags_tag(), size=256)
    struct.pack_into("<I", buf, 16 + 4, 4)
    _expect_malformed(buf, "size 4")


def test_missing_end_tag():
    buf = _header(mb2.console_flags_tag(), size=256)
    struct.pack_into("<H", buf, 32, 0x99)  # end tag becomes unknown type 0x99
    _expect_malformed(buf, "no end tag")


def test_known_tag_too_short():
    short = mb2.make_tag(0x77, raw=b"\0" * 8)  # re-typed below to relocatable
    buf = _header(short, size=256)
    struct.pack_into("<H", buf, 16, mb2.MB2_HEADER_TAG_RELOCATABLE)
    _expect_malformed(buf, "relocatable tag at 0x10 is 16 bytes, needs 24")


@pytest.mark.parametrize("field_off,value,words", [
    (12, 7, "unknown preference 7"),
    (0, 0xFFFFFFFF, "min_addr 0xffffffff above max_addr"),
    (8, 0x3000, "align 0x3000"),
    (8, 0, "align 0x0"),
])
def test_unusable_relocatable_tag(field_off, value, words):
    buf = _header(mb2.relocatable_tag(0x200000, 0xFFFF0000, 0x200000, 2), size=256)
    struct.pack_into("<I", buf, 16 + 8 + field_off, value)
    _expect_malformed(buf, words)


def test_make_tag_rejects_bad_arguments():
    with pytest.raises(ValueError, match="takes fields"):
        mb2.make_tag(mb2.MB2_HEADER_TAG_CONSOLE_FLAGS)
    with pytest.raises(ValueError, match="raw bytes only"):
        mb2.make_tag(0x55, foo=1)
    with pytest.raises(ValueError, match="32 bits"):
        mb2.relocatable_tag(-1, 0, 0x1000, 0)
    with pytest.raises(ValueError, match="not a power of two"):
        mb2.relocatable_tag(0, 0xFFFFFFFF, 3, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), max_size=8),
       st.integers(0, 128))
def test_mutated_header_only_raises_image_error(mutations, cut):
    buf = bytearray(mb2.build_header(mb2.console_flags_tag(),
                                     mb2.relocatable_tag(0x200000, 0xFFFFFFFF, 0x200000, 2)))
    buf += bytes(64)
    for pos, val in mutations:
        buf[pos % len(buf)] = val
    try:
        h = mb2.find_header(bytes(buf[:len(buf) - cut]))
    except ImageError:
        return
    if h is not None:
        assert h.tags[-1].type == mb2.MB2_HEADER_TAG_END


# ---------------------------------------------------------------- boot information

def test_mbi_layout():
    mbi = mb2.encode_mbi("liveupdate=64M@0x1000000", "kexec-lu", 0x200000, 639, 0x3FFC00)
    total, reserved = struct.unpack_from("<II", mbi)
    assert total == len(mbi) and reserved == 0 and total % 8 == 0
    pos, seen = 8, []
    while True:
        ttype, size = struct.unpack_from("<II", mbi, pos)
        seen.append((ttype, size))
        if ttype == 0:
            break
        pos += (size + 7) & ~7
    assert pos + 8 == total
    assert seen == [(1, 8 + len("liveupdate=64M@0x1000000") + 1), (2, 8 + 9), (4, 16),
                    (21, 12), (0, 8)]
    assert mbi[16:16 + 25] == b"liveupdate=64M@0x1000000\0"
    assert mb2.MB2_BOOTLOADER_MAGIC == 0x36D76289


def test_mbi_round_trip():
    mbi = mb2.encode_mbi("console=com1 dom0_mem=1G", "kexec-lu 0.1", 0x3FE00000, 640, 1 << 24)
    assert mb2.decode_mbi(mbi) == dict(cmdline="console=com1 dom0_mem=1G",
                                       loader_name="kexec-lu 0.1", load_base_addr=0x3FE00000,
                                       mem_lower=640, mem_upper=1 << 24)
    assert mb2.decode_mbi(mb2.encode_mbi("", "", 0, 0, 0))["cmdline"] == ""


def test_mbi_skips_unknown_tags_and_reports_absent_ones():
    mmap = struct.pack("<IIII", 6, 16 + 24, 24, 0) + bytes(24)
    end = struct.pack("<II", 0, 8)
    body = mmap + end
    mbi = struct.pack("<II", 8 + len(body), 0) + body
    assert mb2.decode_mbi(mbi) == dict(cmdline=None, loader_name=None, load_base_addr=None,
                                       mem_lower=None, mem_upper=None)


def _mbi_bad(buf, words):
    with pytest.raises(ImageError, match=words):
        mb2.decode_mbi(bytes(buf))


def test_mbi_malformed():
    good = bytearray(mb2.encode_mbi("x", "y", 0, 1, 2))
    _mbi_bad(good[:8], "need at least 16")
    big = bytearray(good)
    struct.pack_into("<I", big, 0, len(good) + 8)
    _mbi_bad(big, "total_size")
    _mbi_bad(good[:-8], "total_size")  # total_size now exceeds the buffer
    noend = bytearray(good)
    struct.pack_into("<I", noend, 0, len(good) - 8)
    _mbi_bad(noend[:-8], "no end tag")
    nonul = bytearray(good)
    nonul[16 + 1] = ord("z")  # cmdline "x\0" -> "xz": no terminator in the tag
    _mbi_bad(nonul, "not NUL-terminated")
    oversize = bytearray(good)
    struct.pack_into("<I", oversize, 12, 0x1000)
    _mbi_bad(oversize, "size 4096")
    dup = bytearray(good)
    struct.pack_into("<I", dup, 24, 1)  # loader name tag re-typed as a second cmdline
    _mbi_bad(dup, "duplicate tag type 1")
    utf = bytearray(mb2.encode_mbi("\xe9", "y", 0, 1, 2))
    utf[16:18] = b"\xff\xfe"
    _mbi_bad(utf, "UTF-8")


def test_encode_mbi_rejects_bad_arguments():
    with pytest.raises(ValueError, match="NUL"):
        mb2.encode_mbi("a\0b", "l", 0, 0, 0)
    with pytest.raises(ValueError, match="32 bits"):
        mb2.encode_mbi("a", "l", 1 << 32, 0, 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_mbi_garbage_only_raises_image_error(data):
    good = mb2.encode_mbi("console=com1", "kexec-lu", 0x200000, 640, 4096)
    for buf in (data, good[:8] + data, data[:4] + good[4:]):
        try:
            mb2.decode_mbi(buf)
        except ImageError:
            pass
