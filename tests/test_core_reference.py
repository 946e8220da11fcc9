"""The C core against its plain-Python reference (bench/reference.py) on
random data: frame-table scans and marking, MFN arrays, the stream's
packing, unpacking and framing check, and xen#1's blackout passes (PV page
types, the image digest, the quiesce sweep), outputs compared exactly."""
import inspect
import itertools
import random
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import reference as ref
from bench.hostdata import make_host
from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.guest import P2M
from xen_public import lurecords as R
from hyperv_sim.liveupdate import save
from hyperv_sim.liveupdate.quiesce import Quiesce, QuiesceTimeout
from hyperv_sim.liveupdate.stream import DOMAIN_HEADER, IMAGE_HEADER, RECORD_HEADER, iter_sections
from xen_public import lustream as ls

PAGE = ref.PAGE_SIZE
KNOWN = tuple(ls.ALL_RECORD_TYPES)
OWNERS = [0, 1, 7, 0x7FF0, 0x7FF4]
quick = settings(deadline=None, max_examples=150)


# ---------------------------------------------------------------- frame table

@st.composite
def tables(draw):
    """Raw frame tables made of runs (as real ones are), every field varied:
    uses past LU_USE_MAX, all page types, pinned or not, non-zero flags and
    reserved."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 12))):
        entry = ref.FRAME.pack(draw(st.sampled_from(OWNERS)), draw(st.integers(0, lib.LU_USE_MAX + 1)),
                               draw(st.integers(0, 255)),
                               draw(st.integers(0, 15)) << 28 | draw(st.sampled_from([0, lib.LU_PGT_PINNED])) |
                               draw(st.integers(0, 3)),
                               draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
        out += entry * draw(st.integers(1, 40))
    return out


def c_frames(buf):
    return ffi.from_buffer("struct lu_frame[]", buf, require_writable=True)


@st.composite
def table_and_range(draw):
    buf = draw(tables())
    nr = len(buf) // ref.FRAME_SIZE
    first = draw(st.integers(0, nr))
    end = draw(st.integers(first, nr))
    owner, use, _, _, _, _ = ref.FRAME.unpack_from(buf, draw(st.integers(0, nr - 1)) * ref.FRAME_SIZE)
    if draw(st.booleans()):
        owner, use = draw(st.sampled_from(OWNERS)), draw(st.integers(0, lib.LU_USE_MAX))
    # Output arrays too small, exactly right, or roomy: totals beyond max_out.
    return buf, first, end, owner, use, draw(st.integers(0, 8))


@quick
@given(table_and_range())
def test_scan_and_count(case):
    buf, first, end, owner, use, cap = case
    want = ref.frames_scan(buf, first, end, owner, use)
    starts, lengths = ffi.new("uint64_t[]", cap), ffi.new("uint64_t[]", cap)
    total = lib.lu_frames_scan(c_frames(buf), first, end, owner, use, starts, lengths, cap)
    assert total == len(want)
    assert [(starts[i], lengths[i]) for i in range(min(cap, total))] == want[:cap]
    assert lib.lu_frames_count(c_frames(buf), first, end, owner, use) == \
        ref.frames_count(buf, first, end, owner, use) == sum(n for _, n in want)
    assert lib.lu_frames_find_mismatch(c_frames(buf), first, end, owner, use) == \
        ref.frames_find_mismatch(buf, first, end, owner, use)


@quick
@given(table_and_range())
def test_use_runs_typed_and_histogram(case):
    buf, first, end, owner, _, cap = case
    want = ref.frames_use_runs(buf, first, end)
    starts, lengths, uses = ffi.new("uint64_t[]", cap), ffi.new("uint64_t[]", cap), ffi.new("uint8_t[]", cap)
    total = lib.lu_frames_use_runs(c_frames(buf), first, end, starts, lengths, uses, cap)
    assert total == len(want)
    assert [(starts[i], lengths[i], uses[i]) for i in range(min(cap, total))] == want[:cap]

    want = ref.frames_typed(buf, first, end, owner)
    mfns, types = ffi.new("uint64_t[]", cap), ffi.new("uint32_t[]", cap)
    total = lib.lu_frames_typed(c_frames(buf), first, end, owner, mfns, types, cap)
    assert total == len(want)
    assert [(mfns[i], types[i]) for i in range(min(cap, total))] == want[:cap]

    # The C core adds to the counts it is given.
    counts = ffi.new("uint64_t[]", [5] * lib.LU_USE_MAX)
    lib.lu_frames_histogram(c_frames(buf), first, end, counts)
    assert [c - 5 for c in counts] == ref.frames_histogram(buf, first, end)


@settings(deadline=None, max_examples=100)
@given(tables(), st.data())
def test_marking_rebuilds_the_same_table(buf, data):
    nr = len(buf) // ref.FRAME_SIZE
    c_buf, py_buf = bytearray(buf), bytearray(buf)
    for _ in range(data.draw(st.integers(1, 6))):
        first = data.draw(st.integers(0, nr))
        count = data.draw(st.integers(0, nr - first))
        args = (data.draw(st.sampled_from(OWNERS)), data.draw(st.integers(0, 255)),
                data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, 2**32 - 1)))
        lib.lu_frames_set(c_frames(c_buf), first, count, *args)
        ref.frames_set(py_buf, first, count, *args)
        assert c_buf == py_buf


def test_a_host_rebuilt_from_its_marks_is_the_same_in_both():
    host = make_host(memory=1 << 30, nr_domains=8)
    c_buf, py_buf = bytearray(len(host.ram.buf)), bytearray(len(host.ram.buf))
    for mark in host.marks:
        lib.lu_frames_set(c_frames(c_buf), *mark)
        ref.frames_set(py_buf, *mark)
    assert c_buf == py_buf
    # And the realistic table scans alike, PV page types included.
    buf, nr = host.ram.buf, host.nr_frames
    for dom in host.domains:
        starts, lengths = ffi.new("uint64_t[]", 256), ffi.new("uint64_t[]", 256)
        n = lib.lu_frames_scan(c_frames(buf), 0, nr, dom.domid, lib.LU_USE_GUEST, starts, lengths, 256)
        assert [(starts[i], lengths[i]) for i in range(n)] == ref.frames_scan(buf, 0, nr, dom.domid, lib.LU_USE_GUEST)
        for _, mfn, count in dom.p2m:
            typed = ref.frames_typed(buf, mfn, mfn + count, dom.domid)
            assert [(m, t >> lib.LU_PGT_TYPE_SHIFT) for m, t in typed] == \
                [(m, t) for m, t, _ in dom.types if mfn <= m < mfn + count]


# ---------------------------------------------------------------- MFN arrays

@st.composite
def extents(draw, max_frames=4096):
    """Disjoint (mfn, count) extents in any order."""
    cuts = sorted(draw(st.sets(st.integers(0, max_frames), min_size=2, max_size=16)))
    runs = [(a, b - a) for a, b in zip(cuts, cuts[1:])]
    return draw(st.permutations(runs[::2]))


@quick
@given(extents())
def test_mfn_array(exts):
    # handover.StreamPages: the sorted extents' frames, one run at a time.
    nr = sum(n for _, n in exts)
    out = ffi.new("uint64_t[]", max(nr, 1))
    i = 0
    for mfn, count in sorted(exts):
        lib.lu_fill_run(out + i, mfn, count)
        i += count
    assert bytes(ffi.buffer(out, 8 * nr)) == ref.mfn_array(exts)


@quick
@given(extents(), st.integers(0, 64), st.randoms(use_true_random=False))
def test_p2m_array(exts, holes, rnd):
    # gfn runs with holes between them, mapped to shuffled machine extents.
    p2m, gfn = [], 0
    for mfn, count in exts:
        gfn += rnd.randint(0, holes)
        p2m.append((gfn, mfn, count))
        gfn += count
    nr_pages = gfn + rnd.randint(0, holes)
    if not nr_pages:
        return
    got = P2M(p2m).array(nr_pages)
    assert bytes(ffi.buffer(got, 8 * nr_pages)) == ref.p2m_array(p2m, nr_pages)


# ---------------------------------------------------------------- packing and unpacking

@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300))
def test_hash64(data):
    assert lib.lu_hash64(ffi.from_buffer("uint8_t[]", data), len(data)) == ref.hash64(data)


@quick
@given(st.integers(0, 5 * PAGE), st.integers(0, 2), st.integers(0, 2**32))
def test_scatter_and_gather(length, extra_pages, seed):
    rnd = random.Random(seed)
    data = rnd.randbytes(length)
    nr = -(-length // PAGE) + extra_pages
    ram_frames = 2 * nr + 1
    mfns = rnd.sample(range(ram_frames), nr)        # any order: xen#1 sorts, the core need not
    garbage = rnd.randbytes(ram_frames * PAGE)     # the zero fill must be seen
    c_ram, py_ram = bytearray(garbage), bytearray(garbage)
    c_mfns = ffi.new("uint64_t[]", mfns or [0])
    lib.lu_stream_scatter(ffi.from_buffer("uint8_t[]", c_ram, require_writable=True), c_mfns, nr,
                          ffi.from_buffer("uint8_t[]", data), length)
    ref.stream_scatter(py_ram, mfns, data)
    assert c_ram == py_ram
    out = ffi.new("uint8_t[]", nr * PAGE or 1)
    lib.lu_stream_gather(ffi.from_buffer("uint8_t[]", c_ram), c_mfns, nr, out)
    gathered = ref.stream_gather(py_ram, mfns)
    assert bytes(ffi.buffer(out, nr * PAGE)) == gathered
    assert gathered[:length] == data and not any(gathered[length:])


# ---------------------------------------------------------------- the framing check

def c_validate(buf, known=KNOWN):
    c_known = ffi.new("uint32_t[]", list(known) or [0])
    bad_off, bad_type = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    n = lib.lu_stream_validate(ffi.from_buffer("uint8_t[]", buf), len(buf), c_known, len(known), bad_off, bad_type)
    return n, bad_off[0], bad_type[0]


def same_verdict(buf, known=KNOWN):
    got = c_validate(buf, known)
    assert got == ref.stream_validate(buf, known)
    return got[0]


RECORD_TYPES = [ls.REC_END, ls.REC_LU_VERSION, ls.REC_LU_DOMAIN, ls.REC_LU_P2M_EXTENTS,
                ls.REC_LU_TIMINGS | ls.REC_OPTIONAL, 0xC0000099, 0x40000099, 0x00000099]


@st.composite
def records(draw):
    rtype = draw(st.sampled_from(RECORD_TYPES))
    body = draw(st.binary(max_size=24))
    pad = bytes(-len(body) % 8)
    if pad and draw(st.integers(0, 9)) == 0:
        pad = draw(st.binary(min_size=len(pad), max_size=len(pad)))
    length = len(body) if draw(st.integers(0, 19)) else draw(st.sampled_from([
        len(body) + 8, (128 << 20) + 1, 2**32 - 1]))
    return RECORD_HEADER.pack(rtype, length) + body + pad


@st.composite
def streams(draw):
    """Streams near the valid ones: the right shape mostly, every part
    sometimes wrong, then possibly cut short or with a byte flipped."""
    head = IMAGE_HEADER.pack(ls.STREAM_MARKER, ls.STREAM_ID, ls.STREAM_VERSION, 0)
    if draw(st.integers(0, 9)) == 0:
        head = bytearray(head)
        head[draw(st.integers(0, len(head) - 1))] ^= draw(st.integers(1, 255))
    out = bytearray(head)
    out += RECORD_HEADER.pack(ls.REC_LU_VERSION, 16) + bytes(16) if draw(st.integers(0, 9)) else b""
    for section in range(draw(st.integers(1, 4))):
        if section:
            dtype = draw(st.sampled_from([1, 2, 1, 2, 0, 3]))
            shift = 12 if draw(st.integers(0, 9)) else 13
            out += DOMAIN_HEADER.pack(dtype, shift, 0, 4, 18)
        for rec in draw(st.lists(records(), max_size=5)):
            out += rec
        if draw(st.integers(0, 9)):
            out += RECORD_HEADER.pack(ls.REC_END, 0)
    if draw(st.integers(0, 3)) == 0:
        del out[draw(st.integers(0, len(out))):]
    if out and draw(st.integers(0, 3)) == 0:
        out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


@settings(deadline=None, max_examples=300)
@given(streams(), st.sets(st.sampled_from(KNOWN + (0x40000099,))))
def test_validate_agrees_on_random_streams(buf, known):
    same_verdict(buf, tuple(sorted(known)))


@pytest.fixture(scope="module")
def real_host():
    return make_host(memory=1 << 30, nr_domains=8)


@pytest.fixture(scope="module")
def real_stream(real_host):
    return real_host.stream


def test_a_realistic_stream_validates(real_stream):
    n = same_verdict(real_stream)
    assert n > 8 * 5


@quick
@given(st.data())
def test_validate_agrees_on_a_corrupted_realistic_stream(real_stream, data):
    buf = bytearray(real_stream)
    how = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(buf) - 1))
    if how == "flip":
        buf[pos] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del buf[pos:]
    elif how == "insert":
        buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        del buf[pos:pos + data.draw(st.integers(1, 16))]
    same_verdict(bytes(buf))


def _corrupt(stream, where, value):
    buf = bytearray(stream)
    buf[where:where + len(value)] = value
    return bytes(buf)


def test_every_verdict_is_reached_and_agreed(real_stream):
    """Each error code at least once, so agreement is never only on 'ok'."""
    s = real_stream
    (_, system), _ = itertools.islice(iter_sections(s), 2)
    end_of_system = system[-1][0]
    domain = end_of_system + RECORD_HEADER.size
    first_domain_record = domain + DOMAIN_HEADER.size
    cases = {
        lib.LU_STREAM_TRUNCATED: [s[:10], s[:first_domain_record - 3],
                                  _corrupt(s, IMAGE_HEADER.size + 4, b"\xff\xff\xf0\x00")],
        lib.LU_STREAM_BAD_HEADER: [_corrupt(s, 3, b"\x00"), _corrupt(s, 8, b"XENG"), _corrupt(s, 17, b"\x01")],
        lib.LU_STREAM_UNKNOWN_RECORD: [_corrupt(s, first_domain_record, b"\x99\x00\x00\x40")],
        lib.LU_STREAM_BAD_PADDING: [s[:IMAGE_HEADER.size] + RECORD_HEADER.pack(ls.REC_LU_VERSION, 3) +
                                    b"abc\x00\x00\x00\x00\x01" + s[IMAGE_HEADER.size + 24:]],
        lib.LU_STREAM_TOO_LARGE: [_corrupt(s, first_domain_record + 4, b"\x01\x00\x00\x08")],
        lib.LU_STREAM_BAD_DOMAIN: [_corrupt(s, domain, b"\x03"), _corrupt(s, domain + 4, b"\x0d")],
        lib.LU_STREAM_NO_END: [s[:end_of_system], s[:-8]],
        lib.LU_STREAM_LU_ONLY_HEADER: [_corrupt(s, IMAGE_HEADER.size, b"\x01")],
        lib.LU_STREAM_RESERVED: [_corrupt(s, 18, b"\x01"), _corrupt(s, 23, b"\x80"),
                                 _corrupt(s, domain + 6, b"\x01"), _corrupt(s, domain + 7, b"\x01")],
    }
    for code, bufs in cases.items():
        for buf in bufs:
            assert same_verdict(buf) == code, (code, c_validate(buf))
    assert same_verdict(s, [t for t in KNOWN if t != ls.REC_LU_DOMAIN]) == lib.LU_STREAM_UNKNOWN_RECORD


# ---------------------------------------------------------------- xen#1's blackout passes

PV_ITEM = R.PV_PAGE_TYPES.item.size
SENTINEL = 0xA5


@st.composite
def table_and_extents(draw):
    """A table, extents over it in any order (overlapping, empty, up to its
    end), an owner, a pinned flag and an output array that may be too small."""
    buf = draw(tables())
    nr = len(buf) // ref.FRAME_SIZE
    exts = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, nr))
        exts.append((start, draw(st.integers(0, nr - start))))
    owner = draw(st.sampled_from(OWNERS))
    flag = draw(st.sampled_from([R.PT_PINNED, 0, 2**32 - 1]) | st.integers(0, 2**32 - 1))
    return buf, exts, owner, flag, draw(st.integers(0, 8) | st.integers(0, 500))


def c_pv_page_types(buf, exts, owner, flag, cap):
    """(total, the output array as bytes): cap items and two more, all
    SENTINEL before the call, so a write past max_out shows."""
    out = ffi.new("uint8_t[]", [SENTINEL] * ((cap + 2) * PV_ITEM))
    starts = ffi.new("uint64_t[]", [m for m, _ in exts] or [0])
    counts = ffi.new("uint64_t[]", [n for _, n in exts] or [0])
    total = lib.lu_save_pv_page_types(c_frames(buf), starts, counts, len(exts), owner, flag, out, cap)
    return total, bytes(ffi.buffer(out))


@quick
@given(table_and_extents())
def test_save_pv_page_types(case):
    buf, exts, owner, flag, cap = case
    before = bytes(buf)
    total, items = ref.save_pv_page_types(buf, exts, owner, flag, cap)
    got_total, out = c_pv_page_types(buf, exts, owner, flag, cap)
    assert got_total == total
    assert len(items) == min(cap, total) * PV_ITEM
    # The first min(cap, total) items, and not one byte more.
    assert out[:len(items)] == items
    assert out[len(items):] == bytes([SENTINEL]) * (len(out) - len(items))
    assert bytes(buf) == before


def test_save_pv_page_types_of_a_realistic_host(real_host):
    """The record body save.py builds for each PV domain, with the output
    array big enough at once and too small at first (the second pass): the
    reference's items, and decoded, the page types the builder gave."""
    host = real_host
    hv = types.SimpleNamespace(frametable=host.table)
    pv = [d for d in host.domains if d.dtype == "pv"]
    assert len(pv) >= 3 and all(d.types for d in pv)
    for d in pv:
        exts = [(mfn, n) for _, mfn, n in d.p2m]
        total, items = ref.save_pv_page_types(host.ram.buf, exts, d.domid, R.PT_PINNED, 1 << 20)
        assert total == len(d.types)
        want = R.PV_PAGE_TYPES.head.pack(total, 0) + items
        for nr_frames in (d.nr_pages, 0):      # save's first guess: roomy, then too small
            dom = types.SimpleNamespace(domid=d.domid, p2m=d.p2m, nr_frames=nr_frames)
            body = save._pv_page_types(hv, dom)
            assert body == want
        assert sorted(R.PV_PAGE_TYPES.item_tuples(R.PV_PAGE_TYPES.decode(body))) == d.types


