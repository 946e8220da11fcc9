"""xen#2 finds the stream: the breadcrumb at the start of its LU bootmem,
the MFN array it names, the stream pages gathered into one buffer (the
design's vmap), both hashes checked.  Nothing is trusted or changed yet; a
breadcrumb, array or stream that is not what xen#1 left is refused with
RestoreFailure.
"""
import struct

from xen_public.abi import PAGE_SIZE

from .._lu_core import ffi, lib
from .stream import BREADCRUMB, RestoreFailure, hash64, mfn_array_frames, read_breadcrumb

def _fail(fmt, *args):
    raise RestoreFailure(fmt % args if args else fmt)


# ---------------------------------------------------------------- mapping the stream

class MappedStream:
    """The stream, found through the breadcrumb and gathered into one
    contiguous buffer through its MFN array (the design's vmap)."""

    def __init__(self, ram, lu_start, lu_size, xen_start, xen_size):
        nr_frames = ram.nr_frames
        bc = read_breadcrumb(ram.read(lu_start, BREADCRUMB.size))
        if bc is None:
            _fail("no live-update breadcrumb at 0x%x: nothing to restore", lu_start)
        self.breadcrumb = bc
        nr, array = bc["nr_mfns"], bc["mfn_array"]
        if not 0 < nr <= nr_frames or not nr * PAGE_SIZE - PAGE_SIZE < bc["length"] <= nr * PAGE_SIZE:
            _fail("breadcrumb: %d stream pages for %d bytes is not a stream", nr, bc["length"])
        forbidden = [(lu_start // PAGE_SIZE, (lu_start + lu_size) // PAGE_SIZE, "LU bootmem"),
                     (xen_start // PAGE_SIZE, -(-(xen_start + xen_size) // PAGE_SIZE), "the hypervisor image")]
        array_frames = mfn_array_frames(nr)
        if array % PAGE_SIZE:
            _fail("breadcrumb: MFN array at 0x%x is not page-aligned", array)
        if array // PAGE_SIZE + array_frames > nr_frames:
            _fail("breadcrumb: MFN array at 0x%x is not inside RAM", array)
        self._outside(array // PAGE_SIZE, array_frames, forbidden, "the MFN array")
        raw = ram.read(array, nr * 8)
        if hash64(raw) != bc["array_hash"]:
            _fail("the MFN array at 0x%x does not match its breadcrumb hash", array)
        mfns = struct.unpack("<%dQ" % nr, raw)
        if len(set(mfns)) != nr:
            _fail("the MFN array names a frame twice")
        for i, m in enumerate(mfns):
            if m >= nr_frames:
                _fail("MFN array entry %d: frame 0x%x is past the end of RAM", i, m)
            self._outside(m, 1, forbidden, "stream page %d" % i)
            if array // PAGE_SIZE <= m < array // PAGE_SIZE + array_frames:
                _fail("stream page %d (0x%x) lies in the MFN array", i, m)
        self.mfns = list(mfns)
        self.array_extent = (array // PAGE_SIZE, array_frames)
        out = ffi.new("uint8_t[]", nr * PAGE_SIZE)
        lib.lu_stream_gather(ram.base, ffi.new("uint64_t[]", self.mfns), nr, out)
        self.buf = bytes(ffi.buffer(out, bc["length"]))
        if hash64(self.buf) != bc["stream_hash"]:
            e = RestoreFailure("the stream does not match its breadcrumb hash (corrupted in memory)")
            e.buf = self.buf
            raise e

    @staticmethod
    def _outside(first, count, forbidden, what):
        for lo, hi, name in forbidden:
            if first < hi and first + count > lo:
                _fail("%s (frame 0x%x) lies in %s", what, first, name)

    def extents(self):
        """Every frame the stream and its array occupy, as extents."""
        runs = []
        for m in sorted(self.mfns):
            if runs and runs[-1][0] + runs[-1][1] == m:
                runs[-1][1] += 1
            else:
                runs.append([m, 1])
        return [tuple(r) for r in runs] + [self.array_extent]
