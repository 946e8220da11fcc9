"""The baseline live update replaces: a migration-style save and restore.

Migration (xc_domain_save / xc_domain_restore, stream v3) moves a domain's
memory through the stream: PAGE_DATA records of up to 1024 pages, each a
header, the PFN array and the pages themselves.  A live update built that
way would pause every domain, copy all of guest memory into the stream,
then copy it back.  This measures that on a running simulated host, as
fast as Python's buffer copies allow (one copy per run of pages): the pages
go back into the same frames, already resident, which flatters the
baseline, since a real restore populates fresh memory.
"""
import bisect
import mmap
import os
import struct
import time

from xen_public import abi

PAGE = abi.PAGE_SIZE
BATCH = 1024                            # pages per PAGE_DATA record, as in libxc
REC_PAGE_DATA = 0x00000001
REC_DOMAIN = 0x7fff0000                # this benchmark's section marker: value = domid
RECORD = struct.Struct("<II")
PAGE_DATA_HEAD = struct.Struct("<II")   # count, reserved


def measure(state_dir, ts):
    """Pause all, copy every guest page into a stream and back, resume:
    {"blackout_ms", "bytes", "pages"}.  Guests see exactly their memory."""
    details = ts.toolstack("details")["domains"]
    running = [d["domid"] for d in details if d["state"] == "running"]
    p2ms = {d["domid"]: sorted(tuple(e) for e in d["p2m"]) for d in details}
    pages = sum(n for p2m in p2ms.values() for _, _, n in p2m)
    batches = sum(-(-n // BATCH) for p2m in p2ms.values() for _, _, n in p2m)
    fd = os.open(os.path.join(state_dir, "ram"), os.O_RDWR)
    try:
        ram = mmap.mmap(fd, 0, mmap.MAP_SHARED)
    finally:
        os.close(fd)
    stream = bytearray(pages * (PAGE + 8) + (batches + len(p2ms)) * (RECORD.size + PAGE_DATA_HEAD.size))
    try:
        # Twice: the first pass also brings every page of the sparse RAM
        # file into memory (as a real host's RAM always is); the second,
        # on resident memory, is the baseline.
        times = [_paused_round_trip(ts, running, ram, p2ms, stream) for _ in range(2)]
    finally:
        ram.close()
    return {"blackout_ms": times[1] * 1e3, "cold_ms": times[0] * 1e3, "bytes": pages * PAGE,
            "pages": pages}


def _paused_round_trip(ts, running, ram, p2ms, stream):
    t0 = time.perf_counter()
    for domid in running:
        ts.toolstack("pause", domain=domid)
    try:
        end = _save(ram, p2ms, stream)
        _restore(ram, p2ms, stream, end)
    finally:
        for domid in running:
            ts.toolstack("unpause", domain=domid)
    return time.perf_counter() - t0


def _save(ram, p2ms, stream):
    """Per domain: a section header (its domid), then PAGE_DATA records."""
    pos = 0
    for domid, p2m in sorted(p2ms.items()):
        RECORD.pack_into(stream, pos, REC_DOMAIN, domid)
        pos += RECORD.size
        for gfn, mfn, n in p2m:
            for first in range(0, n, BATCH):
                count = min(BATCH, n - first)
                RECORD.pack_into(stream, pos, REC_PAGE_DATA, PAGE_DATA_HEAD.size + count * (8 + PAGE))
                PAGE_DATA_HEAD.pack_into(stream, pos + RECORD.size, count, 0)
                at = pos + RECORD.size + PAGE_DATA_HEAD.size
                struct.pack_into("<%dQ" % count, stream, at, *range(gfn + first, gfn + first + count))
                at += count * 8
                src = (mfn + first) * PAGE
                stream[at:at + count * PAGE] = ram[src:src + count * PAGE]
                pos = at + count * PAGE
    return pos


def _restore(ram, p2ms, stream, end):
    """Each page back into the frame its domain's P2M gives its PFN (the
    restore side builds that P2M as it goes; here it is the same one)."""
    view, pos, p2m = memoryview(stream), 0, None
    while pos < end:
        rtype, value = RECORD.unpack_from(stream, pos)
        if rtype == REC_DOMAIN:
            p2m, pos = p2ms[value], pos + RECORD.size
            starts = [g for g, _, _ in p2m]
            continue
        count, _ = PAGE_DATA_HEAD.unpack_from(stream, pos + RECORD.size)
        at = pos + RECORD.size + PAGE_DATA_HEAD.size
        pfns = struct.unpack_from("<%dQ" % count, stream, at)
        at += count * 8
        i = 0
        while i < count:
            # The longest run of consecutive PFNs inside one P2M extent: one copy.
            pfn = pfns[i]
            gfn, mfn, n = p2m[bisect.bisect_right(starts, pfn) - 1]
            run = 1
            while i + run < count and run < gfn + n - pfn and pfns[i + run] == pfn + run:
                run += 1
            frame = mfn + pfn - gfn
            ram[frame * PAGE:(frame + run) * PAGE] = view[at + i * PAGE:at + (i + run) * PAGE]
            i += run
        pos = at + count * PAGE