def sized_binary(lo, hi):
    """Bytes of a length drawn evenly from [lo, hi]: st.binary alone keeps
    to a few bytes, short of the 32-byte blocks."""
    return st.integers(lo, hi).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@settings(deadline=None, max_examples=300)
@given(sized_binary(0, 300), st.integers(0, 7))
def test_digest64(data, misalign):
    # Any alignment: the C core reads words with memcpy.
    buf = bytes(misalign) + data
    assert lib.lu_digest64(ffi.from_buffer("uint8_t[]", buf) + misalign, len(data)) == ref.digest64(data)


def test_digest64_of_staged_pages():
    # What image_fingerprint digests: runs of whole frames.
    data = random.Random(4).randbytes(3 * PAGE + 32 + 8 + 5)
    for length in (3 * PAGE, len(data)):
        assert lib.lu_digest64(ffi.from_buffer("uint8_t[]", data), length) == ref.digest64(data[:length])


@quick
@given(sized_binary(1, 100), st.lists(st.integers(1, 255), min_size=1, max_size=8))
def test_digest64_sees_every_single_byte_flip(data, masks):
    """Whatever byte changes, in the 32-byte blocks, the words after them
    or the tail, the digest changes (each lane step and the fold are
    bijective in each input, so this holds for every buffer)."""
    want = lib.lu_digest64(ffi.from_buffer("uint8_t[]", data), len(data))
    for i in range(len(data)):
        buf = bytearray(data)
        buf[i] ^= masks[i % len(masks)]
        assert lib.lu_digest64(ffi.from_buffer("uint8_t[]", buf), len(buf)) != want, (i, masks[i % len(masks)])


