"""The frame table: per-MFN owner, use and counts, kept in host RAM.

It lives in Xen-owned frames of host RAM (never in LU bootmem), so a new
hypervisor can be told to rebuild it in place instead of faulting in fresh
memory.  Its format is private to one hypervisor: never handed over as is.
"""
import bisect

from xen_public.abi import DOMID_INVALID, PAGE_SIZE
from xen_public.units import align_up

from ._lu_core import ffi, lib
from .ram import RamError

USE_NAMES = {
    lib.LU_USE_FREE: "free",
    lib.LU_USE_RESERVED: "reserved",
    lib.LU_USE_XEN_IMAGE: "xen-image",
    lib.LU_USE_LU_BOOTMEM: "lu-bootmem",
    lib.LU_USE_XENHEAP: "xenheap",
    lib.LU_USE_GUEST: "guest",
    lib.LU_USE_KIMAGE: "kexec-image",
    lib.LU_USE_CRASH: "crash",
    lib.LU_USE_STREAM: "lu-stream",
    lib.LU_USE_SHARED: "shared",
    lib.LU_USE_M2P: "m2p",
    lib.LU_USE_IOMMU_PT: "iommu-pt",
}
ENTRY_SIZE = ffi.sizeof("struct lu_frame")


class OutOfMemory(Exception):
    pass


class RefError(Exception):
    """A reference Xen would refuse: a type the frame cannot take."""


PGT_SHIFT = lib.LU_PGT_TYPE_SHIFT
PGT_COUNT = lib.LU_PGT_COUNT_MASK
PGC_ALLOCATED = lib.LU_PGC_ALLOCATED


class _PendingEntry:
    """A pending guest frame's entry as pass 0 writes it (allocated, no
    type), and the references taken on it since."""
    __slots__ = ("type_info", "count_info")

    def __init__(self):
        self.type_info, self.count_info = 0, PGC_ALLOCATED | 1


