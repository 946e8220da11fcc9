"""The C core against its plain-Python reference, on a realistic host.

Each operation of the live-update path runs on the same data in C (the
core, called as the hypervisor calls it, results turned into the same
Python values) and in Python (bench/reference.py): the frame table of a
64 GiB host (16 Mi frames, 64 domains, PV page types) and the stream it
saves.  Times are medians of several runs; the ratio compares time per
frame / byte / entry, a report (the reference is the tests' oracle, and a
slower one would flatter the core).  What is judged is the core against
this machine's memory bandwidth, measured in the same run (a store and a
streaming read over a buffer the size of the frame table): the scans and
the frame-table rebuild must move their bytes at BW_TARGET of it at least.

    python -m bench.core [--quick] [--json PATH]

--quick runs the Python side of the frame-table scans on an evenly spread
sample of the table (1/16 of it) and says so; the C side always runs whole.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.guest import P2M
from xen_public import lustream as ls
from xen_public.abi import DOMID_INVALID

from . import reference as ref
from .hostdata import GiB, make_host, stream_layout

BW_TARGET = 0.5                 # of the measured memory bandwidth
FRAME_BYTES = 16                # struct lu_frame: what a scan reads, a rebuild writes, per frame
MIN_SAMPLE_NS = 2_000_000       # loop tiny operations up to this per sample
SAMPLE_SLICES = 16              # --quick: Python scans 16 spread slices...
SAMPLE_FRACTION = 16            # ...holding 1/16 of the table


class Timer:
    """Samples of one call's time; calls that take less than MIN_SAMPLE_NS
    are looped within a sample."""

    def __init__(self, fn):
        self.fn = fn
        t0 = time.perf_counter_ns()
        fn()                    # warms up (first-touch faults, caches) and calibrates
        self.loops = max(1, MIN_SAMPLE_NS // max(1, time.perf_counter_ns() - t0))
        self.samples = []

    def sample(self):
        fn = self.fn
        gc_was = gc.isenabled()
        gc.disable()            # as timeit: no collection inside a sample
        try:
            t0 = time.perf_counter_ns()
            for _ in range(self.loops):
                fn()
            self.samples.append((time.perf_counter_ns() - t0) / self.loops)
        finally:
            if gc_was:
                gc.enable()

    def median(self):
        return statistics.median(self.samples)


class Row:
    """One operation: C over `units`, Python over `py_units` of the same
    data; the C side moves `nbytes` of memory, read or written (`moves`);
    target: judged against the memory bandwidth."""

    def __init__(self, op, size, unit, units, c_fn, py_fn, py_units=None, target=False, note="",
                 nbytes=None, moves="read"):
        self.op, self.size, self.unit, self.units = op, size, unit, units
        self.c_fn, self.py_fn = c_fn, py_fn
        self.py_units = units if py_units is None else py_units
        self.target, self.note = target, note
        self.nbytes, self.moves = nbytes, moves

    def measure(self, c_reps, py_reps):
        # C samples spread between Python's, so that both medians come from
        # the same stretch of a noisy machine's time.
        c, py = Timer(self.c_fn), Timer(self.py_fn)
        for i in range(py_reps):
            py.sample()
            for _ in range(c_reps // py_reps + (i < c_reps % py_reps)):
                c.sample()
        c_ns, py_ns = c.median(), py.median()
        c_per, py_per = c_ns / self.units, py_ns / self.py_units
        ratio = py_per / c_per
        return {"op": self.op, "size": self.size, "unit": self.unit, "units": self.units,
                "c_ns": round(c_ns), "py_ns": round(py_ns), "py_units": self.py_units,
                "c_ns_per_unit": float("%.4g" % c_per), "py_ns_per_unit": float("%.4g" % py_per),
                "ratio": round(ratio, 1), "bytes": self.nbytes, "moves": self.moves,
                "gb_per_s": round(self.nbytes / c_ns, 2) if self.nbytes else None,
                "target": BW_TARGET if self.target else None, "note": self.note}


def judge(rows, bandwidth):
    """Each row's share of the bandwidth of its kind (read or write), and
    whether a targeted one reaches BW_TARGET."""
    for r in rows:
        bw = bandwidth.get(r["moves"])
        r["bw_fraction"] = round(r["gb_per_s"] / bw, 3) if r["gb_per_s"] and bw else None
        r["met"] = (r["bw_fraction"] >= BW_TARGET) if r["target"] else None
    return rows


def memory_bandwidth(nbytes, reps):
    """GB/s of this machine's memory (bytes per ns) over a buffer of nbytes:
    a store (memset) and a streaming read, medians of reps."""
    buf = ffi.new("uint8_t[]", nbytes)
    lib.lu_membw_fill(buf, nbytes, 1)           # first touch outside the timing
    fill, read = Timer(lambda: lib.lu_membw_fill(buf, nbytes, 0)), Timer(lambda: lib.lu_membw_read(buf, nbytes))
    for _ in range(reps):
        fill.sample()
        read.sample()
    return {"bytes": nbytes, "write": round(nbytes / fill.median(), 2), "read": round(nbytes / read.median(), 2)}


def _spread(nr, quick):
    """The frame ranges the Python side scans: all of them, or for --quick
    SAMPLE_SLICES slices spread evenly, 1/SAMPLE_FRACTION of the frames."""
    if not quick:
        return [(0, nr)]
    step, length = nr // SAMPLE_SLICES, nr // SAMPLE_SLICES // SAMPLE_FRACTION
    return [(i * step, i * step + length) for i in range(SAMPLE_SLICES)]


def frame_rows(host, quick):
    buf, nr = host.ram.buf, host.nr_frames
    frames = host.table.frames
    cap = 1 << 16
    starts, lengths = ffi.new("uint64_t[]", cap), ffi.new("uint64_t[]", cap)
    uses, mfns, types = ffi.new("uint8_t[]", cap), ffi.new("uint64_t[]", cap), ffi.new("uint32_t[]", cap)
    spread = _spread(nr, quick)
    sampled = sum(e - f for f, e in spread)
    size = "%d frames (%d GiB host, %d domains)" % (nr, nr * 4096 // GiB, len(host.domains))

    def c_scan(owner, use, first=0, end=nr):
        n = lib.lu_frames_scan(frames, first, end, owner, use, starts, lengths, cap)
        return [(starts[i], lengths[i]) for i in range(n)]

    def c_use_runs(first=0, end=nr):
        n = lib.lu_frames_use_runs(frames, first, end, starts, lengths, uses, cap)
        return [(starts[i], lengths[i], uses[i]) for i in range(n)]

    def c_typed(extents):
        out = []
        for domid, first, end in extents:
            n = lib.lu_frames_typed(frames, first, end, domid, mfns, types, cap)
            out += [(mfns[i], types[i]) for i in range(n)]
        return out

    def py_typed(extents):
        out = []
        for domid, first, end in extents:
            out += ref.frames_typed(buf, first, end, domid)
        return out

    def each(fn):
        return lambda: [fn(first, end) for first, end in spread]

    # save: PV page types, per P2M extent of every PV domain.
    pv = [d for d in host.domains if d.dtype == "pv"]
    pv_ext = [(d.domid, m, m + n) for d in pv for _, m, n in d.p2m]
    sample_pv = [(d.domid, m, m + n) for d in pv[::SAMPLE_FRACTION] for _, m, n in d.p2m]
    py_pv_ext = sample_pv if quick else pv_ext
    dom = host.domains[len(host.domains) // 2].domid
    free = (DOMID_INVALID, lib.LU_USE_FREE)

    # Same answers first, on the --quick sample whatever the mode (whole-table
    # agreement is the tests' business; this guards the data measured).
    checks = [(c_typed(sample_pv), py_typed(sample_pv))]
    for f, e in _spread(nr, quick=True):
        checks += [(c_scan(*free, f, e), ref.frames_scan(buf, f, e, *free)),
                   (c_scan(dom, lib.LU_USE_GUEST, f, e), ref.frames_scan(buf, f, e, dom, lib.LU_USE_GUEST)),
                   (c_use_runs(f, e), ref.frames_use_runs(buf, f, e)),
                   ([lib.lu_frames_count(frames, f, e, dom, lib.LU_USE_GUEST)],
                    [ref.frames_count(buf, f, e, dom, lib.LU_USE_GUEST)])]
    for c, py in checks:
        if c != py:
            raise SystemExit("bench.core: the C core and the reference disagree: %r... vs %r..." % (c[:3], py[:3]))

    return [
        Row("scan: free extents (allocator rescan)", size, "frame", nr, lambda: c_scan(*free),
            each(lambda f, e: ref.frames_scan(buf, f, e, *free)), sampled, target=True, nbytes=nr * FRAME_BYTES),
        Row("scan: one domain's extents", size, "frame", nr, lambda: c_scan(dom, lib.LU_USE_GUEST),
            each(lambda f, e: ref.frames_scan(buf, f, e, dom, lib.LU_USE_GUEST)), sampled, target=True,
            nbytes=nr * FRAME_BYTES),
        Row("use runs (memory map)", size, "frame", nr, c_use_runs,
            each(lambda f, e: ref.frames_use_runs(buf, f, e)), sampled, target=True, nbytes=nr * FRAME_BYTES),
        Row("count: one domain's frames", size, "frame", nr,
            lambda: lib.lu_frames_count(frames, 0, nr, dom, lib.LU_USE_GUEST),
            each(lambda f, e: ref.frames_count(buf, f, e, dom, lib.LU_USE_GUEST)), sampled, target=True,
            nbytes=nr * FRAME_BYTES),
        Row("typed: PV page types (save)",
            "%d frames (%d PV domains, %d extents)" % (sum(e - f for _, f, e in pv_ext), len(pv), len(pv_ext)),
            "frame", sum(e - f for _, f, e in pv_ext), lambda: c_typed(pv_ext), lambda: py_typed(py_pv_ext),
            sum(e - f for _, f, e in py_pv_ext), target=True,
            nbytes=sum(e - f for _, f, e in pv_ext) * FRAME_BYTES),
    ]


def stream_rows(host):
    data = host.stream
    nr = -(-len(data) // ref.PAGE_SIZE)
    mfns, ram_frames = stream_layout(nr)
    c_ram, py_ram = bytearray(ram_frames * ref.PAGE_SIZE), bytearray(ram_frames * ref.PAGE_SIZE)
    c_base = ffi.from_buffer("uint8_t[]", c_ram, require_writable=True)
    c_mfns, c_data = ffi.new("uint64_t[]", mfns), ffi.from_buffer("uint8_t[]", data)
    out = ffi.new("uint8_t[]", nr * ref.PAGE_SIZE)
    known = ls.ALL_RECORD_TYPES
    c_known = ffi.new("uint32_t[]", list(known))
    bad_off, bad_type = ffi.new("uint64_t *"), ffi.new("uint32_t *")

    def c_scatter():
        lib.lu_stream_scatter(c_base, c_mfns, nr, c_data, len(data))

    def c_hash():
        return lib.lu_hash64(c_data, len(data))

    def c_gather():
        lib.lu_stream_gather(c_base, c_mfns, nr, out)

    def c_validate():
        return lib.lu_stream_validate(out, len(data), c_known, len(known), bad_off, bad_type), bad_off[0], bad_type[0]

    def py_unpack():
        return ref.stream_validate(ref.stream_gather(py_ram, mfns)[:len(data)], known)

    c_scatter()
    ref.stream_scatter(py_ram, mfns, data)
    c_gather()
    gathered = ref.stream_gather(py_ram, mfns)[:len(data)]
    if c_ram != py_ram or c_hash() != ref.hash64(data) or c_validate() != py_unpack() or \
            bytes(ffi.buffer(out, len(data))) != gathered:
        raise SystemExit("bench.core: the C core and the reference disagree on the stream")
    size = "%d B stream (%d records, %d pages)" % (len(data), c_validate()[0], nr)
    return [
        Row("hash64 (seal the stream)", size, "byte", len(data), c_hash, lambda: ref.hash64(data)),
        Row("scatter into stream pages", size, "byte", len(data), c_scatter,
            lambda: ref.stream_scatter(py_ram, mfns, data), note="both sides copy pages with memcpy"),
        Row("pack = scatter + hash64 (xen#1)", size, "byte", len(data), lambda: (c_scatter(), c_hash()),
            lambda: (ref.stream_scatter(py_ram, mfns, data), ref.hash64(data))),
        Row("gather (xen#2's contiguous view)", size, "byte", len(data), c_gather,
            lambda: ref.stream_gather(py_ram, mfns), note="both sides copy pages with memcpy"),
        Row("validate (framing check)", size, "byte", len(data), c_validate,
            lambda: ref.stream_validate(gathered, known)),
        Row("unpack = gather + validate (xen#2)", size, "byte", len(data), lambda: (c_gather(), c_validate()),
            py_unpack),
    ]


def _extents(n):
    return "%d extent%s" % (n, "" if n == 1 else "s")


def array_rows(host):
    exts = host.stream_extents
    nr = sum(n for _, n in exts)
    arr = ffi.new("uint64_t[]", nr)

    def c_mfn_array():
        # handover.StreamPages: runs of the sorted extents, then the raw u64s.
        i = 0
        for mfn, count in sorted(exts):
            lib.lu_fill_run(arr + i, mfn, count)
            i += count
        return bytes(ffi.buffer(arr, 8 * nr))

    big = max(host.domains, key=lambda d: d.nr_pages)

    def c_p2m():
        return P2M(big.p2m).array(big.nr_pages)     # as the workload uses it: a C array

    if c_mfn_array() != ref.mfn_array(exts) or \
            bytes(ffi.buffer(c_p2m(), 8 * big.nr_pages)) != ref.p2m_array(big.p2m, big.nr_pages):
        raise SystemExit("bench.core: the C core and the reference disagree on MFN arrays")
    return [
        Row("MFN array: the stream's", "%d entries, %s" % (nr, _extents(len(exts))), "entry", nr,
            c_mfn_array, lambda: ref.mfn_array(exts)),
        Row("MFN array: a domain's P2M", "%d entries, %s" % (big.nr_pages, _extents(len(big.p2m))), "entry",
            big.nr_pages, c_p2m, lambda: ref.p2m_array(big.p2m, big.nr_pages)),
    ]


def rebuild_rows(host):
    """The restore's marks over a table that already holds them (xen#1's,
    as a live update finds it: read and compared, pages left alone), and
    over one that holds something else each time (a first boot: every
    page written)."""
    nr = host.nr_frames
    scratch = bytearray(host.ram.buf)           # the host's own table keeps its PV types
    frames = ffi.from_buffer("struct lu_frame[]", scratch, require_writable=True)

    def c_rebuild():
        for mark in host.marks:
            lib.lu_frames_set(frames, *mark)

    def c_rebuild_changed():
        # Bit 30 of count_info the opposite of what the table holds now,
        # whoever wrote it last (the Python side restores the original
        # values between samples): every entry differs, every time.
        first = host.marks[0][0]
        flip = 1 - ((frames[first].count_info ^ host.marks[0][5]) >> 30 & 1)
        for first, count, owner, use, type_info, count_info in host.marks:
            lib.lu_frames_set(frames, first, count, owner, use, type_info, count_info ^ (flip << 30))

    def py_rebuild():
        for mark in host.marks:
            ref.frames_set(scratch, *mark)

    written = sum(m[1] for m in host.marks)
    size = "%d frames, %d marks (%d frames marked)" % (nr, len(host.marks), written)
    return [Row("frame-table rebuild over xen#1's table (restore)", size, "frame", nr, c_rebuild, py_rebuild,
                target=True, nbytes=written * FRAME_BYTES, moves="read"),
            Row("frame-table rebuild over a changed table (first boot)", size, "frame", nr, c_rebuild_changed,
                py_rebuild, target=True, nbytes=written * FRAME_BYTES, moves="write")]


def run(quick=False):
    """Measure every operation; -> dict (see markdown() for the table)."""
    # C runs are short and so the most exposed to a noisy neighbour: more of them.
    c_reps, py_reps = (7, 3) if quick else (15, 5)
    t0 = time.monotonic()
    host = make_host(64 * GiB, 64)
    rows = frame_rows(host, quick) + stream_rows(host) + array_rows(host) + rebuild_rows(host)
    bandwidth = memory_bandwidth(host.nr_frames * FRAME_BYTES, c_reps)
    results = judge([row.measure(c_reps, py_reps) for row in rows], bandwidth)
    targeted = [r for r in results if r["target"]]
    return {
        "machine": "%s, %d CPUs, Python %s" % (platform.machine(), os.cpu_count(), platform.python_version()),
        "quick": quick, "reps": {"c": c_reps, "python": py_reps},
        "python_sample": ("frame-table scans: Python on %d evenly spread slices holding 1/%d of the "
                          "frames (typed: 1/%d of the PV domains); ratios per frame"
                          % (SAMPLE_SLICES, SAMPLE_FRACTION, SAMPLE_FRACTION)) if quick else "none: same data whole",
        "host": {"frames": host.nr_frames, "domains": len(host.domains), "stream_bytes": len(host.stream)},
        "bandwidth": bandwidth, "target": BW_TARGET, "targets_met": all(r["met"] for r in targeted),
        "ops": results, "seconds": round(time.monotonic() - t0, 1),
    }


def _time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return "%.3g %s" % (ns / scale, unit)
    return "%.3g ns" % ns


def markdown(result):
    lines = ["# C core vs plain-Python reference", "",
             "Machine: %s; medians of %d (C) / %d (Python) runs; %s."
             % (result["machine"], result["reps"]["c"], result["reps"]["python"],
                "Python sample: " + result["python_sample"] if result["quick"] else "same data on both sides"),
             "", "Memory bandwidth of this machine, same run, over %d MiB (the frame table's size): "
             "store %.1f GB/s, streaming read %.1f GB/s." % (
                 result["bandwidth"]["bytes"] >> 20, result["bandwidth"]["write"], result["bandwidth"]["read"]),
             "", "| operation | size | C | Python | ratio (report) | C GB/s | of bandwidth | target | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["ops"]:
        py = _time(r["py_ns"])
        if r["py_units"] != r["units"]:
            py += " on %d %ss" % (r["py_units"], r["unit"])
        lines.append("| %s | %s | %s (%.3g ns/%s) | %s (%.3g ns/%s) | %.1f× | %s | %s | %s | %s |" % (
            r["op"], r["size"], _time(r["c_ns"]), r["c_ns_per_unit"], r["unit"],
            py, r["py_ns_per_unit"], r["unit"], r["ratio"],
            "%.2f %s" % (r["gb_per_s"], r["moves"]) if r["gb_per_s"] else "—",
            "%.0f %%" % (100 * r["bw_fraction"]) if r["bw_fraction"] is not None else "—",
            "≥%.0f %%" % (100 * r["target"]) if r["target"] else "—",
            {True: "yes", False: "**no**", None: "—"}[r["met"]] + (" (%s)" % r["note"] if r["note"] else "")))
    lines += ["", "Targets (scans and the frame-table rebuild ≥ %.0f %% of the memory bandwidth): %s." % (
        100 * result["target"], "all met" if result["targets_met"] else "NOT all met")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.core")
    ap.add_argument("--quick", action="store_true", help="Python scans a 1/16 sample of the table")
    ap.add_argument("--json", metavar="PATH", help="also write the results here")
    args = ap.parse_args(argv)
    result = run(quick=args.quick)
    print(markdown(result))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