PAUSE_OFFSET = ffi.offsetof("struct lu_vcpu", "pause_req")
VCPU_SIZE = ffi.sizeof("struct lu_vcpu")
RUNSTATES = [lib.LU_RUN_RUNNABLE, lib.LU_RUN_BLOCKED_IO, lib.LU_RUN_BLOCKED_RING]


def c_sweep(states, rnd=None, order=None):
    """lu_quiesce_sweep over vCPUs built from (on_cpu, quiesce_req, runstate,
    pause_req), every other byte random (order: where each lives in the
    struct array).  -> (pause_req after, waiting, first), after checking
    that the sweep wrote no other byte."""
    n = len(states)
    order = list(range(n)) if order is None else order
    arr = ffi.new("struct lu_vcpu[]", max(n, 1))
    if rnd is not None:
        ffi.buffer(arr)[:] = rnd.randbytes(len(ffi.buffer(arr)))
    for k, (on_cpu, quiesce_req, runstate, pause_req) in enumerate(states):
        v = arr[order[k]]
        v.on_cpu, v.quiesce_req, v.runstate, v.pause_req = on_cpu, quiesce_req, runstate, pause_req
    before = bytearray(ffi.buffer(arr))
    ptrs = ffi.new("struct lu_vcpu *[]", [arr + order[k] for k in range(n)] or [ffi.NULL])
    first = ffi.new("uint32_t *", 0xDEAD)
    waiting = lib.lu_quiesce_sweep(ptrs, n, first)
    pause = [arr[order[k]].pause_req for k in range(n)]
    for k in range(n):
        at = order[k] * VCPU_SIZE + PAUSE_OFFSET
        before[at:at + 4] = pause[k].to_bytes(4, "little")
    assert bytes(ffi.buffer(arr)) == bytes(before), "the sweep wrote more than pause requests"
    return pause, waiting, first[0]


