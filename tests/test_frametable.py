"""The C core's frame-table scans against a plain-Python reference, and the
allocator's free list against what the table says."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.reference import FRAME, frames_find_mismatch, frames_histogram, frames_scan
from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.frametable import ENTRY_SIZE, USE_NAMES, FrameAllocator, FrameTable, OutOfMemory, RefError
from xen_public.abi import DOMID_INVALID


class BufferRAM:
    """Just enough of HostRAM for a frame table in a bytearray."""

    def __init__(self, nbytes):
        self.buf = bytearray(nbytes)
        self.base = ffi.from_buffer("unsigned char[]", self.buf, require_writable=True)

    def pointer(self, maddr, ctype):
        return ffi.cast(ctype, self.base + maddr)

    def reserve(self, maddr, length):
        """No file behind it: nothing to reserve (HostRAM.reserve)."""


def table_from(entries):
    ram = BufferRAM(len(entries) * ENTRY_SIZE)
    for i, (owner, use) in enumerate(entries):
        FRAME.pack_into(ram.buf, i * ENTRY_SIZE, owner, use, 0, 0, 0, 0)
    return FrameTable(ram, 0, len(entries)), ram


frame_entries = st.lists(st.tuples(st.sampled_from([0, 1, 7, DOMID_INVALID]),
                                   st.integers(0, lib.LU_USE_MAX - 1)), min_size=1, max_size=300)


def test_entry_is_16_bytes():
    assert ENTRY_SIZE == FRAME.size == 16


@settings(max_examples=300, deadline=None)
@given(entries=frame_entries, data=st.data())
def test_scan_count_and_histogram_match_the_reference(entries, data):
    ft, ram = table_from(entries)
    owner, use = data.draw(st.sampled_from(entries))
    first = data.draw(st.integers(0, len(entries)))
    end = data.draw(st.integers(first, len(entries)))
    want = frames_scan(ram.buf, first, end, owner, use)
    assert ft.extents(owner, use, first, end) == want
    assert ft.count(owner, use, first, end) == sum(n for _, n in want)
    hist, want_hist = ft.histogram(), frames_histogram(ram.buf, 0, len(entries))
    for u, name in USE_NAMES.items():
        assert hist.get(name, 0) == want_hist[u]
    part, want_part = ft.histogram(first, end), frames_histogram(ram.buf, first, end)
    for u, name in USE_NAMES.items():
        assert part.get(name, 0) == want_part[u]
    mismatch = lib.lu_frames_find_mismatch(ft.frames, first, end, owner, use)
    assert mismatch == frames_find_mismatch(ram.buf, first, end, owner, use)


@settings(max_examples=200, deadline=None)
@given(entries=frame_entries, data=st.data())
def test_guest_bytes_counts_exactly_the_bytes_in_guest_frames(entries, data):
    """What a live update reports as written to guests: whole frames and
    partial ones alike."""
    ft, _ = table_from(entries)
    size = len(entries) * 4096
    maddr = data.draw(st.integers(0, size) | st.sampled_from(range(0, size + 1, 4096)))
    length = data.draw(st.integers(0, size - maddr) | st.sampled_from(range(0, size - maddr + 1, 4096)))
    want = sum(1 for b in range(maddr, maddr + length) if entries[b // 4096][1] == lib.LU_USE_GUEST)
    assert ft.guest_bytes(maddr, length) == want


def test_scan_reports_totals_beyond_its_output_arrays():
    entries = [(1, lib.LU_USE_GUEST), (DOMID_INVALID, lib.LU_USE_FREE)] * 200
    ft, _ram = table_from(entries)
    assert len(ft.extents(1, lib.LU_USE_GUEST)) == 200


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["alloc", "alloc-contig", "free"]),
                              st.integers(1, 40)), max_size=40))
def test_allocator_free_list_always_equals_the_table(ops):
    n = 512
    entries = [(DOMID_INVALID, lib.LU_USE_FREE)] * n
    ft, _ram = table_from(entries)
    ft.mark(0, 16, 0x7FF2, lib.LU_USE_RESERVED)
    alloc = FrameAllocator(ft)
    held = []
    for op, size in ops:
        if op == "free" and held:
            alloc.release(held.pop(size % len(held)))
            continue
        try:
            got = alloc.alloc(size, 5, lib.LU_USE_GUEST, contiguous=(op == "alloc-contig"), align=4)
        except OutOfMemory:
            continue
        assert sum(c for _, c in got) == size
        if op == "alloc-contig":
            assert len(got) == 1 and got[0][0] % 4 == 0
        held.append(got)
    assert alloc.free_extents() == ft.extents(DOMID_INVALID, lib.LU_USE_FREE)
    assert ft.count(5, lib.LU_USE_GUEST) == sum(c for ext in held for _, c in ext)
    assert ft.all_match(0, 16, 0x7FF2, lib.LU_USE_RESERVED)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_marking_writes_exactly_its_range_whatever_it_already_holds(data):
    """Marking skips pages of the table that already hold the value; every
    entry of the range must still end up holding it (a page whose first
    entries hold it and the rest do not is not skipped), and nothing
    outside the range changes."""
    nr = data.draw(st.integers(1, 1200))
    proto = (7, 3, 0, 0x12, 0x80000001, 0)          # owner, use, flags, type_info, count_info, reserved
    other = (1, 2, 0, 0, 1, 0)
    # Runs of entries already holding the value, others not: pages mixed.
    kinds = data.draw(st.lists(st.tuples(st.booleans(), st.integers(1, 300)), min_size=1, max_size=12))
    before = [e for same, n in kinds for e in [proto if same else other] * n][:nr]
    before += [other] * (nr - len(before))
    # A table whose entries are 16-byte aligned, or (a caller's bug) not.
    shift = data.draw(st.sampled_from([0, 8]))
    ram = BufferRAM(nr * ENTRY_SIZE + 32)
    shift += (-int(ffi.cast("uintptr_t", ram.base))) % 16
    for i, e in enumerate(before):
        FRAME.pack_into(ram.buf, shift + i * ENTRY_SIZE, *e)
    table = FrameTable(ram, shift, nr)
    first = data.draw(st.integers(0, nr - 1))
    count = data.draw(st.integers(0, nr - first))
    table.mark(first, count, proto[0], proto[1], type_info=proto[3], count_info=proto[4])
    after = [FRAME.unpack_from(ram.buf, shift + i * ENTRY_SIZE) for i in range(nr)]
    assert after == [proto if first <= i < first + count else e for i, e in enumerate(before)]


def test_pending_guest_frames_are_written_with_the_references_taken_before():
    """After a live update an HVM or PVH guest's entries are written once
    the guests run (FrameTable.pending_guest_frames): until then they hold
    anything (xen#1's words, never trusted, never changed), a reference
    taken on one of them counts on the entry pass 0 would write, type
    checks included, and write_pending writes every one with them."""
    nr = 64
    table, ram = table_from([(3, lib.LU_USE_XENHEAP)] * nr)
    # A stale word typed L1 with one reference: a reference checked against
    # it would refuse WRITABLE and allow L1, the pending entry the reverse.
    stale = (3, lib.LU_USE_XENHEAP, 0, (lib.LU_PGT_L1 << lib.LU_PGT_TYPE_SHIFT) | 1, 9, 0)
    for i in range(nr):
        FRAME.pack_into(ram.buf, i * ENTRY_SIZE, *stale)
    ram.populate = lambda maddr, length, write=True: True
    table.pending_guest_frames([(40, 8, 2), (10, 20, 1)])
    allocated = lib.LU_PGC_ALLOCATED | 1
    writable = lib.LU_PGT_WRITABLE << lib.LU_PGT_TYPE_SHIFT
    table.get_ref(15, lib.LU_PGT_WRITABLE)
    table.get_ref(15)
    table.get_ref(47, lib.LU_PGT_WRITABLE)
    table.get_ref(29, lib.LU_PGT_WRITABLE)
    table.put_ref(29, lib.LU_PGT_WRITABLE)
    # Typed as pass 0 leaves it (none), not as the stale word says.
    with pytest.raises(RefError):
        table.get_ref(15, lib.LU_PGT_L1)
    assert [FRAME.unpack_from(ram.buf, i * ENTRY_SIZE) for i in range(nr)] == [stale] * nr
    table.get_ref(5)                                               # not pending: the table's
    assert table.entry(5)["count_info"] == 10
    table.write_pending()
    for mfn in list(range(10, 30)) + list(range(40, 48)):
        e = table.entry(mfn)
        assert (e["owner"], e["use"]) == (1 if mfn < 30 else 2, "guest")
        want = {15: (allocated + 2, writable | 1), 47: (allocated + 1, writable | 1)}.get(mfn, (allocated, 0))
        assert (e["count_info"], e["type_info"]) == want, mfn
    for mfn in list(range(0, 10)) + list(range(30, 40)) + list(range(48, nr)):
        assert table.entry(mfn)["owner"] == 3, mfn
    # Done: references go to the table itself.
    table.get_ref(20)
    assert table.entry(20)["count_info"] == allocated + 1
