"""A realistic host for the core benchmark, built without booting one.

The frame table of a big host laid out as the hypervisor lays out memory
(hyperv_sim.hypervisor) and filled as the domain builder fills it: domains
allocated highest-free-first among short-lived ones that come and go (so
their memory is in several extents), shared pages, PV page tables with
their types.  Then the live-update stream such a host saves
(hyperv_sim.liveupdate.save's records, written with its StreamWriter).
Booting a 64 GiB host with 64 guests would cost minutes and measure nothing
more: the C core only ever sees the table and the stream.
"""
import random
from dataclasses import dataclass, field

from hyperv_sim import guest
from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.domain import p2m_from_extents
from hyperv_sim.frametable import ENTRY_SIZE, PGC_ALLOCATED, FrameAllocator, FrameTable
from xen_public import lurecords as R
from hyperv_sim.liveupdate.stream import DOMAIN_TYPE_HVM, DOMAIN_TYPE_PV, StreamWriter, mfn_array_frames
from hyperv_sim.m2p import M2P
from xen_public import lustream as ls
from xen_public.abi import DOMID_INVALID, DOMID_XEN, PAGE_SIZE

GiB, MiB = 1 << 30, 1 << 20
LOW_RESERVED = 1 * MiB
XEN_START, XEN_SIZE, LU_SIZE = 256 * MiB, 8 * MiB, 64 * MiB
VCPUS = 2
TYPES = ("pv", "pvh", "hvm")


class TableRAM:
    """Just enough of HostRAM for a FrameTable over a bytearray that holds
    only the table (at machine address 0 of this view)."""

    def __init__(self, nbytes):
        self.buf = bytearray(nbytes)
        self.base = ffi.from_buffer("uint8_t[]", self.buf, require_writable=True)

    def pointer(self, maddr, ctype):
        return ffi.cast(ctype, self.base + maddr)

    def reserve(self, maddr, length):
        """No file behind it: nothing to reserve (HostRAM.reserve)."""


@dataclass
class SimDomain:
    domid: int
    dtype: str
    nr_pages: int
    p2m: list = field(default_factory=list)         # [(gfn, mfn, count)]
    shared: list = field(default_factory=list)      # [(mfn, count)]
    types: list = field(default_factory=list)       # PV: [(mfn, type, flags)]


@dataclass
class Host:
    nr_frames: int
    table: FrameTable
    ram: TableRAM
    domains: list
    marks: list             # restore's lu_frames_set calls, in order: (first, count, owner, use, type, count)
    stream: bytes = b""
    stream_extents: list = field(default_factory=list)


def _mark_pv_types(ft, dom, lay):
    """The types pinning the L4 gives (lu_pv_walk): every frame mapped
    writable gets a WRITABLE type reference, each table its level, GDTs
    their descriptor type."""
    writable = (lib.LU_PGT_WRITABLE << lib.LU_PGT_TYPE_SHIFT) | 1
    for _, mfn, n in dom.p2m:
        lib.lu_frames_set(ft.frames, mfn, n, dom.domid, lib.LU_USE_GUEST, writable, PGC_ALLOCATED | 2)
    p2m = guest.P2M(dom.p2m)
    levels = [lib.LU_PGT_L4] + [lib.LU_PGT_L3] * lay.pt_levels[1] + [lib.LU_PGT_L2] * lay.pt_levels[2] + \
        [lib.LU_PGT_L1] * lay.pt_levels[3]
    for gfn, level in zip(lay.pt_gfns, levels):
        f = ft.frames[p2m.mfn(gfn)]
        count = 1 + VCPUS if level == lib.LU_PGT_L4 else 1
        f.type_info = (level << lib.LU_PGT_TYPE_SHIFT) | count | \
            (lib.LU_PGT_PINNED if level == lib.LU_PGT_L4 else 0)
        dom.types.append((p2m.mfn(gfn), level, R.PT_PINNED if level == lib.LU_PGT_L4 else 0))
    for gfn in lay.gdt_gfns:
        ft.frames[p2m.mfn(gfn)].type_info = (lib.LU_PGT_SEG_DESC << lib.LU_PGT_TYPE_SHIFT) | 1
        dom.types.append((p2m.mfn(gfn), lib.LU_PGT_SEG_DESC, 0))
    dom.types.sort()


