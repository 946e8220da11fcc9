"""Multiboot2 image header and boot information: real Xen, round trips, bad input."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from xen_public import multiboot2 as mb2
from xen_public.errors import FormatError


def _header(*tags, at=0, size=None):
    buf = bytearray(b"\xaa" * at) + mb2.build_header(*tags)
    if size is not None:
        buf += b"\0" * (size - len(buf))
    return buf


def _refix_checksum(buf, off):
    magic, arch, length = struct.unpack_from("<3I", buf, off)
    struct.pack_into("<I", buf, off + 12, -(magic + arch + length) & 0xFFFFFFFF)


# ---------------------------------------------------------------- real Xen

def test_real_xen_header(real_xen, xen_facts):
    elf = real_xen["xen"]
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


def test_real_xen_header_reencodes_to_the_same_tags(real_xen):
    elf = real_xen["xen"]
    h = mb2.find_header(elf)
    again = mb2.find_header(mb2.build_header(*h.tags))
    assert again.tags == h.tags and again.header_length == h.header_length


def test_xen_syms_header_is_past_the_search_window(real_xen, xen_facts):
    syms = real_xen["xen-syms"]
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
    with pytest.raises(FormatError) as ei:
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
    except FormatError:
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
    with pytest.raises(FormatError, match=words):
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
        except FormatError:
            pass


# ---------------------------------------------------------------- the spec's numbers
# From the Multiboot2 specification (version 2.0, sections 3.1 and 3.6), as
# literals: a wrong number here is a loader that talks to no real kernel.

def test_the_specifications_numbers():
    assert (mb2.MB2_HEADER_MAGIC, mb2.MB2_BOOTLOADER_MAGIC) == (0xE85250D6, 0x36D76289)
    assert (mb2.MB2_SEARCH, mb2.MB2_HEADER_ALIGN, mb2.MB2_TAG_ALIGN) == (32768, 8, 8)
    assert (mb2.MB2_ARCH_I386, mb2.MB2_ARCH_MIPS32) == (0, 4)
    assert mb2.MB2_TAG_OPTIONAL == 1
    assert [mb2.MB2_HEADER_TAG_END, mb2.MB2_HEADER_TAG_INFORMATION_REQUEST,
            mb2.MB2_HEADER_TAG_ADDRESS, mb2.MB2_HEADER_TAG_ENTRY_ADDRESS,
            mb2.MB2_HEADER_TAG_CONSOLE_FLAGS, mb2.MB2_HEADER_TAG_FRAMEBUFFER,
            mb2.MB2_HEADER_TAG_MODULE_ALIGN, mb2.MB2_HEADER_TAG_EFI_BS,
            mb2.MB2_HEADER_TAG_ENTRY_ADDRESS_EFI32, mb2.MB2_HEADER_TAG_ENTRY_ADDRESS_EFI64,
            mb2.MB2_HEADER_TAG_RELOCATABLE] == list(range(11))
    assert (mb2.MB2_CONSOLE_FLAGS_CONSOLE_REQUIRED, mb2.MB2_CONSOLE_FLAGS_EGA_TEXT_SUPPORTED) == (1, 2)
    assert (mb2.MB2_LOAD_PREFERENCE_NONE, mb2.MB2_LOAD_PREFERENCE_LOW,
            mb2.MB2_LOAD_PREFERENCE_HIGH) == (0, 1, 2)
    assert (mb2.MBI_TAG_END, mb2.MBI_TAG_CMDLINE, mb2.MBI_TAG_BOOT_LOADER_NAME,
            mb2.MBI_TAG_BASIC_MEMINFO, mb2.MBI_TAG_LOAD_BASE_ADDR) == (0, 1, 2, 4, 21)


def test_a_mips_header_round_trips_with_its_arch_in_the_checksum():
    h = mb2.find_header(mb2.build_header(mb2.console_flags_tag(), arch=mb2.MB2_ARCH_MIPS32))
    assert (h.arch, h.arch_name) == (4, "mips32")
    assert (0xE85250D6 + 4 + h.header_length + h.checksum) & 0xFFFFFFFF == 0


# ---------------------------------------------------------------- every refusal says what is wrong

def _raw_header(arch, length, *words):
    body = struct.pack("<%dI" % len(words), *words)
    return struct.pack("<4I", 0xE85250D6, arch, length,
                       -(0xE85250D6 + arch + length) & 0xFFFFFFFF) + body


def refused(buf, message):
    with pytest.raises(FormatError) as e:
        mb2.find_header(buf)
    assert str(e.value) == message


def test_a_fixed_part_cut_short_says_how_many_bytes_are_left():
    for left in (12, 15):
        buf = b"\0" * 8 + struct.pack("<I", 0xE85250D6) + b"\0" * (left - 4)
        refused(buf, "multiboot2 header at offset 0x8: truncated: %d bytes left, the fixed part "
                     "needs 16" % left)
    # Exactly the fixed part, no room for tags: the length is what is wrong.
    refused(_raw_header(0, 24), "multiboot2 header at offset 0x0: header_length 0x18 runs past "
                                "the end of the image (0x10 bytes)")


def test_header_length_below_fixed_part_and_end_tag():
    for length in (8, 16, 23):
        refused(_raw_header(0, length, 0, 8) + bytes(64),
                "multiboot2 header at offset 0x0: header_length %d is too small for a header "
                "with an end tag" % length)
    assert mb2.find_header(_raw_header(0, 24, 0, 8)).header_length == 24


def test_an_information_request_body_must_be_whole_words():
    tag = struct.pack("<HHI", 1, 0, 8 + 6) + bytes(6) + bytes(2)
    buf = _raw_header(0, 16 + 16 + 8) + tag + struct.pack("<HHI", 0, 0, 8)
    refused(buf, "multiboot2 header at offset 0x0: information request tag at 0x10 has a "
                 "6-byte body, not a multiple of 4")


def test_relocatable_edges():
    same = mb2.find_header(mb2.build_header(mb2.relocatable_tag(0x200000, 0x200000, 1, 0)))
    assert same.relocatable == mb2.Relocatable(0x200000, 0x200000, 1, 0, "none")
    with pytest.raises(ValueError, match="align 0x3, not a power of two"):
        mb2.relocatable_tag(0, 0xFFFFFFFF, 3, 0)


def test_find_magic_stops_at_end():
    buf = bytes(64) + struct.pack("<I", 0xE85250D6) + bytes(60)
    assert mb2.find_magic(buf) == 64
    assert mb2.find_magic(buf, 0, 64) is None and mb2.find_magic(buf, 0, 68) == 64


def test_values_compare_by_type_and_fields_and_say_them():
    r = mb2.Relocatable(1, 2, 4, 1, "low")
    assert r == mb2.Relocatable(1, 2, 4, 1, "low") and r != mb2.Relocatable(1, 2, 4, 2, "high")
    assert r != (1, 2, 4, 1, "low")
    assert repr(r) == ("Relocatable(min_addr=1, max_addr=2, align=4, preference=1, "
                       "preference_name='low')")


def test_make_tag_refuses_what_the_format_cannot_hold():
    assert mb2.make_tag(0xFFFF, 0xFFFF, raw=b"").type == 0xFFFF
    for kw in (dict(tag_type=0x10000), dict(tag_type=1, flags=0x10000), dict(tag_type=-1)):
        with pytest.raises(ValueError, match="multiboot2 tag type and flags are u16"):
            mb2.make_tag(**kw)
    with pytest.raises(ValueError) as e:
        mb2.make_tag(mb2.MB2_HEADER_TAG_FRAMEBUFFER, raw=b"123456789012")
    assert str(e.value) == "multiboot2 framebuffer tag takes fields, not raw bytes"
    with pytest.raises(ValueError) as e:
        mb2.make_tag(mb2.MB2_HEADER_TAG_INFORMATION_REQUEST, requests=(4,), width=1)
    assert str(e.value) == "multiboot2 information_request tag takes field requests only"


def test_mbi_limits_and_short_tags():
    assert mb2.encode_mbi("", "", 0xFFFFFFFF, 0, 0)
    # The smallest boot information: its fixed part and an end tag.
    assert mb2.decode_mbi(struct.pack("<IIII", 16, 0, 0, 8))["cmdline"] is None
    for ttype, what, need in ((4, "basic meminfo", 16), (21, "load base addr", 12)):
        buf = struct.pack("<II", 8 + 8 + 8, 0) + struct.pack("<II", ttype, 8) + struct.pack("<II", 0, 8)
        with pytest.raises(FormatError) as e:
            mb2.decode_mbi(buf)
        assert str(e.value) == ("multiboot2 boot information: %s tag at 0x8 is 8 bytes, needs %d"
                                % (what, need))


def test_tags_are_required_unless_flagged_optional():
    assert mb2.make_tag(mb2.MB2_HEADER_TAG_END).flags == 0
    assert mb2.make_tag(mb2.MB2_HEADER_TAG_FRAMEBUFFER, width=0, height=0, depth=0).flags == 0
    with pytest.raises(ValueError, match="multiboot2 tag type and flags are u16"):
        mb2.make_tag(1, flags=-1)
    with pytest.raises(ValueError, match="load_base_addr -0x1 does not fit in 32 bits"):
        mb2.encode_mbi("", "", -1, 0, 0)


def test_header_tags_shorter_than_their_own_header():
    # An end tag of size 7, and a tag whose 8-byte header does not fit.
    refused(_raw_header(0, 24, 0, 7) + bytes(8),
            "multiboot2 header at offset 0x0: tag type 0 at 0x10 has size 7 (< 8)")
    # One 8-byte tag, then 7 bytes: too few for another tag's header.
    refused(_raw_header(0, 31, 0x63, 8) + bytes(16),
            "multiboot2 header at offset 0x0: no end tag within header_length 0x1f")


def mbi_refused(buf, message):
    with pytest.raises(FormatError) as e:
        mb2.decode_mbi(buf)
    assert str(e.value) == "multiboot2 boot information: " + message


def test_mbi_sizes_at_their_limits():
    mbi_refused(bytes(15), "15 bytes, need at least 16")
    mbi_refused(struct.pack("<IIII", 15, 0, 0, 8), "total_size 15 outside [16, 16]")
    # Room for one tag of 8 and 7 bytes more: no end tag fits.
    mbi_refused(struct.pack("<II", 23, 0) + struct.pack("<II", 3, 8) + bytes(8),
                "no end tag within total_size 23")
    mbi_refused(struct.pack("<IIII", 16, 0, 0, 7), "tag type 0 at 0x8 has size 7, outside the "
                                                   "16-byte buffer")
    for ttype, what, size, need in ((4, "basic meminfo", 15, 16), (21, "load base addr", 11, 12)):
        buf = struct.pack("<II", 8 + 16 + 8, 0) + struct.pack("<II", ttype, size) + bytes(8) \
            + struct.pack("<II", 0, 8)
        mbi_refused(buf, "%s tag at 0x8 is %d bytes, needs %d" % (what, size, need))