@quick
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from(RUNSTATES), st.integers(0, 2)),
                max_size=12), st.randoms(use_true_random=False), st.data())
def test_quiesce_sweep(states, rnd, data):
    order = data.draw(st.permutations(range(len(states))))
    assert c_sweep(states, rnd, order) == ref.quiesce_sweep(states)


def test_quiesce_sweep_contract():
    """Spelled out: what one sweep pauses, what it leaves alone, and what
    it counts as still to wait for."""
    RUN, IO, RING = RUNSTATES
    cases = [  # (on_cpu, quiesce_req, runstate, pause_req) -> (pause_req after, waits)
        ((0, 1, RUN, 0), (1, False)),     # off its pCPU, asked: paused
        ((0, 1, RING, 0), (1, False)),    # waiting for its backend is a boundary too
        ((0, 1, IO, 0), (0, True)),       # mid-I/O: not paused until answered
        ((1, 1, RUN, 0), (0, True)),      # on a pCPU: left to the pCPU
        ((1, 1, RUN, 1), (1, True)),      # on a pCPU though asked to pause: still running
        ((0, 0, RUN, 0), (0, True)),      # never asked: left alone
        ((0, 0, IO, 1), (1, False)),      # paused already, off its pCPU: done
        ((0, 1, IO, 1), (1, False)),      # (quiesce.py clears this one's request first)
    ]
    for state, (pause, waits) in cases:
        assert c_sweep([state]) == ([pause], int(waits), 0 if waits else 1), state
    states = [s for s, _ in cases]
    pause, waiting, first = c_sweep(states)
    assert pause == [p for _, (p, _) in cases]
    assert waiting == sum(w for _, (_, w) in cases) and first == 2
    assert c_sweep([]) == ([], 0, 0)
    # Off the pCPU, answered: the next sweep takes them.
    assert c_sweep([(0, 1, RUN, 0), (0, 1, RUN, 1)]) == ([1, 1], 0, 2)


