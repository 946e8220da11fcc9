"""kexec_op: ranges, and loading / unloading / querying kexec images.

Follows Xen's xen/common/kexec.c: segments are validated as a whole before
anything changes, a new image of a type replaces the old one atomically.
A segment whose buffer is NULL (kexec-tools adds them to identity-map the
first MiB) is only mapped, as kimage.c does: never range-checked, copied,
zeroed or scrubbed, and not part of the image's digest.  Crash images are
copied straight to their destination in the reserved crash region; default and live-update images are staged in hypervisor-owned frames
(Xen's kimage pages) because their destinations are in use until exec, the
live-update one overlapping the running hypervisor's own image.
"""

from xen_public import abi
from xen_public.abi import PAGE_SIZE

from ._lu_core import ffi, lib
from .frametable import OutOfMemory

SEGMENT_SIZE = ffi.sizeof("xen_kexec_segment_t")


class KexecFailure(Exception):
    """A kexec_op that fails with -errno; the message goes to the console."""

    def __init__(self, errno_value, message):
        super().__init__(message)
        self.errno = errno_value


class Segment:
    def __init__(self, dest, dest_size, buf_size, mapped_only=False):
        self.dest, self.dest_size, self.buf_size = dest, dest_size, buf_size
        self.mapped_only = mapped_only      # a NULL buffer: the range is mapped, nothing more
        self.staged = []        # [(mfn, count)] holding the bytes


class KexecImage:
    def __init__(self, ktype, arch, entry, segments, digest):
        self.ktype, self.arch, self.entry, self.segments = ktype, arch, entry, segments
        self.digest = digest    # sha256 of every segment as it must appear at its destination

    @property
    def loaded(self):
        """The segments that carry bytes (not the mapped-only ones)."""
        return [s for s in self.segments if not s.mapped_only]

    @property
    def size(self):
        return sum(s.dest_size for s in self.loaded)

    def describe(self):
        return {
            "type": abi.KEXEC_TYPE_NAMES[self.ktype],
            "arch": self.arch,
            "entry": self.entry,
            "segments": [{"dest": s.dest, "dest_size": s.dest_size, "buf_size": s.buf_size,
                          "staged": bool(s.staged), "mapped_only": s.mapped_only}
                         for s in self.segments],
            "sha256": self.digest,
        }


def _hash_zeros(digest, n):
    chunk = bytes(min(n, 1 << 20))
    while n > 0:
        digest.update(chunk[:min(n, len(chunk))])
        n -= len(chunk)


def _digest(segs, datas):
    """sha256 of every segment as it must appear at its destination."""
    import hashlib      # not needed to boot: kept out of a live update's start-up
    digest = hashlib.sha256()
    for seg, data in zip(segs, datas):
        if seg.mapped_only:
            continue
        digest.update(seg.dest.to_bytes(8, "little"))
        digest.update(data)
        _hash_zeros(digest, seg.dest_size - len(data))
    return digest.hexdigest()


def check_segments(ktype, segs, entry, lo, hi):
    """Xen's checks of an image's segments against [lo, hi), the memory its
    type may use (kimage.c): raises KexecFailure.  Also xen#2's, on the
    crash image a live update carries."""
    spans = []
    for i, s in enumerate(segs):
        if s.dest % PAGE_SIZE or s.dest_size % PAGE_SIZE:
            # Xen's errno for this (kimage.c), not -EINVAL.
            raise KexecFailure(abi.EADDRNOTAVAIL, "segment %d: destination 0x%x+0x%x is not "
                               "page-aligned" % (i, s.dest, s.dest_size))
        if s.buf_size > s.dest_size:
            raise KexecFailure(abi.EINVAL, "segment %d: %d bytes do not fit in its %d-byte "
                               "destination" % (i, s.buf_size, s.dest_size))
        if s.mapped_only:
            pass        # only mapped: Xen checks no range for it (kimage.c)
        elif (ktype == abi.KEXEC_TYPE_LIVEUPDATE and lo <= s.dest < hi
              and s.dest + s.dest_size > hi):
            raise KexecFailure(abi.EADDRNOTAVAIL, "segment %d: [0x%x, 0x%x) runs 0x%x bytes "
                               "past the end of the running hypervisor's image at 0x%x, into "
                               "memory in use: the new image does not fit in the window "
                               "[0x%x, 0x%x)" % (i, s.dest, s.dest + s.dest_size,
                                                 s.dest + s.dest_size - hi, hi, lo, hi))
        elif s.dest < lo or s.dest + s.dest_size > hi:
            raise KexecFailure(abi.EADDRNOTAVAIL, "segment %d: [0x%x, 0x%x) outside the "
                               "allowed range [0x%x, 0x%x)" % (i, s.dest, s.dest + s.dest_size, lo, hi))
        spans.append((s.dest, s.dest + s.dest_size))
    loaded = [(s.dest, s.dest + s.dest_size) for s in segs if not s.mapped_only]
    spans.sort()
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise KexecFailure(abi.EINVAL, "segments overlap at 0x%x" % b0)
    if not any(a <= entry < b for a, b in loaded):
        raise KexecFailure(abi.EINVAL, "entry 0x%x lies in no segment" % entry)


