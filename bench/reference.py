"""Plain-Python references for the C core's live-update path.

The same algorithms as csrc/lu_frames.c, lu_stream.c, lu_pagetable.c,
lu_save.c, lu_digest.c and lu_quiesce.c, over the same inputs (the frame
table's raw bytes, 16 per frame; host RAM as a writable buffer; the stream
as bytes; vCPUs as the few fields the sweep reads) and with the same
outputs.  The tests hold the C core to them (tests/test_core_reference.py)
and the core benchmark times them against it (bench/core.py).  Nothing
here calls into the C core: only its enum values are shared, they are the
contract.
"""
import struct

from hyperv_sim._lu_core import lib
from xen_public import lustream as ls

PAGE_SIZE = 4096
M64 = (1 << 64) - 1

# ---------------------------------------------------------------- frame table

# struct lu_frame: owner, use, flags, type_info, count_info, reserved.
FRAME = struct.Struct("<HBBIII")
FRAME_SIZE = FRAME.size
_OWNER, _USE, _TYPE_INFO = (0, "H"), (2, "B"), (4, "I")     # byte offset, format


def _field(table, first, end, field):
    """One field of frames [first, end): a strided view of the table, no
    copy, in native byte order as the C core reads its own struct."""
    offset, fmt = field
    nr = len(table) // FRAME_SIZE
    if not 0 <= first <= end <= nr:
        raise ValueError("frame range [%d, %d) outside [0, %d)" % (first, end, nr))
    size = struct.calcsize(fmt)
    step = FRAME_SIZE // size
    view = memoryview(table).cast("B")[:nr * FRAME_SIZE].cast(fmt)
    return view[first * step + offset // size:end * step:step]


def frames_set(table, first, count, owner, use, type_info=0, count_info=0):
    """lu_frames_set: frames [first, first + count) become one prototype entry."""
    if not 0 <= first <= first + count <= len(table) // FRAME_SIZE:
        raise ValueError("frames [%d, %d) outside the table" % (first, first + count))
    proto = FRAME.pack(owner, use, 0, type_info, count_info, 0)
    table[first * FRAME_SIZE:(first + count) * FRAME_SIZE] = proto * count


def frames_scan(table, first, end, owner, use):
    """lu_frames_scan: [(start, length)] of the runs in [first, end) whose
    owner and use match."""
    runs, start = [], None
    owners, uses = _field(table, first, end, _OWNER), _field(table, first, end, _USE)
    for mfn, o, u in zip(range(first, end), owners, uses):
        if o == owner and u == use:
            if start is None:
                start = mfn
        elif start is not None:
            runs.append((start, mfn - start))
            start = None
    if start is not None:
        runs.append((start, end - start))
    return runs


def frames_count(table, first, end, owner, use):
    """lu_frames_count: frames in [first, end) whose owner and use match."""
    n = 0
    for o, u in zip(_field(table, first, end, _OWNER), _field(table, first, end, _USE)):
        if o == owner and u == use:
            n += 1
    return n


def frames_find_mismatch(table, first, end, owner, use):
    """lu_frames_find_mismatch: the first frame in [first, end) whose owner
    or use differ, or end."""
    owners, uses = _field(table, first, end, _OWNER), _field(table, first, end, _USE)
    for mfn, o, u in zip(range(first, end), owners, uses):
        if o != owner or u != use:
            return mfn
    return end


def frames_histogram(table, first, end):
    """lu_frames_histogram: frames per use (LU_USE_MAX slots); other values
    are not counted."""
    counts = [0] * lib.LU_USE_MAX
    for u in _field(table, first, end, _USE):
        if u < lib.LU_USE_MAX:
            counts[u] += 1
    return counts


def frames_typed(table, first, end, owner):
    """lu_frames_typed: [(mfn, type_info)] of the frames in [first, end)
    owned by `owner` whose page type is L1..L4 or a descriptor page."""
    out = []
    owners, types = _field(table, first, end, _OWNER), _field(table, first, end, _TYPE_INFO)
    for mfn, o, t in zip(range(first, end), owners, types):
        if o == owner and lib.LU_PGT_L1 <= t >> lib.LU_PGT_TYPE_SHIFT <= lib.LU_PGT_SEG_DESC:
            out.append((mfn, t))
    return out


def frames_use_runs(table, first, end):
    """lu_frames_use_runs: [(start, length, use)] of the runs of one use,
    whoever owns them."""
    runs, start, current = [], first, None
    for mfn, u in zip(range(first, end), _field(table, first, end, _USE)):
        if u != current:
            if current is not None:
                runs.append((start, mfn - start, current))
            start, current = mfn, u
    if current is not None:
        runs.append((start, end - start, current))
    return runs


# ---------------------------------------------------------------- MFN arrays

def fill_run(first, count):
    """lu_fill_run: first, first + 1, ... (count of them)."""
    return list(range(first, first + count))


def mfn_array(extents):
    """The stream's MFN array as handover.StreamPages builds it: the frames
    of its extents in machine order, as the u64s written to RAM."""
    mfns = []
    for mfn, count in sorted(extents):
        mfns += fill_run(mfn, count)
    return struct.pack("<%dQ" % len(mfns), *mfns)


def p2m_array(p2m, nr_pages):
    """guest.P2M.array: every gfn's mfn from (gfn, mfn, count) extents, as
    u64s; gfns no extent covers stay 0."""
    out = [0] * nr_pages
    for gfn, mfn, count in p2m:
        if gfn + count > nr_pages:
            raise ValueError("gfns [%d, %d) past %d pages" % (gfn, gfn + count, nr_pages))
        out[gfn:gfn + count] = fill_run(mfn, count)
    return struct.pack("<%dQ" % nr_pages, *out)


# ---------------------------------------------------------------- the stream

def hash64(data):
    """lu_hash64: 8-byte words (native order, as the C memcpy reads them),
    then the tail bytes, then a final mix."""
    n8 = len(data) // 8 * 8
    h = 0x6a09e667f3bcc909 ^ len(data)
    for w in memoryview(data).cast("B")[:n8].cast("Q"):
        h = ((h ^ w) * 0x100000001b3) & M64
        h ^= h >> 29
    for b in data[n8:]:
        h = ((h ^ b) * 0x100000001b3) & M64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    return h ^ (h >> 33)


def _check_frames(ram, mfns):
    # A slice past the end would grow a bytearray or come back short.
    for mfn in mfns:
        if not 0 <= mfn < len(ram) // PAGE_SIZE:
            raise ValueError("frame 0x%x is outside RAM" % mfn)


def stream_scatter(ram, mfns, data):
    """lu_stream_scatter: data over the frames mfns (page i to mfns[i]),
    the rest of the last page, and any page past the data, zeroed."""
    _check_frames(ram, mfns)
    src = memoryview(data).cast("B")
    for i, mfn in enumerate(mfns):
        page = src[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
        ram[mfn * PAGE_SIZE:mfn * PAGE_SIZE + len(page)] = page
        ram[mfn * PAGE_SIZE + len(page):(mfn + 1) * PAGE_SIZE] = bytes(PAGE_SIZE - len(page))


def stream_gather(ram, mfns):
    """lu_stream_gather: the frames mfns, one after the other."""
    _check_frames(ram, mfns)
    view = memoryview(ram).cast("B")
    return b"".join(view[m * PAGE_SIZE:(m + 1) * PAGE_SIZE] for m in mfns)


_IMAGE_HEADER, _DOMAIN_HEADER, _RECORD_HEADER = 24, 16, 8
_RECORD_MAX = 128 << 20
_LE32, _BE32 = struct.Struct("<I"), struct.Struct(">I")


def _section(buf, off, lu_version_first, known):
    """Records from off to the section's END: (records or error, offset
    after it, bad offset, bad type), the last two as the C core leaves them."""
    n = 0
    while True:
        if len(buf) - off < _RECORD_HEADER:
            return lib.LU_STREAM_NO_END, off, off, 0
        rtype, body = _LE32.unpack_from(buf, off)[0], _LE32.unpack_from(buf, off + 4)[0]
        if lu_version_first and n == 0 and rtype != ls.REC_LU_VERSION:
            return lib.LU_STREAM_LU_ONLY_HEADER, off, off, rtype
        if body > _RECORD_MAX:
            return lib.LU_STREAM_TOO_LARGE, off, off, rtype
        padded = (body + 7) & ~7
        if padded > len(buf) - off - _RECORD_HEADER:
            return lib.LU_STREAM_TRUNCATED, off, off, rtype
        if rtype != ls.REC_END and not rtype & ls.REC_OPTIONAL and (rtype & ~ls.REC_OPTIONAL) not in known:
            return lib.LU_STREAM_UNKNOWN_RECORD, off, off, rtype
        if any(buf[off + _RECORD_HEADER + body:off + _RECORD_HEADER + padded]):
            return lib.LU_STREAM_BAD_PADDING, off, off, rtype
        n += 1
        if rtype == ls.REC_END:
            return n, off + _RECORD_HEADER + padded, off, rtype
        off += _RECORD_HEADER + padded


def stream_validate(buf, known):
    """lu_stream_validate: (records, bad_offset, bad_type); records is an
    lu_stream_error (< 0) for a stream xen#2 refuses, and bad_offset and
    bad_type are what the C core leaves in its out-parameters."""
    known = set(known)
    if len(buf) < _IMAGE_HEADER:
        return lib.LU_STREAM_TRUNCATED, 0, 0
    # marker, "XENF", version 3, options 0 (little-endian records).
    if buf[:8] != b"\xff" * 8 or _BE32.unpack_from(buf, 8)[0] != ls.STREAM_ID or \
            _BE32.unpack_from(buf, 12)[0] != ls.STREAM_VERSION or buf[16] or buf[17]:
        return lib.LU_STREAM_BAD_HEADER, 0, 0
    if any(buf[18:_IMAGE_HEADER]):                   # reserved[6]
        return lib.LU_STREAM_RESERVED, 18, 0
    n, off, bad_off, bad_type = _section(buf, _IMAGE_HEADER, True, known)
    if n < 0:
        return n, bad_off, bad_type
    total = n
    while off < len(buf):
        if len(buf) - off < _DOMAIN_HEADER:
            return lib.LU_STREAM_TRUNCATED, off, 0
        # 1: x86 PV, 2: x86 HVM; page_shift 12.
        if _LE32.unpack_from(buf, off)[0] not in (1, 2) or buf[off + 4] != 12 or buf[off + 5]:
            return lib.LU_STREAM_BAD_DOMAIN, off, 0
        if buf[off + 6] or buf[off + 7]:             # u16 reserved
            return lib.LU_STREAM_RESERVED, off + 6, 0
        n, off, bad_off, bad_type = _section(buf, off + _DOMAIN_HEADER, False, known)
        if n < 0:
            return n, bad_off, bad_type
        total += n
    return total, bad_off, bad_type


# ---------------------------------------------------------------- xen#1's blackout passes

_PV_PAGE_TYPE_ITEM = struct.Struct("<QII")       # mfn, type (PGT_* >> shift), flags


def save_pv_page_types(table, extents, owner, pinned_flag, max_out):
    """lu_save_pv_page_types: (total, items) for the LU_PV_PAGE_TYPES body
    of `owner`'s frames in extents [(start, count)], taken in the order
    given: its page-table and descriptor frames (as frames_typed), each as
    16 little-endian bytes {mfn, type, pinned_flag if pinned else 0}.
    items holds the first max_out of them, all the C core writes."""
    total, out = 0, bytearray()
    for start, count in extents:
        for mfn, t in frames_typed(table, start, start + count, owner):
            if total < max_out:
                out += _PV_PAGE_TYPE_ITEM.pack(mfn, t >> lib.LU_PGT_TYPE_SHIFT,
                                               pinned_flag if t & lib.LU_PGT_PINNED else 0)
            total += 1
    return total, bytes(out)


def _lane(h, w):
    h = ((h ^ w) * 0x100000001b3) & M64
    return h ^ (h >> 29)


def digest64(data):
    """lu_digest64: four lanes over 32-byte blocks (8-byte words, native
    order), whole words left over to the first lane, tail bytes to the
    second, then the lanes folded one into the next."""
    n = len(data)
    n32, n8 = n // 32 * 32, n // 8 * 8
    h = [0x6a09e667f3bcc909 ^ n, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1]
    words = memoryview(data).cast("B")[:n8].cast("Q")
    for i, w in enumerate(words[:n32 // 8]):
        h[i % 4] = _lane(h[i % 4], w)
    for w in words[n32 // 8:]:
        h[0] = _lane(h[0], w)
    for b in data[n8:]:
        h[1] = _lane(h[1], b)
    k = 0xff51afd7ed558ccd
    x = h[0]
    for lane in h[1:]:
        x = _lane((x * k) & M64, lane)
    x ^= x >> 33
    x = (x * k) & M64
    return x ^ (x >> 33)


def quiesce_sweep(vcpus):
    """lu_quiesce_sweep over [(on_cpu, quiesce_req, runstate, pause_req)]:
    (pause_req of each after the sweep, how many wait, index of the first
    that waits or len(vcpus)).  A vCPU off its pCPU is taken as a pCPU takes
    it: asked to quiesce and not mid-I/O, it gets its pause request; off
    its pCPU with a pause request it is done.  The rest wait: one on a
    pCPU (left untouched, whatever its requests), and one off it without a
    pause request (mid-I/O, or never asked to quiesce)."""
    pause, waiting, first = [], 0, len(vcpus)
    for i, (on_cpu, quiesce_req, runstate, pause_req) in enumerate(vcpus):
        if not on_cpu and quiesce_req and runstate != lib.LU_RUN_BLOCKED_IO:
            pause_req = 1
        pause.append(pause_req)
        if on_cpu or not pause_req:
            if not waiting:
                first = i
            waiting += 1
    return pause, waiting, first


# ---------------------------------------------------------------- xen#2's per-page records

def pv_types_check(items, extents, pinned_flag):
    """lu_pv_types_check over LU_PV_PAGE_TYPES items (bytes): (index of the
    first item whose frame is in none of the extents [(start, count)] or
    whose type is not L1..L4 or a descriptor table, else -1; pinned L4s
    counted; the first one's frame, or None)."""
    nr_pinned, first_pinned = 0, None
    for i, (mfn, t, flags) in enumerate(_PV_PAGE_TYPE_ITEM.iter_unpack(items)):
        inside = any(start <= mfn < start + count for start, count in extents)
        if not inside or not lib.LU_PGT_L1 <= t <= lib.LU_PGT_SEG_DESC:
            return i, nr_pinned, first_pinned
        if t == lib.LU_PGT_L4 and flags & pinned_flag:
            if not nr_pinned:
                first_pinned = mfn
            nr_pinned += 1
    return -1, nr_pinned, first_pinned


def pv_types_apply(table, items):
    """lu_pv_types_apply: each item's frame gets its type, count 0."""
    type_info = _field(table, 0, len(table) // FRAME_SIZE, _TYPE_INFO)
    for mfn, t, _ in _PV_PAGE_TYPE_ITEM.iter_unpack(items):
        type_info[mfn] = t << lib.LU_PGT_TYPE_SHIFT


def pv_types_select(items, page_type):
    """lu_pv_types_select: the frames of the items of one type, in order."""
    return [mfn for mfn, t, _ in _PV_PAGE_TYPE_ITEM.iter_unpack(items) if t == page_type]