class FakeVcpus:
    """Just enough of a hypervisor for Quiesce: domains whose vCPUs are
    hand-built struct lu_vcpu, a scheduler whose slice nobody reads."""

    def __init__(self, *doms):
        self.domains, self._keep = {}, []
        for domid, (dtype, states) in enumerate(doms):
            arr = ffi.new("struct lu_vcpu[]", len(states))
            for i, (on_cpu, runstate, pause_req) in enumerate(states):
                arr[i].on_cpu, arr[i].runstate, arr[i].pause_req = on_cpu, runstate, pause_req
            self._keep.append(arr)
            self.domains[domid] = types.SimpleNamespace(
                domid=domid, name="d%d" % domid, dtype=dtype, dying=False, paused=False, ioreq=None,
                vcpu_list=lambda arr=arr, n=len(states): [arr + i for i in range(n)])
        self.sched = types.SimpleNamespace(set_slice=lambda steps: None, set_idle_max=lambda ns: None)


def test_quiesce_pauses_hvm_and_pvh_vcpus_at_boundaries_only():
    RUN, IO, RING = RUNSTATES
    hv = FakeVcpus(("pv", [(0, RUN, 0)]), ("hvm", [(0, RUN, 0), (0, RING, 0)]), ("pvh", [(0, RUN, 1)]))
    Quiesce(hv).hvm_first(timeout_s=1)
    assert [v.pause_req for d in (1, 2) for v in hv.domains[d].vcpu_list()] == [1, 1, 1]
    assert hv.domains[0].vcpu_list()[0].pause_req == 0 and hv.domains[0].vcpu_list()[0].quiesce_req == 0

    # Paused by the administrator mid-I/O: not a boundary, so not paused
    # until its device model answers; on a pCPU: not until it leaves it.
    for state, why in [((0, IO, 1), "waiting for its device model"), ((1, RUN, 0), "runnable")]:
        hv = FakeVcpus(("pv", [(0, RUN, 0)]), ("hvm", [(0, RUN, 0), state]))
        with pytest.raises(QuiesceTimeout, match=r"vCPU 1 of d1 \(d1\) .*: %s" % why):
            Quiesce(hv).hvm_first(timeout_s=0.01)
        v0, v1 = hv.domains[1].vcpu_list()
        assert (v0.pause_req, v1.pause_req) == (1, 0)


