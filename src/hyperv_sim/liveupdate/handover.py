"""Hand-over: the stream in data pages, the MFN array, the breadcrumb, the
new image at its destination, and the exec.

Stream pages come from anywhere outside LU bootmem and guest pages (free
frames are neither); the MFN array is physically contiguous.
"""
from xen_public.abi import DOMID_XEN, PAGE_SIZE

from .._lu_core import ffi, lib
from ..frametable import OutOfMemory
from . import stream as S


class HandoverError(Exception):
    pass


class StreamPages:
    def __init__(self, hv, data):
        self.hv = hv
        self.length = len(data)
        self.extents = []
        nr = -(-len(data) // PAGE_SIZE)
        try:
            self.extents += hv.allocator.alloc(nr, DOMID_XEN, lib.LU_USE_STREAM)
        except OutOfMemory as e:
            raise HandoverError("no memory for the %d-page stream: %s" % (nr, e))
        self.mfns = ffi.new("uint64_t[]", nr)
        i = 0
        for mfn, count in sorted(self.extents):
            lib.lu_fill_run(self.mfns + i, mfn, count)
            i += count
        self.nr = nr
        lib.lu_stream_scatter(hv.ram.base, self.mfns, nr, ffi.from_buffer("uint8_t[]", data), len(data))
        self.hash = S.hash64(data)

    def build_mfn_array(self, fault=None):
        if fault:
            fault("mfn-array")
        frames = S.mfn_array_frames(self.nr)
        try:
            ext = self.hv.allocator.alloc(frames, DOMID_XEN, lib.LU_USE_STREAM, contiguous=True)
        except OutOfMemory as e:
            raise HandoverError("no %d contiguous frames for the MFN array: %s" % (frames, e))
        self.extents += ext
        (first, _), = ext
        raw = bytes(ffi.buffer(self.mfns, 8 * self.nr))
        self.hv.ram.write(first * PAGE_SIZE, raw + bytes(frames * PAGE_SIZE - len(raw)))
        self.array_maddr = first * PAGE_SIZE
        self.array_hash = S.hash64(raw)
        return self.array_maddr

    def write_breadcrumb(self, save_end_ns, fault=None):
        if fault:
            fault("breadcrumb")
        self.hv.ram.write(self.hv.lu_start, S.pack_breadcrumb(
            self.array_maddr, self.nr, self.length, self.hash, self.array_hash, save_end_ns))

    def release(self):
        """Give the pages back (an aborted update, or xen#2 once restored)."""
        for mfn, count in self.extents:
            self.hv.ram.scrub(mfn * PAGE_SIZE, count * PAGE_SIZE)
        self.hv.allocator.release(self.extents)
        self.extents = []


def stamp_exec(hv):
    """The moment xen#1 jumps, for xen#2's report."""
    hv.ram.write(hv.lu_start + S.EXEC_NS_OFFSET, lib.lu_now_ns().to_bytes(8, "little"))


def clear_breadcrumb(hv):
    hv.ram.write(hv.lu_start, bytes(S.BREADCRUMB.size))


def clear_boot_information(ram, handoff):
    """A hand-off in LU bootmem, used or replaced (a boot-information page,
    or the register block of kexec-tools' purgatory): no recover may start
    from it again (hyperv_sim/pending.py looks for one beside the
    breadcrumb)."""
    ram.write(handoff.regs_addr, bytes(handoff.regs_size))


def image_fingerprint(hv, image):
    """A fast digest of the loaded image's staged bytes, read in place: one
    lu_digest64 per run of staging frames.  Pre-flight takes it when it
    checks the SHA-256 of the load; equal fingerprints later mean the same
    bytes, at a fraction of a SHA-256's cost inside the blackout."""
    out = []
    for seg in image.loaded:
        runs = sorted(seg.staged) or [(seg.dest // PAGE_SIZE, seg.dest_size // PAGE_SIZE)]
        for mfn, count in runs:
            out.append((seg.dest, mfn, count, lib.lu_digest64(
                hv.ram.pointer(mfn * PAGE_SIZE, "uint8_t *"), count * PAGE_SIZE)))
    return out


def prefault(hv, image):
    """Before the blackout: map writable into this process the frames the
    hand-over writes in place (the image's destination, the breadcrumb), so
    their page faults are not taken inside it.  Changes no byte; where the
    kernel cannot (before Linux 5.14) the faults simply come later."""
    spans = [(seg.dest, seg.dest_size) for seg in image.loaded] + [(hv.lu_start, PAGE_SIZE)]
    for start, length in spans:
        if not hv.ram.populate(start, length):
            return


def place_image(hv, image):
    """Copy the loaded image from its staging frames to its destination:
    over LU bootmem's top and the running hypervisor's own image.  The point
    of no return."""
    ram = hv.ram
    # Straight from frame to frame: no intermediate copy of the image.
    with memoryview(ram.map) as mem:
        for seg in image.loaded:
            dest = seg.dest
            for mfn, count in sorted(seg.staged):
                ram.write(dest, mem[mfn * PAGE_SIZE:(mfn + count) * PAGE_SIZE])
                dest += count * PAGE_SIZE
