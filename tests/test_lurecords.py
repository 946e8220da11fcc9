"""The record codecs' own contract, against bodies built by hand with
struct from kexec-lu-stream(5)'s layouts: what decode returns by default,
where its refusals point, how records count, which types are system ones.
(test_stream.py covers whole streams; this file what a caller of one codec
relies on.)"""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_public import lurecords as R


def ownership_body(items):
    """LU_PAGE_OWNERSHIP: u32 count, u32 reserved; {u64 mfn, u64 count, u32 kind, u32 reserved}."""
    return struct.pack("<II", len(items), 0) + b"".join(struct.pack("<QQII", *i) for i in items)


def test_a_fixed_record_decodes_to_a_plain_tuple_unless_names_are_asked_for():
    body = struct.pack("<QQ", 0xfa400, 1 << 20)           # LU_M2P: start mfn, entries
    plain = R.M2P.decode(body)
    assert type(plain) is tuple and plain == (0xfa400, 1 << 20)
    named = R.M2P.decode(body, named=True)
    assert named.start_mfn == 0xfa400 and named.nr_entries == 1 << 20


def test_an_array_decodes_to_plain_items_unless_names_are_asked_for():
    body = ownership_body([(0x100, 4, 1, 0), (0x200, 1, 2, 0)])
    head, items = R.OWNERSHIP.decode(body)
    assert type(head) is tuple and head == (2, 0)
    assert [type(i) for i in items] == [tuple, tuple] and items[1] == (0x200, 1, 2, 0)
    named = R.OWNERSHIP.decode(body, named=True)
    assert named.head.count == 2 and named.items[0].mfn == 0x100


def test_without_at_a_refusal_points_into_the_body_itself():
    # LU_DOMAIN: domid u16, flags u16, dtype u32, vcpus u32, reserved u32 at 12.
    body = struct.pack("<HHIII Q64s", 1, 0, 0, 1, 7, 0x1234, b"guest")
    with pytest.raises(R.RecordError, match=r"^reserved field at offset 0xc is not zero$"):
        R.DOMAIN.decode(body)
    with pytest.raises(R.RecordError, match=r"^reserved field at offset 0x10c is not zero$"):
        R.DOMAIN.decode(body, at=0x100)


@pytest.mark.parametrize("at", [0, 0x4000])
def test_an_item_reserved_word_is_named_by_its_own_offset(at):
    # Third item's reserved word: 8 (head) + 2 * 24 + 20 = 0x4c into the body.
    body = ownership_body([(1, 1, 1, 0), (2, 1, 1, 0), (3, 1, 1, 9)])
    with pytest.raises(R.RecordError, match=r"^reserved field at offset 0x%x is not zero$" % (at + 0x4c)):
        R.OWNERSHIP.decode(body, at=at)


def test_an_array_head_reserved_word_without_at():
    body = struct.pack("<II", 0, 5)
    with pytest.raises(R.RecordError, match=r"^reserved field at offset 0x4 is not zero$"):
        R.OWNERSHIP.decode(body)


def test_an_empty_array_is_exactly_its_head():
    assert R.OWNERSHIP.decode(struct.pack("<II", 0, 0)) == ((0, 0), [])


def test_length_refusals_say_what_the_bytes_hold():
    with pytest.raises(R.RecordError, match=r"^body is 15 bytes, expected 16$"):
        R.M2P.decode(bytes(15))
    with pytest.raises(R.RecordError, match=r"^body of 7 bytes is shorter than its 8-byte header$"):
        R.OWNERSHIP.decode(bytes(7))
    body = struct.pack("<II", 3, 0) + bytes(24)
    with pytest.raises(R.RecordError, match=r"^says 3 entries of 24 bytes but holds 24 bytes$"):
        R.OWNERSHIP.decode(body)


def test_counts_are_one_per_fixed_record_and_per_entry_otherwise():
    assert R.M2P.count(R.M2P.decode(struct.pack("<QQ", 1, 2))) == 1
    assert R.OWNERSHIP.count(R.OWNERSHIP.decode(ownership_body([(1, 1, 1, 0)] * 3))) == 3
    # LU_IOMMU: u32 extents, u32 devices, u64 root; {u64 mfn, u64 count}; char bdf[16].
    body = (struct.pack("<IIQ", 2, 1, 0x77) + struct.pack("<QQ", 0x10, 1) + struct.pack("<QQ", 0x20, 2)
            + b"0000:03:00.0".ljust(16, b"\0"))
    value = R.IOMMU.decode(body)
    assert value == (0x77, [(0x10, 1), (0x20, 2)], ["0000:03:00.0"])
    assert R.IOMMU.count(value) == 3


def test_the_system_section_types_are_the_man_pages_five():
    # LU_VERSION, LU_XEN_REGIONS, LU_M2P, LU_TIMINGS, LU_KEXEC_IMAGE
    # (kexec-lu-stream(5), "System section").
    assert R.SYSTEM_TYPES == {0x40000000, 0x4000000D, 0x4000000C, 0x40000010, 0x40000012}


def _first_nonzero_reserved(layout, data, count):
    """The oracle: item by item, field by field, as the format says."""
    for n in range(count):
        for off, size in layout.reserved_spans:
            if any(data[n * layout.size + off:n * layout.size + off + size]):
                return n * layout.size + off
    return None


# Item layouts with reserved fields at several places and widths.
ARRAYS_WITH_RESERVED_ITEMS = [t for t in R.TYPES.values()
                              if isinstance(t, R.Array) and not t.raw and t.item.reserved]


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_reserved_item_fields_are_checked_all_at_once_as_one_by_one(data):
    """check_reserved_items names the same byte as checking each item's
    reserved fields in turn, whichever items and bytes are non-zero."""
    rtype = data.draw(st.sampled_from(ARRAYS_WITH_RESERVED_ITEMS), label="record")
    item = rtype.item
    count = data.draw(st.integers(0, 40), label="count")
    raw = bytearray(count * item.size)
    for _ in range(data.draw(st.integers(0, 3), label="dirty bytes")):
        if count:
            n = data.draw(st.integers(0, count - 1))
            off, size = data.draw(st.sampled_from(item.reserved_spans))
            raw[n * item.size + off + data.draw(st.integers(0, size - 1))] = data.draw(st.integers(1, 255))
    want = _first_nonzero_reserved(item, bytes(raw), count)
    if want is None:
        item.check_reserved_items(memoryview(bytes(raw)), count, 0x100)
    else:
        with pytest.raises(R.RecordError, match=r"^reserved field at offset 0x%x is not zero$" % (0x100 + want)):
            item.check_reserved_items(memoryview(bytes(raw)), count, 0x100)