def test_a_quiesce_timeout_names_the_device_model_that_cannot_answer():
    """An HVM vCPU stuck on I/O names its device model's domain, and who
    stopped it: the administrator, this update's own quiesce (a device
    model in a PVH domain), or no one because it is gone."""
    RUN, IO, _ = RUNSTATES
    base = "waiting for its device model"
    cases = [(1, False, "%s in d1 (d1), which this update paused first: it is an HVM or PVH domain" % base),
             (1, True, "%s in d1 (d1), which the administrator paused (unpause it and retry)" % base),
             (0, False, "%s in d0 (d0)" % base),
             (9, False, "%s, whose domain d9 no longer exists" % base)]
    for dm_domid, admin_paused, why in cases:
        hv = FakeVcpus(("pv", [(0, RUN, 0)]), ("pvh", [(0, RUN, 0)]), ("hvm", [(0, IO, 0)]))
        hv.domains[1].paused = admin_paused
        hv.domains[2].ioreq = types.SimpleNamespace(dm_domid=dm_domid)
        with pytest.raises(QuiesceTimeout) as e:
            Quiesce(hv).hvm_first(timeout_s=0.01)
        assert str(e.value) == "vCPU 0 of d2 (d2) never reached a restartable boundary within 10 ms: " + why


def test_the_reference_does_not_call_the_core():
    """A reference that called the C core could not catch anything: it
    shares the core's enum values (lib.LU_*), nothing else."""
    source = inspect.getsource(ref)
    assert "lib.lu_" not in source and "ffi" not in source