def make_host(memory=64 * GiB, nr_domains=64, seed=1):
    """A host of `memory` bytes with dom0 (512 MiB) and nr_domains - 1
    guests sharing about 3/4 of RAM, types PV, PVH, HVM in turn (as
    bench's own hosts), and its live-update stream."""
    rnd = random.Random(seed)
    nr = memory // PAGE_SIZE
    ram = TableRAM(nr * ENTRY_SIZE)
    ft = FrameTable(ram, 0, nr)
    ft_frames = FrameTable.bytes_for(nr) // PAGE_SIZE
    ft_first = (nr - ft_frames) // 512 * 512         # 2 MiB aligned, at the top
    boot = [(0, nr, DOMID_INVALID, lib.LU_USE_FREE),
            (0, LOW_RESERVED // PAGE_SIZE, DOMID_XEN, lib.LU_USE_RESERVED),
            ((XEN_START - LU_SIZE) // PAGE_SIZE, LU_SIZE // PAGE_SIZE, DOMID_XEN, lib.LU_USE_LU_BOOTMEM),
            (XEN_START // PAGE_SIZE, XEN_SIZE // PAGE_SIZE, DOMID_XEN, lib.LU_USE_XEN_IMAGE),
            (ft_first, ft_frames, DOMID_XEN, lib.LU_USE_XENHEAP)]
    for first, count, owner, use in boot:
        ft.mark(first, count, owner, use)
    alloc = FrameAllocator(ft)
    (m2p_first, m2p_frames), = alloc.alloc(M2P.bytes_for(nr) // PAGE_SIZE, DOMID_XEN, lib.LU_USE_M2P,
                                            contiguous=True)

    guest_pages = ((memory * 3 // 4 - 512 * MiB) // max(1, nr_domains - 1)) // PAGE_SIZE
    allocated = PGC_ALLOCATED | 1
    domains, transient = [], []
    for domid in range(nr_domains):
        # Domains that come and go between these leave holes the next ones fill.
        if domid and rnd.random() < 0.7:
            transient.append(alloc.alloc(rnd.randint(1, 8) * guest_pages // 16, 1000 + domid,
                                         lib.LU_USE_GUEST, count_info=allocated))
        if transient and rnd.random() < 0.6:
            alloc.release(transient.pop(rnd.randrange(len(transient))))
        dtype = "pv" if domid == 0 else TYPES[(domid - 1) % 3]
        dom = SimDomain(domid, dtype, 512 * MiB // PAGE_SIZE if domid == 0 else guest_pages)
        dom.p2m = p2m_from_extents(alloc.alloc(dom.nr_pages, domid, lib.LU_USE_GUEST, count_info=allocated))
        grant_version = 1 + domid % 2
        dom.shared = sorted(alloc.alloc(2 + (grant_version == 2), domid, lib.LU_USE_SHARED,
                                        count_info=allocated))
        if dtype == "pv":
            lay = guest.plan("pv", dom.nr_pages, VCPUS, "2-level", domid == 0, domid != 0, 16)
            _mark_pv_types(ft, dom, lay)
        domains.append(dom)
    for ext in transient:
        alloc.release(ext)

    stream = build_stream(domains, nr, (ft_first, ft_frames), (m2p_first, m2p_frames))
    pages = -(-len(stream) // PAGE_SIZE)
    stream_extents = alloc.alloc(pages, DOMID_XEN, lib.LU_USE_STREAM)
    array_extent = alloc.alloc(mfn_array_frames(pages), DOMID_XEN, lib.LU_USE_STREAM, contiguous=True)

    # What xen#2's restore marks (restore.restore, _pass0): every claimed
    # extent, and the gaps between them as free, so each entry once.
    claimed = [b + (0, 0) for b in boot[1:]] + [(m2p_first, m2p_frames, DOMID_XEN, lib.LU_USE_M2P, 0, 0)]
    claimed += [(m, n, DOMID_XEN, lib.LU_USE_STREAM, 0, 0) for m, n in sorted(stream_extents) + array_extent]
    for dom in domains:
        claimed += [(m, n, dom.domid, lib.LU_USE_GUEST, 0, allocated) for _, m, n in dom.p2m]
        claimed += [(m, n, dom.domid, lib.LU_USE_SHARED, 0, allocated) for m, n in dom.shared]
    marks, at = [], 0
    for first, count, *_ in sorted(claimed):
        if first > at:
            marks.append((at, first - at, DOMID_INVALID, lib.LU_USE_FREE, 0, 0))
        at = max(at, first + count)
    if at < nr:
        marks.append((at, nr - at, DOMID_INVALID, lib.LU_USE_FREE, 0, 0))
    marks += claimed
    return Host(nr, ft, ram, domains, marks, stream, sorted(stream_extents))


def build_stream(domains, nr_frames, ft_region, m2p_region):
    """The stream save.build_stream writes for these domains: the same
    records in the same order, with the same bodies a running host has."""
    w = StreamWriter()
    w.record(ls.REC_LU_VERSION, R.VERSION.encode(4, 18, ls.LU_FORMAT_VERSION, len(domains), b".0"))
    w.record(ls.REC_LU_XEN_REGIONS, R.XEN_REGIONS.encode((1, 0), [ft_region + (R.REGION_FRAMETABLE, 0)]))
    w.record(ls.REC_LU_M2P, R.M2P.encode(m2p_region[0], nr_frames))
    phases = [(b"quiesce", 1, 2), (b"save", 2, 3)]
    w.record(ls.REC_LU_TIMINGS | ls.REC_OPTIONAL, R.TIMINGS.encode((len(phases), 0, 7), phases))
    w.end()
    for dom in domains:
        pv = dom.dtype == "pv"
        w.domain(DOMAIN_TYPE_PV if pv else DOMAIN_TYPE_HVM, 4, 18)
        w.record(ls.REC_LU_DOMAIN, R.DOMAIN.encode(dom.domid, R.DOM_CONTROL if dom.domid == 0 else 0,
                                              R.DTYPES[dom.dtype], VCPUS, 0, dom.shared[0][0],
                                              b"d%d" % dom.domid))
        if pv:
            w.record(ls.REC_X86_PV_INFO, R.PV_INFO.encode(8, 4, b""))
        w.record(ls.REC_LU_P2M_EXTENTS, R.P2M_EXTENTS.encode((len(dom.p2m), 0), dom.p2m))
        owned = [(m, n, R.OWN_RAM, 0) for _, m, n in sorted(dom.p2m, key=lambda e: e[1])]
        owned += [(m, n, R.OWN_SHARED, 0) for m, n in dom.shared]
        w.record(ls.REC_LU_PAGE_OWNERSHIP, R.OWNERSHIP.encode((len(owned), 0), owned))
        if pv:
            w.record(ls.REC_LU_PV_PAGE_TYPES, R.PV_PAGE_TYPES.encode((len(dom.types), 0), dom.types))
        # Shared info, the grant frame, and with grant v2 its status frame.
        shinfo, grant, *status = [(m + i,) for m, n in dom.shared for i in range(n)]
        w.record(ls.REC_LU_GRANT_TABLE, R.GRANT_TABLE.encode((1, 2 if status else 1), [grant]))
        if status:
            w.record(ls.REC_LU_GRANT_STATUS, R.GRANT_STATUS.encode((len(status), 0), status))
        ports = [(1, R.PORT_KINDS["virq"], 0, 0, R.NO_DOMID, 0, 0, 0)]
        ports += [(2 + v, R.PORT_KINDS["ipi"], 0, v, R.NO_DOMID, 0, 0, 0) for v in range(VCPUS)]
        ports += [(2 + VCPUS, R.PORT_KINDS["interdomain"], 0, 0, 0, 10 + dom.domid, 0, 0)]
        w.record(ls.REC_LU_EVTCHN_PORTS, R.EVTCHN_PORTS.encode((len(ports), 0), ports))
        l4 = next((m for m, t, _ in dom.types if t == lib.LU_PGT_L4), 0)
        for v in range(VCPUS):
            regs = [(dom.domid << 32) + v * 19 + r for r in range(len(R.REG_NAMES))]
            w.record(ls.REC_LU_VCPU_STATE, R.VCPU.encode(v, 0, 0, 0, 123456789 + v, *regs, l4))
        if dom.dtype == "hvm":
            w.record(ls.REC_HVM_PARAMS, R.HVM_PARAMS.encode((4, 0), [(1, 2), (2, 3), (5, 7), (35, 1)]))
            w.record(ls.REC_LU_IOREQ_SERVER, R.IOREQ_SERVER.encode(
                (VCPUS, 1, 0, dom.nr_pages - 4, dom.nr_pages - 3, 0), [(10 + v, 40 + v) for v in range(VCPUS)]))
        w.end()
    return w.getvalue()


def stream_layout(nr_pages, spread=4, seed=2):
    """Where xen#1 might put the stream's pages, in a RAM window small
    enough to hold in a bytearray: nr_pages distinct frames out of
    spread * nr_pages, in machine order (as handover sorts them)."""
    rnd = random.Random(seed)
    return sorted(rnd.sample(range(spread * nr_pages), nr_pages)), spread * nr_pages