class FrameTable:
    def __init__(self, ram, base_maddr, nr_frames):
        self.ram = ram
        self.base_maddr = base_maddr
        self.nr_frames = nr_frames
        self.frames = ram.pointer(base_maddr, "struct lu_frame *")
        # After a live update: guest frames whose entries are written once
        # the guests run (pending_guest_frames), and the references taken
        # on them before.
        self._pending = None

    @staticmethod
    def bytes_for(nr_frames):
        return align_up(nr_frames * ENTRY_SIZE, PAGE_SIZE)

    def _range(self, first, end):
        end = self.nr_frames if end is None else end
        if not 0 <= first <= end <= self.nr_frames:
            raise ValueError("frame range [%d, %d) outside [0, %d)" % (first, end, self.nr_frames))
        return first, end

    def mark(self, first, count, owner, use, type_info=0, count_info=0):
        self._range(first, first + count)
        lib.lu_frames_set(self.frames, first, count, owner, use, type_info, count_info)

    def mark_unmapped(self, first, count, owner, use, count_info=0):
        """mark() for entries this process has not touched yet (after a
        live update): their pages of the table are faulted in at once, for
        reading, first (a page whose entries already hold this stays clean)."""
        self.ram.populate(self.base_maddr + first * ENTRY_SIZE, count * ENTRY_SIZE, write=False)
        self.mark(first, count, owner, use, count_info=count_info)

    def extents(self, owner, use, first=0, end=None):
        """[(first_mfn, nr_frames)] of the runs owned by `owner` with `use`."""
        first, end = self._range(first, end)
        cap = 64
        while True:
            starts = ffi.new("uint64_t[]", cap)
            lengths = ffi.new("uint64_t[]", cap)
            total = lib.lu_frames_scan(self.frames, first, end, owner, use, starts, lengths, cap)
            if total <= cap:
                return [(starts[i], lengths[i]) for i in range(total)]
            cap = total

    def use_runs(self):
        """[(first_mfn, nr_frames, use name)] over the whole table."""
        total = lib.lu_frames_use_runs(self.frames, 0, self.nr_frames, ffi.NULL, ffi.NULL, ffi.NULL, 0)
        starts, lengths = ffi.new("uint64_t[]", total), ffi.new("uint64_t[]", total)
        uses = ffi.new("uint8_t[]", total)
        lib.lu_frames_use_runs(self.frames, 0, self.nr_frames, starts, lengths, uses, total)
        return [(starts[i], lengths[i], USE_NAMES.get(uses[i], str(uses[i]))) for i in range(total)]

    def count(self, owner, use, first=0, end=None):
        first, end = self._range(first, end)
        return lib.lu_frames_count(self.frames, first, end, owner, use)

    def all_match(self, first, count, owner, use):
        self._range(first, first + count)
        return lib.lu_frames_find_mismatch(self.frames, first, first + count, owner, use) \
            == first + count

    def pending_guest_frames(self, extents):
        """[(first, count, domid)] of guest memory whose entries are left
        for later (write_pending): xen#1's words until then, which nothing
        may read.  A reference taken on one of these frames before then is
        counted beside the table, on the entry pass 0 would have written,
        and goes in with it."""
        extents = sorted(extents)
        self._pending = ([first for first, _, _ in extents], extents, {})

    def write_pending(self):
        """The pending guest frames' entries, with the references taken."""
        _, extents, taken = self._pending
        for first, n, domid in extents:
            self.mark_unmapped(first, n, domid, lib.LU_USE_GUEST, count_info=PGC_ALLOCATED | 1)
        for mfn, e in taken.items():
            self.frames[mfn].type_info, self.frames[mfn].count_info = e.type_info, e.count_info
        self._pending = None

    def _entry_for_ref(self, mfn):
        """The entry a reference on mfn changes: the table's, or a pending
        frame's own."""
        if self._pending is not None:
            starts, extents, taken = self._pending
            i = bisect.bisect_right(starts, mfn) - 1
            if i >= 0 and mfn < starts[i] + extents[i][1]:
                return taken.get(mfn) or taken.setdefault(mfn, _PendingEntry())
        return self.frames[mfn]

    def get_ref(self, mfn, page_type=None, n=1):
        """Take n general references, and n type references of page_type
        (LU_PGT_*) if given, as Xen's get_page_and_type()."""
        f = self._entry_for_ref(mfn)
        if page_type is not None:
            have, count = f.type_info >> PGT_SHIFT, f.type_info & PGT_COUNT
            if count and have != page_type:
                raise RefError("mfn 0x%x has type %d, cannot take type %d" % (mfn, have, page_type))
            f.type_info = (page_type << PGT_SHIFT) | (f.type_info & lib.LU_PGT_PINNED) | (count + n)
        f.count_info += n

    def put_ref(self, mfn, page_type=None, n=1):
        f = self._entry_for_ref(mfn)
        if page_type is not None:
            count = (f.type_info & PGT_COUNT) - n
            f.type_info = ((page_type << PGT_SHIFT) | count) if count else 0
        f.count_info -= n

    def walk_pv(self, domid, l4_mfn, expect=None, owned=None):
        """Walk a PV domain's page tables from its L4 (the C core) and add
        what they imply to `expect` (a struct lu_expect array), or to this
        table itself, as pinning does.  A frame is the domain's if its entry
        says so, or, given `owned` ([(first, count)] the domain owns), if it
        lies in one of those: entries not yet rebuilt are not trusted.
        None if they validate, else (lu_walk_error, table mfn, entry)."""
        if expect is None:
            acc = ffi.cast("uint8_t *", self.frames) + ffi.offsetof("struct lu_frame", "type_info")
            stride = ENTRY_SIZE
        else:
            acc, stride = ffi.cast("uint8_t *", expect), ffi.sizeof("struct lu_expect")
        bad_mfn, bad_entry = ffi.new("uint64_t *"), ffi.new("uint32_t *")
        starts = counts = ffi.NULL
        if owned is not None:
            owned = sorted(owned)
            starts = ffi.new("uint64_t[]", [s for s, _ in owned])
            counts = ffi.new("uint64_t[]", [n for _, n in owned])
        rc = lib.lu_pv_walk(self.ram.base, self.ram.nr_frames, self.frames, domid,
                            starts, counts, len(owned or ()), l4_mfn, acc, stride, bad_mfn, bad_entry)
        return (rc, bad_mfn[0], bad_entry[0]) if rc else None

    def entry(self, mfn):
        f = self.frames[mfn]
        return {"owner": f.owner, "use": USE_NAMES.get(f.use, f.use),
                "type_info": f.type_info, "count_info": f.count_info}

    def guest_bytes(self, maddr, length):
        """How many bytes of [maddr, maddr+length) lie in guest frames."""
        first, end = maddr // PAGE_SIZE, -(-(maddr + length) // PAGE_SIZE)
        if not maddr % PAGE_SIZE and not length % PAGE_SIZE:
            # Whole frames (an image, a stream): one C pass.
            return self.histogram(first, end).get("guest", 0) * PAGE_SIZE
        total = 0
        for mfn in range(first, end):
            if self.frames[mfn].use == lib.LU_USE_GUEST:
                lo, hi = max(maddr, mfn * PAGE_SIZE), min(maddr + length, (mfn + 1) * PAGE_SIZE)
                total += hi - lo
        return total

    def histogram(self, first=0, end=None):
        """{use name: frames} over [first, end), by default the whole table."""
        first, end = self._range(first, end)
        counts = ffi.new("uint64_t[]", lib.LU_USE_MAX)
        lib.lu_frames_histogram(self.frames, first, end, counts)
        return {USE_NAMES[u]: counts[u] for u in USE_NAMES if counts[u]}