# ---------------------------------------------------------------- xen#2's per-page records

@st.composite
def pv_type_items(draw):
    """LU_PV_PAGE_TYPES items over a small host, sorted non-overlapping
    extents, and a pinned flag: types in and out of range, frames inside
    and outside the extents, pinned L4s from none to several."""
    nr = draw(st.integers(1, 300))
    cuts = sorted(draw(st.lists(st.integers(0, nr), max_size=8, unique=True)))
    extents = [(a, b - a) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    flag = draw(st.sampled_from([R.PT_PINNED, 2, 0xFFFFFFFF]))
    items = []
    for _ in range(draw(st.integers(0, 60))):
        if extents and draw(st.integers(0, 9)):
            start, count = draw(st.sampled_from(extents))
            mfn = start + draw(st.integers(0, count - 1))
        else:
            mfn = draw(st.integers(0, nr + 5))
        t = draw(st.integers(1, 5) if draw(st.integers(0, 9)) else st.integers(0, 2**32 - 1))
        items.append((mfn, t, draw(st.sampled_from([0, flag, flag ^ 1]))))
    return nr, extents, flag, b"".join(R.PV_PAGE_TYPES.item.pack(*i) for i in items)


@quick
@given(pv_type_items())
def test_pv_types_check(case):
    nr, extents, flag, items = case
    n = len(items) // PV_ITEM
    starts = ffi.new("uint64_t[]", [s for s, _ in extents] or [0])
    counts = ffi.new("uint64_t[]", [c for _, c in extents] or [0])
    pinned, nr_pinned = ffi.new("uint64_t *", 12345), ffi.new("uint64_t *", 99)
    bad = lib.lu_pv_types_check(ffi.from_buffer(items), n, starts, counts, len(extents), flag,
                                pinned, nr_pinned)
    want_bad, want_nr, want_first = ref.pv_types_check(items, extents, flag)
    assert bad == want_bad
    assert nr_pinned[0] == want_nr
    if want_nr:
        assert pinned[0] == want_first


@quick
@given(tables(), st.data())
def test_pv_types_apply_and_select(buf, data):
    nr = len(buf) // ref.FRAME_SIZE
    items = b"".join(R.PV_PAGE_TYPES.item.pack(data.draw(st.integers(0, nr - 1)), data.draw(st.integers(1, 5)),
                                               data.draw(st.integers(0, 3)))
                     for _ in range(data.draw(st.integers(0, 40))))
    n = len(items) // PV_ITEM
    c_buf, py_buf = bytearray(buf), bytearray(buf)
    lib.lu_pv_types_apply(c_frames(c_buf), ffi.from_buffer(items), n)
    ref.pv_types_apply(py_buf, items)
    assert c_buf == py_buf
    for page_type in (lib.LU_PGT_L1, lib.LU_PGT_L4, lib.LU_PGT_SEG_DESC):
        want = ref.pv_types_select(items, page_type)
        cap = data.draw(st.integers(0, len(want) + 2))
        out = ffi.new("uint64_t[]", [7] * (cap + 2))
        total = lib.lu_pv_types_select(ffi.from_buffer(items), n, page_type, out, cap)
        assert total == len(want)
        assert list(out)[:min(cap, total)] == want[:cap]
        assert list(out)[min(cap, total):] == [7] * (cap + 2 - min(cap, total))