class Kexec:
    def __init__(self, hv):
        self.hv = hv
        self.images = {}

    # get_range

    def get_range(self, range_id, nr):
        """(start, size) of a range, as Xen's x86 code answers it."""
        hv = self.hv
        if range_id == abi.KEXEC_RANGE_MA_CRASH:
            return hv.crash_region
        if range_id == abi.KEXEC_RANGE_MA_XEN:
            return hv.xen_start, hv.xen_size
        if range_id == abi.KEXEC_RANGE_MA_CPU:
            if not 0 <= nr < hv.nr_pcpus:
                raise KexecFailure(abi.EINVAL, "get_range: no physical CPU %d" % nr)
            return hv.crash_notes_base + nr * hv.CRASH_NOTE_SIZE, hv.CRASH_NOTE_SIZE
        if range_id == abi.KEXEC_RANGE_MA_VMCOREINFO:
            return hv.vmcoreinfo
        if range_id == abi.KEXEC_RANGE_MA_LIVEUPDATE:
            return hv.lu_start, hv.lu_size
        # XENHEAP, BOOT_PARAM and EFI_MEMMAP are not provided on x86.
        raise KexecFailure(abi.EINVAL, "get_range: range %d not available" % range_id)

    # load / unload / status

    def _region(self, ktype):
        """[lo, hi) an image of this type may be loaded into."""
        hv = self.hv
        if ktype == abi.KEXEC_TYPE_CRASH:
            if not hv.crash_region[1]:
                raise KexecFailure(abi.EINVAL, "no crash region reserved (crashkernel=)")
            return hv.crash_region[0], hv.crash_region[0] + hv.crash_region[1]
        if ktype == abi.KEXEC_TYPE_LIVEUPDATE:
            if not hv.lu_size:
                raise KexecFailure(abi.EINVAL, "no live-update bootmem reserved (liveupdate=)")
            # The window: LU bootmem and the running image, minus the
            # breadcrumb page at its bottom.
            return hv.lu_start + PAGE_SIZE, hv.xen_start + hv.xen_size
        return 0, hv.ram.size

    def load(self, ktype, arch, entry, segments, read_buf):
        """segments: [(buf_handle, buf_size, dest, dest_size)]; read_buf(handle, n)
        copies from the caller (raises KexecFailure(-EFAULT))."""
        if ktype not in abi.KEXEC_TYPE_NAMES:
            raise KexecFailure(abi.EINVAL, "load: unknown image type %d" % ktype)
        if arch not in (abi.EM_386, abi.EM_X86_64):
            raise KexecFailure(abi.EINVAL, "load: architecture %d is not x86" % arch)
        if not 0 < len(segments) <= abi.KEXEC_SEGMENT_MAX:
            raise KexecFailure(abi.EINVAL, "load: %d segments (1..%d allowed)"
                               % (len(segments), abi.KEXEC_SEGMENT_MAX))
        segs = [Segment(dest=d, dest_size=ds, buf_size=bs, mapped_only=not h)
                for h, bs, d, ds in segments]
        check_segments(ktype, segs, entry, *self._region(ktype))
        if ktype != abi.KEXEC_TYPE_CRASH:
            need = sum(s.dest_size for s in segs if not s.mapped_only) // PAGE_SIZE
            if need > self.hv.allocator.free_frames:
                raise KexecFailure(abi.ENOMEM, "load: staging needs %d frames, %d free"
                                   % (need, self.hv.allocator.free_frames))
        datas = [read_buf(h, bs) if h and bs else b"" for h, bs, _, _ in segments]
        image = KexecImage(ktype, arch, entry, segs, _digest(segs, datas))

        old = self.images.get(ktype)
        if ktype == abi.KEXEC_TYPE_CRASH:
            # The crash region is reserved for this: the old image goes first,
            # so that scrubbing it cannot wipe the new one.
            if old:
                self._release(old)
                old = None
            for seg, data in zip(segs, datas):
                if seg.mapped_only:
                    continue
                self.hv.ram.write(seg.dest, data)
                self.hv.ram.zero(seg.dest + len(data), seg.dest_size - len(data))
        else:
            self._stage(image, datas)
        self.images[ktype] = image
        if old:
            self._release(old)
        self.hv.console.log("kexec: loaded %s image, %d segments, %d KiB, entry 0x%x",
                            abi.KEXEC_TYPE_NAMES[ktype], len(segs), image.size >> 10, entry)

    def _stage(self, image, datas):
        hv = self.hv
        done = []
        try:
            for seg, data in zip(image.segments, datas):
                if seg.mapped_only:
                    continue
                seg.staged = hv.allocator.alloc(seg.dest_size // PAGE_SIZE, abi.DOMID_XEN,
                                                lib.LU_USE_KIMAGE)
                done.append(seg)
                self._write_staged(seg, data)
        except OutOfMemory as e:
            for seg in done:
                self._free_staged(seg)
            raise KexecFailure(abi.ENOMEM, "load: cannot stage image: %s" % e)

    def _write_staged(self, seg, data):
        """Bytes go to the staging frames in destination order; the rest is zero."""
        off = 0
        for mfn, count in sorted(seg.staged):
            n = count * PAGE_SIZE
            chunk = data[off:off + n]
            self.hv.ram.write(mfn * PAGE_SIZE, chunk)
            if len(chunk) < n:
                self.hv.ram.zero(mfn * PAGE_SIZE + len(chunk), n - len(chunk))
            off += n

    def reader(self, image):
        """read(addr, n): machine memory as it will be once the image is
        placed, for what lies in its loaded segments; zero elsewhere (a
        hand-off must not depend on bytes the load does not put there)."""
        ram = self.hv.ram

        def read(addr, n):
            out = bytearray(n)
            for seg in image.loaded:
                lo, hi = max(addr, seg.dest), min(addr + n, seg.dest + seg.dest_size)
                if lo >= hi:
                    continue
                if not seg.staged:
                    out[lo - addr:hi - addr] = ram.read(lo, hi - lo)
                    continue
                at = seg.dest       # destination address of each staging run
                for mfn, count in sorted(seg.staged):
                    a, b = max(lo, at), min(hi, at + count * PAGE_SIZE)
                    if a < b:
                        out[a - addr:b - addr] = ram.read(mfn * PAGE_SIZE + (a - at), b - a)
                    at += count * PAGE_SIZE
            return bytes(out)
        return read

    def staged_bytes(self, seg):
        return b"".join(self.hv.ram.read(mfn * PAGE_SIZE, count * PAGE_SIZE)
                        for mfn, count in sorted(seg.staged))

    def _free_staged(self, seg):
        for mfn, count in seg.staged:
            self.hv.ram.scrub(mfn * PAGE_SIZE, count * PAGE_SIZE)
        self.hv.allocator.release(seg.staged)
        seg.staged = []

    def _release(self, image):
        if image.ktype == abi.KEXEC_TYPE_CRASH:
            for seg in image.loaded:
                self.hv.ram.scrub(seg.dest, seg.dest_size)
        else:
            for seg in image.loaded:
                self._free_staged(seg)

    def unload(self, ktype):
        if ktype not in abi.KEXEC_TYPE_NAMES:
            raise KexecFailure(abi.EINVAL, "unload: unknown image type %d" % ktype)
        image = self.images.pop(ktype, None)
        if image:
            self._release(image)
            self.hv.console.log("kexec: unloaded %s image", abi.KEXEC_TYPE_NAMES[ktype])

    def status(self, ktype):
        if ktype not in abi.KEXEC_TYPE_NAMES:
            raise KexecFailure(abi.EINVAL, "status: unknown image type %d" % ktype)
        return 1 if ktype in self.images else 0

    def adopt(self, image):
        """Take over the crash image a live update carried, whose bytes
        xen#1 left in the crash region: -> True, or False (and not loaded)
        if they no longer match the digest it was loaded with."""
        self.images[image.ktype] = image
        if self.image_intact(image.ktype):
            return True
        del self.images[image.ktype]
        return False

    def image_intact(self, ktype):
        """Recompute the loaded image's digest from RAM (pre-flight check)."""
        import hashlib
        image = self.images[ktype]
        digest = hashlib.sha256()
        for seg in image.loaded:
            digest.update(seg.dest.to_bytes(8, "little"))
            if seg.staged:
                digest.update(self.staged_bytes(seg))
            else:
                digest.update(self.hv.ram.read(seg.dest, seg.dest_size))
        return digest.hexdigest() == image.digest