def merged_runs(extents):
    """[(first, count)] sorted, adjacent ones merged: the runs a scan of the
    table finds for the same frames (extents must not overlap)."""
    out = []
    for first, n in sorted(extents):
        if out and out[-1][0] + out[-1][1] == first:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((first, n))
    return out


class FrameAllocator:
    """Free frames as sorted extents, rebuilt from a scan of the table.

    Domains get the highest free frames first, which keeps low memory (and
    with it the LU window below Xen) for the hypervisor's own needs.
    """

    def __init__(self, table, free_extents=None):
        """free_extents: [(first, count)] known to be exactly the table's
        free frames (a restore knows them), sparing a scan of the table."""
        self.table = table
        if free_extents is None:
            self.rescan()
            return
        runs = merged_runs(free_extents)
        self._starts, self._lengths = [s for s, _ in runs], [n for _, n in runs]

    def rescan(self):
        runs = self.table.extents(DOMID_INVALID, lib.LU_USE_FREE)
        self._starts = [s for s, _ in runs]
        self._lengths = [n for _, n in runs]

    @property
    def free_frames(self):
        return sum(self._lengths)

    def free_extents(self):
        return list(zip(self._starts, self._lengths))

    def _take(self, index, start, count):
        """Remove [start, start+count) from free extent `index`."""
        s, n = self._starts[index], self._lengths[index]
        head, tail = start - s, (s + n) - (start + count)
        del self._starts[index], self._lengths[index]
        for piece_start, piece_len in ((s, head), (start + count, tail)):
            if piece_len:
                i = bisect.bisect_left(self._starts, piece_start)
                self._starts.insert(i, piece_start)
                self._lengths.insert(i, piece_len)

    def alloc(self, nr_frames, owner, use, limit=None, contiguous=False, align=1, count_info=0):
        """Allocate and mark frames; returns [(first_mfn, count)] (highest first).

        limit: every frame must lie below this MFN.  contiguous: one extent,
        aligned to `align` frames.  Raises OutOfMemory, changing nothing.
        """
        limit = self.table.nr_frames if limit is None else limit
        if nr_frames <= 0:
            raise ValueError("allocation of %d frames" % nr_frames)
        picks, need = [], nr_frames
        for i in range(len(self._starts) - 1, -1, -1):
            s, n = self._starts[i], self._lengths[i]
            top = min(s + n, limit)
            if top <= s:
                continue
            if contiguous:
                start = (top - nr_frames) - (top - nr_frames) % align
                if start >= s:
                    picks = [(start, nr_frames)]
                    need = 0
                    break
                continue
            take = min(need, top - s)
            picks.append((top - take, take))
            need -= take
            if not need:
                break
        if need:
            raise OutOfMemory("need %d frames (%d MiB)%s, %d free"
                              % (nr_frames, nr_frames * PAGE_SIZE >> 20,
                                 " contiguous" if contiguous else "", self.free_frames))
        self._back(picks)
        for start, count in picks:
            i = bisect.bisect_right(self._starts, start) - 1
            self._take(i, start, count)
            self.table.mark(start, count, owner, use, count_info=count_info)
        return picks

    def _back(self, extents):
        """Disk behind every frame handed out, or OutOfMemory with nothing
        taken (what was reserved goes back to holes)."""
        ram = self.table.ram
        done = []
        for start, count in extents:
            try:
                ram.reserve(start * PAGE_SIZE, count * PAGE_SIZE)
            except RamError as e:
                for s, n in done:
                    ram.scrub(s * PAGE_SIZE, n * PAGE_SIZE)
                raise OutOfMemory(str(e)) from None
            done.append((start, count))

    def claim(self, first, count, owner, use):
        """Take a specific free range (boot-time reservations)."""
        i = bisect.bisect_right(self._starts, first) - 1
        if i < 0 or first + count > self._starts[i] + self._lengths[i]:
            raise OutOfMemory("frames [0x%x, 0x%x) are not free" % (first, first + count))
        self._back([(first, count)])
        self._take(i, first, count)
        self.table.mark(first, count, owner, use)

    def release(self, extents):
        """Give frames back (already scrubbed by the caller)."""
        for start, count in extents:
            self.table.mark(start, count, DOMID_INVALID, lib.LU_USE_FREE)
            i = bisect.bisect_left(self._starts, start)
            self._starts.insert(i, start)
            self._lengths.insert(i, count)
            # Merge with the neighbours.
            if i + 1 < len(self._starts) and self._starts[i] + self._lengths[i] == self._starts[i + 1]:
                self._lengths[i] += self._lengths.pop(i + 1)
                self._starts.pop(i + 1)
            if i > 0 and self._starts[i - 1] + self._lengths[i - 1] == self._starts[i]:
                self._lengths[i - 1] += self._lengths.pop(i)
                self._starts.pop(i)

