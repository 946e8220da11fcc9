"""xen#2 checks the stream before anything changes: every record decoded
(xen_public.lurecords), then its meaning: frames inside RAM and claimed
once, outside LU bootmem and the image; every domid a record depends on
present; ports that point back.  Read-only: returns the plans (one per
domain) and the Facts the restore needs, or raises StreamError naming the
record and offset.  Until the stream is consumed xen#2 allocates no host
frame outside LU bootmem.
"""
import threading

from xen_public import abi, lurecords as R, lustream as ls
from xen_public.abi import PAGE_SIZE

from .. import guest
from .._lu_core import ffi, lib
from ..evtchn import FIFO_PORTS
from ..frametable import ENTRY_SIZE, FrameTable
from ..kexec import KexecFailure, KexecImage, Segment, check_segments
from ..guest import P2M
from ..iommu import check_hardware
from ..m2p import M2P
from .stream import DOMAIN_HEADER, DOMAIN_TYPE_PV, IMAGE_HEADER, RECORD_HEADER, StreamError, iter_sections, \
    validate

LOW_RESERVED_FRAMES = 256       # the first MiB: never a domain's, never free

class DomainPlan:
    """One domain section: its records as decoded, then what check() finds
    in them (each set by the check named), then the domain apply builds."""

    def __init__(self, header, offset):
        self.header = header
        self.offset = offset
        self.records = {}       # type -> [(offset, decoded)]
        # _check_domain_records, from LU_DOMAIN:
        self.domid = self.flags = self.dtype = self.vcpus = self.name = self.shinfo = None
        self.p2m = self.shared = None           # _check_memory: [(gfn, mfn, n)], [(mfn, n)]
        self.grant = None                       # _check_grant_table: (version, frames, status frames)
        self.types = self.l4 = None             # _check_pv_types: (count, raw items), pinned L4
        self.vcpu_records = None                # _check_vcpus: LU_VCPU_STATE values by vCPU
        self.fifo = self.ports = None           # _check_events
        self.iommu = None                       # _check_iommu: (root, extents, devices) or None
        self.port_map = None                    # check: {port: port item}
        self.dom = None                         # apply's pass 0: the Domain

    def where(self, rtype, at=None):
        """The record at offset `at`, or the first of its type, or, if it
        has none, the section: what a refusal names."""
        recs = self.records.get(rtype)
        if not recs:
            return "domain section at offset 0x%x" % self.offset
        return "record %s at offset 0x%x" % (ls.record_name(rtype), recs[0][0] if at is None else at)

    def one(self, rtype, required=True):
        got = self.records.get(rtype, [])
        if len(got) > 1:
            raise StreamError("record %s at offset 0x%x: a domain has it more than once"
                              % (ls.record_name(rtype), got[1][0]))
        if not got:
            if required:
                raise StreamError("domain section at offset 0x%x has no %s record"
                                  % (self.offset, ls.record_name(rtype)))
            return None
        return got[0][1]

    def all(self, rtype):
        return [v for _, v in self.records.get(rtype, [])]


def decode(buf, known_types):
    """Framing, then every body: -> (system {type: [value]}, [DomainPlan])."""
    validate(buf, known_types)
    system, domains = {}, []
    for header, recs in iter_sections(buf):
        # A domain section starts at its header, just before its first record.
        plan = DomainPlan(header, recs[0][0] - DOMAIN_HEADER.size) if header is not None else None
        for off, rtype, body in recs:
            base = rtype & ~ls.REC_OPTIONAL
            if base == ls.REC_END:
                continue
            rec = R.TYPES.get(base)
            if rec is None:
                continue            # an optional record this hypervisor does not know
            if (plan is None) != (rec.section == "system"):
                # Filed where nothing reads it, it would be lost without a word.
                raise StreamError("record %s at offset 0x%x does not belong in %s"
                                  % (ls.record_name(rtype), off, "a domain section" if plan else "the system section"))
            try:
                value = rec.decode(body, off + RECORD_HEADER.size)
            except R.RecordError as e:
                raise StreamError("record %s at offset 0x%x: %s" % (ls.record_name(rtype), off, e))
            if plan is None:
                system.setdefault(base, []).append((off, value))
            else:
                plan.records.setdefault(base, []).append((off, value))
        if plan is not None:
            domains.append(plan)
    return system, domains


def prefault_frametable(hv, system, plans):
    """While the stream is checked, take the page faults of the frame-table
    entries the blackout rebuilds (a new process has none of its pages
    mapped) on another thread: those of Xen's regions, the M2P, PV
    domains' memory and every domain's shared frames (an HVM or PVH
    guest's and the free frames' entries wait for the guests to run:
    apply.py, xen2.py).  For reading: the rebuild writes
    only the pages whose entries change, and a page mapped for writing
    would be dirty, and written back, whether it changed or not.  Changes
    no byte, so it needs no trust in the stream yet; clamped to the table."""
    nr = hv.ram.nr_frames
    regions = [r for _, (_, rs) in system.get(ls.REC_LU_XEN_REGIONS, []) for r in rs]
    table = [(start, n) for start, n, kind, _ in regions if kind == R.REGION_FRAMETABLE and start < nr]
    if not table:
        return threading.Thread()   # nothing to fault in: check() refuses this stream
    ft_start = table[0][0] * PAGE_SIZE
    ft_end = min(ft_start + FrameTable.bytes_for(nr), hv.ram.size)
    claimed = [(start, n) for start, n, _, _ in regions]
    claimed += [(m2p, M2P.bytes_for(nr) // PAGE_SIZE) for _, (m2p, _) in system.get(ls.REC_LU_M2P, [])]
    claimed += [(mfn, n) for plan in plans for _, rec in plan.records.get(ls.REC_LU_PAGE_OWNERSHIP, [])
                for mfn, n, kind, _ in rec.items if kind == R.OWN_SHARED or plan.header[0] == DOMAIN_TYPE_PV]
    spans = []
    for first, n in sorted(claimed):
        lo = max(ft_start, (ft_start + first * ENTRY_SIZE) & ~(PAGE_SIZE - 1))
        hi = min(ft_end, ft_start + (first + n) * ENTRY_SIZE)
        if lo >= hi:
            continue
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    worker = threading.Thread(target=lambda: [hv.ram.populate(lo, hi - lo, write=False) for lo, hi in spans],
                              name="prefault", daemon=True)
    worker.start()
    return worker


class Facts:
    """What check() found that restore() and the report need: the frame
    table's region (start, frames, kind, 0), every Xen region, the M2P
    (start, entries), the frames nobody claims, xen#1's timings and update
    id, its version, and the crash image it carried (a KexecImage whose
    bytes are not checked yet, or None)."""
    __slots__ = ("frametable", "regions", "m2p", "free", "timings", "update_id", "xen1_version",
                 "crash_image")

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)


def check(hv, system, domains, stream, lu_range, xen_range):
    """Every record's meaning, before anything changes; -> Facts."""
    nr_frames = hv.ram.nr_frames
    claims = Claims(nr_frames)
    xen1_version = _check_version(hv, system, domains)
    regions, ft_region = _check_regions(system, claims, nr_frames)
    m2p = _check_m2p(system, claims, nr_frames)
    crash_image = _check_kexec_image(system, regions)
    claims.add(lu_range[0], lu_range[1], "LU bootmem", "this hypervisor's command line")
    claims.add(xen_range[0], xen_range[1], "hypervisor image", "this hypervisor")
    claims.add(0, LOW_RESERVED_FRAMES, "low memory", "this hypervisor")
    for first, n in stream.extents():
        claims.add(first, n, "live-update stream", "the MFN array")
    by_id = _check_domain_records(domains)
    for plan in domains:
        _check_domain(plan, by_id, claims.add, nr_frames)
    claims.refuse_overlaps()
    _check_iommu_hardware(hv, system, regions, domains)
    for plan in domains:
        plan.port_map = {p[0]: p for p in plan.ports}
    for plan in domains:
        _check_links(plan, by_id)
    return Facts(frametable=ft_region, regions=regions, m2p=m2p, free=claims.unclaimed(),
                 timings=[t for _, (_, ts) in system.get(ls.REC_LU_TIMINGS, []) for t in ts],
                 update_id=next((head[2] for _, (head, _) in system.get(ls.REC_LU_TIMINGS, [])), None),
                 xen1_version=xen1_version, crash_image=crash_image)


class Claims:
    """The frames each part of the stream claims: no frame may be in two,
    and whatever nobody claims is free."""

    def __init__(self, nr_frames):
        self.nr_frames = nr_frames
        self.claims = []        # (first, end, what, where)

    def add(self, first, count, what, where):
        if count <= 0 or first + count > self.nr_frames:
            raise StreamError("%s: frames 0x%x+%d are not inside RAM" % (where, first, count))
        self.claims.append((first, first + count, what, where))

    def refuse_overlaps(self):
        self.claims.sort()
        for a, b in zip(self.claims, self.claims[1:]):
            if b[0] < a[1]:
                raise StreamError("%s: frame 0x%x is claimed twice (%s, and %s in %s)"
                                  % (b[3], b[0], b[2], a[2], a[3]))

    def unclaimed(self):
        """[(first, count)] between the claims (sorted by refuse_overlaps):
        the restore marks just these free, and every claimed frame as its
        claim says, so each entry is written once."""
        free, at = [], 0
        for first, end, _, _ in self.claims:
            if first > at:
                free.append((at, first - at))
            at = end
        if at < self.nr_frames:
            free.append((at, self.nr_frames - at))
        return free


def _system_one(system, rtype):
    """(offset, value) of the system section's one record of rtype."""
    got = system.get(rtype, [])
    if not got:
        raise StreamError("the system section at offset 0x%x has no %s record"
                          % (IMAGE_HEADER.size, ls.record_name(rtype)))
    if len(got) > 1:
        raise StreamError("record %s at offset 0x%x: the system section has it more than once"
                          % (ls.record_name(rtype), got[1][0]))
    return got[0]


def _check_version(hv, system, domains):
    off, (major, minor, fmt, nr_domains, extra) = _system_one(system, ls.REC_LU_VERSION)
    lo, hi = hv.personality.lu_versions or (0, -1)
    if not lo <= fmt <= hi:
        raise StreamError("record LU_VERSION at offset 0x%x: stream format %d, this hypervisor restores %d-%d"
                          % (off, fmt, lo, hi))
    if nr_domains != len(domains):
        raise StreamError("record LU_VERSION at offset 0x%x says %d domains, the stream has %d sections"
                          % (off, nr_domains, len(domains)))
    return abi.version_text(major, minor, R.cstr(extra, "ascii"))


def _check_regions(system, claims, nr_frames):
    """-> (every region, the frame table's)."""
    off, (_, regions) = _system_one(system, ls.REC_LU_XEN_REGIONS)
    ft_regions = [r for r in regions if r[2] == R.REGION_FRAMETABLE]
    if len(ft_regions) != 1:
        raise StreamError("record LU_XEN_REGIONS at offset 0x%x: %d frame-table regions, needs 1"
                          % (off, len(ft_regions)))
    for start, n, kind, _ in regions:
        claims.add(start, n, {R.REGION_FRAMETABLE: "frame table", R.REGION_CRASH: "crash region",
                              R.REGION_IOMMU: "IOMMU structures"}.get(kind, "region"),
                   "record LU_XEN_REGIONS at offset 0x%x" % off)
    if ft_regions[0][1] * PAGE_SIZE < FrameTable.bytes_for(nr_frames):
        raise StreamError("record LU_XEN_REGIONS at offset 0x%x: the frame-table region is too small for %d frames"
                          % (off, nr_frames))
    return regions, ft_regions[0]


def _check_m2p(system, claims, nr_frames):
    off, (m2p_start, m2p_entries) = _system_one(system, ls.REC_LU_M2P)
    if m2p_entries != nr_frames:
        raise StreamError("record LU_M2P at offset 0x%x: %d entries for %d frames" % (off, m2p_entries, nr_frames))
    claims.add(m2p_start, M2P.bytes_for(nr_frames) // PAGE_SIZE, "M2P", "record LU_M2P at offset 0x%x" % off)
    return m2p_start, m2p_entries


def _check_kexec_image(system, regions):
    """LU_KEXEC_IMAGE, if any: a crash image whose segments pass Xen's load
    checks against the crash region LU_XEN_REGIONS keeps.  -> KexecImage
    (its digest is checked against RAM once the guests run) or None."""
    got = system.get(ls.REC_LU_KEXEC_IMAGE, [])
    if not got:
        return None
    if len(got) > 1:
        raise StreamError("record LU_KEXEC_IMAGE at offset 0x%x: the system section has it more than once"
                          % got[1][0])
    off, ((_, ktype, _, arch, entry, digest), items) = got[0]
    where = "record LU_KEXEC_IMAGE at offset 0x%x" % off
    if ktype != abi.KEXEC_TYPE_CRASH:
        raise StreamError("%s: image type %d, only a crash image (%d) is carried"
                          % (where, ktype, abi.KEXEC_TYPE_CRASH))
    if arch not in (abi.EM_386, abi.EM_X86_64) or not 0 < len(items) <= abi.KEXEC_SEGMENT_MAX:
        raise StreamError("%s: architecture %d with %d segments" % (where, arch, len(items)))
    crash = [(start, n) for start, n, kind, _ in regions if kind == R.REGION_CRASH]
    if len(crash) != 1:
        raise StreamError("%s: LU_XEN_REGIONS has %d crash regions, needs 1" % (where, len(crash)))
    (start, n), = crash
    if any(flags & ~R.SEG_MAPPED_ONLY for *_, flags, _ in items):
        raise StreamError("%s: unknown segment flags" % where)
    segs = [Segment(dest, dest_size, buf_size, mapped_only=bool(flags))
            for dest, dest_size, buf_size, flags, _ in items]
    try:
        check_segments(ktype, segs, entry, start * PAGE_SIZE, (start + n) * PAGE_SIZE)
    except KexecFailure as e:
        raise StreamError("%s: %s" % (where, e))
    return KexecImage(ktype, arch, entry, segs, digest.hex())


def _check_domain_records(domains):
    """Each section's LU_DOMAIN: a unique, unreserved domid, a known type;
    d0 the control domain.  -> {domid: plan}."""
    by_id = {}
    for plan in domains:
        d = plan.one(ls.REC_LU_DOMAIN)
        domid, flags, dtype, vcpus, _, shinfo, name = d
        where = "record LU_DOMAIN at offset 0x%x" % plan.records[ls.REC_LU_DOMAIN][0][0]
        if domid >= abi.DOMID_FIRST_RESERVED or domid in by_id:
            raise StreamError("%s: domid %d is %s" % (where, domid, "reserved" if domid >= abi.DOMID_FIRST_RESERVED else "a duplicate"))
        if dtype not in R.DTYPE_NAMES or not 1 <= vcpus <= 128:
            raise StreamError("%s: type %d with %d vCPUs" % (where, dtype, vcpus))
        if (plan.header[0] == DOMAIN_TYPE_PV) != (R.DTYPE_NAMES[dtype] == "pv"):
            raise StreamError("%s: domain header type %d does not match type %s" % (where, plan.header[0], R.DTYPE_NAMES[dtype]))
        by_id[domid] = plan
        plan.domid, plan.flags, plan.dtype, plan.vcpus, plan.name = \
            domid, flags, R.DTYPE_NAMES[dtype], vcpus, R.cstr(name)
        plan.shinfo = shinfo
    if 0 not in by_id:
        raise StreamError("the stream has no control domain d0")
    if not by_id[0].flags & R.DOM_CONTROL:
        raise StreamError("record LU_DOMAIN at offset 0x%x: d0 is not the control domain"
                          % by_id[0].records[ls.REC_LU_DOMAIN][0][0])
    return by_id


SINGLE = (ls.REC_X86_PV_INFO, ls.REC_HVM_PARAMS, ls.REC_LU_HVM_PARAMS, ls.REC_LU_IOREQ_SERVER,
          ls.REC_LU_GRANT_MAPS, ls.REC_LU_FOREIGN_MAPS, ls.REC_LU_EVTCHN_FIFO, ls.REC_LU_IOMMU,
          ls.REC_LU_GRANT_STATUS)


def _check_domain(plan, by_id, claim, nr_frames):
    for rtype in SINGLE:
        plan.one(rtype, required=False)      # at most one each, refused now rather than mid-restore
    ram_owned = _check_memory(plan, claim)
    _check_grant_table(plan)
    if plan.dtype == "pv":
        _check_pv_types(plan, ram_owned)
    _check_vcpus(plan)
    _check_events(plan)
    _check_hvm_params(plan)
    _check_iommu(plan, claim)


def _check_memory(plan, claim):
    """Ownership extents, the P2M over them, the guest info and shared-info
    pages; -> the memory (not shared) extents."""
    d = plan.domid
    p2m = plan.one(ls.REC_LU_P2M_EXTENTS).items
    owned = plan.one(ls.REC_LU_PAGE_OWNERSHIP).items
    ram_owned, shared_owned = [], []
    for mfn, n, kind, _ in owned:
        if kind not in (R.OWN_RAM, R.OWN_SHARED):
            raise StreamError("%s: d%d ownership kind %d" % (plan.where(ls.REC_LU_PAGE_OWNERSHIP), d, kind))
        claim(mfn, n, "d%d %s" % (d, "memory" if kind == R.OWN_RAM else "shared page"),
              plan.where(ls.REC_LU_PAGE_OWNERSHIP))
        (ram_owned if kind == R.OWN_RAM else shared_owned).append((mfn, n))

    gfns = sorted((g, n) for g, _, n in p2m)
    for (g0, n0), (g1, _) in zip(gfns, gfns[1:]):
        if g1 < g0 + n0:
            raise StreamError("%s: d%d gfn 0x%x mapped twice" % (plan.where(ls.REC_LU_P2M_EXTENTS), d, g1))
    for g, m, n in p2m:
        if not _inside(m, n, ram_owned):
            raise StreamError("%s: d%d maps gfn 0x%x to frames 0x%x+%d it does not own"
                              % (plan.where(ls.REC_LU_P2M_EXTENTS), d, g, m, n))
    # No frame at two gfns: with that, the sums below mean "exactly".
    mfns = sorted((m, n) for _, m, n in p2m)
    for (m0, n0), (m1, _) in zip(mfns, mfns[1:]):
        if m1 < m0 + n0:
            raise StreamError("%s: d%d maps frame 0x%x at two gfns" % (plan.where(ls.REC_LU_P2M_EXTENTS), d, m1))
    if sum(n for _, _, n in p2m) != sum(n for _, n in ram_owned):
        raise StreamError("%s: d%d owns frames its P2M does not map" % (plan.where(ls.REC_LU_P2M_EXTENTS), d))
    plan.p2m = [tuple(e) for e in p2m]
    if not _populated(plan, guest.INFO_GFN):
        raise StreamError("%s: d%d does not map gfn 0x%x, its guest info page"
                          % (plan.where(ls.REC_LU_P2M_EXTENTS), d, guest.INFO_GFN))
    plan.shared = shared_owned
    if not _inside(plan.shinfo, 1, shared_owned):
        raise StreamError("%s: d%d shared info 0x%x is not a page it shares" % (plan.where(ls.REC_LU_DOMAIN), d, plan.shinfo))
    return ram_owned


def _inside(mfn, count, extents):
    return any(m <= mfn and mfn + count <= m + n for m, n in extents)


def _check_grant_table(plan):
    d = plan.domid
    (nr_gt, version), frames = plan.one(ls.REC_LU_GRANT_TABLE)
    status_rec = plan.one(ls.REC_LU_GRANT_STATUS, required=(version == 2))
    status = [f for (f,) in status_rec.items] if status_rec else []
    if version not in (1, 2) or not nr_gt:
        raise StreamError("%s: d%d grant table version %d with %d frames" % (plan.where(ls.REC_LU_GRANT_TABLE), d, version, nr_gt))
    for rtype, fs in ((ls.REC_LU_GRANT_TABLE, [f for (f,) in frames]), (ls.REC_LU_GRANT_STATUS, status)):
        for f in fs:
            if not _inside(f, 1, plan.shared):
                raise StreamError("%s: d%d grant frame 0x%x is not a page it shares" % (plan.where(rtype), d, f))
    plan.grant = (version, [f for (f,) in frames], status)


def _check_pv_types(plan, ram_owned):
    """Every typed frame owned and typed L1-L4 or descriptor; one pinned L4."""
    d = plan.domid
    plan.one(ls.REC_X86_PV_INFO)
    (count, _), items = plan.one(ls.REC_LU_PV_PAGE_TYPES)
    extents = sorted(ram_owned)
    starts = ffi.new("uint64_t[]", [m for m, _ in extents])
    counts = ffi.new("uint64_t[]", [n for _, n in extents])
    pinned, nr_pinned = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    bad = lib.lu_pv_types_check(ffi.from_buffer(items), count, starts, counts, len(extents),
                                R.PT_PINNED, pinned, nr_pinned)
    if bad >= 0:
        mfn, t, _ = R.PV_PAGE_TYPES.item.struct.unpack_from(items, bad * R.PV_PAGE_TYPES.item.size)
        raise StreamError("%s: d%d frame 0x%x type %d" % (plan.where(ls.REC_LU_PV_PAGE_TYPES), d, mfn, t))
    if nr_pinned[0] != 1:
        raise StreamError("%s: d%d needs exactly one pinned L4, has %d"
                          % (plan.where(ls.REC_LU_PV_PAGE_TYPES), d, nr_pinned[0]))
    plan.types = (count, items)
    plan.l4 = pinned[0]


def _check_vcpus(plan):
    d = plan.domid
    vcpus = plan.all(ls.REC_LU_VCPU_STATE)
    if sorted(v[0] for v in vcpus) != list(range(plan.vcpus)):
        raise StreamError("%s: d%d has %d vCPUs but vCPU records %s"
                          % (plan.where(ls.REC_LU_VCPU_STATE), d, plan.vcpus, sorted(v[0] for v in vcpus)))
    for at, v in plan.records.get(ls.REC_LU_VCPU_STATE, []):
        # Named by the vCPU's own record, not the domain's first.
        where = plan.where(ls.REC_LU_VCPU_STATE, at)
        if plan.dtype == "pv" and v[-1] != plan.l4:
            raise StreamError("%s: d%d vCPU%d CR3 0x%x is not its pinned L4" % (where, d, v[0], v[-1]))
        if v[1] not in (lib.LU_RUN_RUNNABLE, lib.LU_RUN_BLOCKED_IO, lib.LU_RUN_BLOCKED_RING):
            raise StreamError("%s: d%d vCPU%d run state %d" % (where, d, v[0], v[1]))
    plan.vcpu_records = sorted(vcpus)


def _check_events(plan):
    """The FIFO ABI's pages (before the ports, populated), then the ports."""
    d = plan.domid
    fifo = plan.one(ls.REC_LU_EVTCHN_FIFO, required=False)
    if fifo:
        ports_off = plan.records[ls.REC_LU_EVTCHN_PORTS][0][0] if ls.REC_LU_EVTCHN_PORTS in plan.records else 1 << 62
        if plan.records[ls.REC_LU_EVTCHN_FIFO][0][0] > ports_off:
            raise StreamError("%s: the ABI must come before the ports" % plan.where(ls.REC_LU_EVTCHN_FIFO))
        for g in fifo:
            if not any(g0 <= g < g0 + n for g0, _, n in plan.p2m):
                raise StreamError("%s: d%d FIFO page gfn 0x%x is not populated" % (plan.where(ls.REC_LU_EVTCHN_FIFO), d, g))
    plan.fifo = fifo
    plan.ports = plan.one(ls.REC_LU_EVTCHN_PORTS).items


def _check_hvm_params(plan):
    """Each parameter once, one Xen has, in the record that carries it:
    HVM_PARAMS what migration carries, LU_HVM_PARAMS the rest."""
    d, seen = plan.domid, set()
    for rtype, migrated in ((ls.REC_HVM_PARAMS, True), (ls.REC_LU_HVM_PARAMS, False)):
        items = items_of(plan, rtype)
        if items and plan.dtype == "pv":
            raise StreamError("%s: d%d is PV and has no HVM parameters" % (plan.where(rtype), d))
        for index, _ in items:
            if index >= abi.HVM_NR_PARAMS:
                raise StreamError("%s: d%d HVM parameter %d does not exist (Xen has %d)"
                                  % (plan.where(rtype), d, index, abi.HVM_NR_PARAMS))
            if (index in R.MIGRATED_HVM_PARAMS) != migrated:
                raise StreamError("%s: d%d HVM parameter %d belongs in %s" % (
                    plan.where(rtype), d, index, "LU_HVM_PARAMS" if migrated else "HVM_PARAMS"))
            if index in seen:
                raise StreamError("%s: d%d HVM parameter %d is given twice" % (plan.where(rtype), d, index))
            seen.add(index)


def _check_iommu(plan, claim):
    d = plan.domid
    iommu = plan.one(ls.REC_LU_IOMMU, required=False)
    if iommu:
        root, extents, devices = iommu
        for mfn, n in extents:
            claim(mfn, n, "d%d IOMMU tables" % d, plan.where(ls.REC_LU_IOMMU))
        if not _inside(root, 1, extents):
            raise StreamError("%s: d%d IOMMU root 0x%x is not among its tables" % (plan.where(ls.REC_LU_IOMMU), d, root))
    plan.iommu = iommu


def _check_iommu_hardware(hv, system, regions, domains):
    """The IOMMU running as the stream says: its tables among the frames it
    names, each device through its domain's tables (xen#2 takes it over as
    it is, so it must be what the stream describes)."""
    off = system[ls.REC_LU_XEN_REGIONS][0][0]
    devices = [(bdf, plan.domid, plan.iommu[0]) for plan in domains if plan.iommu for bdf in plan.iommu[2]]
    problem = check_hardware(hv.chipset, hv.ram, [(s, n) for s, n, kind, _ in regions if kind == R.REGION_IOMMU],
                             devices)
    if problem:
        raise StreamError("record LU_XEN_REGIONS at offset 0x%x: %s" % (off, problem))


def _check_links(plan, by_id):
    """Cross-domain references: each must name a domain in the stream."""
    d = plan.domid
    ports = plan.port_map
    # Pending and mask bits live in one page: the FIFO event array or shared info.
    max_ports = FIFO_PORTS if plan.fifo else abi.EVTCHN_2L_NR_CHANNELS
    for port, kind, _, vcpu, rdom, rport, virq, _ in plan.ports:
        if kind not in R.PORT_KIND_NAMES or not 0 < port < max_ports:
            raise StreamError("%s: d%d port %d kind %d" % (plan.where(ls.REC_LU_EVTCHN_PORTS), d, port, kind))
        if kind == R.PORT_KINDS["interdomain"]:
            peer = by_id.get(rdom)
            back = peer.port_map.get(rport) if peer else None
            if back is None or back[4] != d or back[5] != port:
                raise StreamError("%s: d%d port %d is bound to d%d port %d, which does not exist or "
                                  "does not point back" % (plan.where(ls.REC_LU_EVTCHN_PORTS), d, port, rdom, rport))
        elif kind == R.PORT_KINDS["unbound"] and rdom != R.NO_DOMID and rdom not in by_id:
            raise StreamError("%s: d%d port %d waits for d%d, which is not in the stream"
                              % (plan.where(ls.REC_LU_EVTCHN_PORTS), d, port, rdom))
    ioreq = plan.one(ls.REC_LU_IOREQ_SERVER, required=False)
    if ioreq:
        (nr, sid, dm, ioreq_gfn, buf_gfn, _), pairs = ioreq
        if dm not in by_id:
            raise StreamError("%s: d%d's device model runs in d%d, which is not in the stream"
                              % (plan.where(ls.REC_LU_IOREQ_SERVER), d, dm))
        if not _populated(plan, ioreq_gfn):
            raise StreamError("%s: d%d ioreq page gfn 0x%x is not populated"
                              % (plan.where(ls.REC_LU_IOREQ_SERVER), d, ioreq_gfn))
        if len(pairs) != plan.vcpus:
            raise StreamError("%s: d%d has %d vCPUs but %d ioreq ports"
                              % (plan.where(ls.REC_LU_IOREQ_SERVER), d, plan.vcpus, len(pairs)))
        for gport, dport in pairs:
            # Bound to the device model's port (which, checked above, points back).
            p = ports.get(gport)
            if p is None or p[1] != R.PORT_KINDS["interdomain"] or (p[4], p[5]) != (dm, dport):
                raise StreamError("%s: d%d ioreq port %d is not bound to d%d port %d"
                                  % (plan.where(ls.REC_LU_IOREQ_SERVER), d, gport, dm, dport))
    for handle, granter, flags, ref, _, mfn in items_of(plan, ls.REC_LU_GRANT_MAPS):
        g = by_id.get(granter)
        if g is None:
            raise StreamError("%s: d%d maps a grant of d%d, which is not in the stream"
                              % (plan.where(ls.REC_LU_GRANT_MAPS), d, granter))
        if not any(m <= mfn < m + n for _, m, n in g.p2m):
            raise StreamError("%s: d%d maps frame 0x%x as d%d ref %d, but d%d does not own it"
                              % (plan.where(ls.REC_LU_GRANT_MAPS), d, mfn, granter, ref, granter))
    for domid, _, _, gfn, mfn in items_of(plan, ls.REC_LU_FOREIGN_MAPS):
        t = by_id.get(domid)
        if t is None or not _populated(t, gfn) or P2M(t.p2m).mfn(gfn) != mfn:
            raise StreamError("%s: d%d maps gfn 0x%x of d%d at frame 0x%x, which d%d does not map there"
                              % (plan.where(ls.REC_LU_FOREIGN_MAPS), d, gfn, domid, mfn, domid))


def items_of(plan, rtype):
    """The items of a domain's optional array record, [] without one."""
    value = plan.one(rtype, required=False)
    return value.items if value else []


def _populated(plan, gfn):
    return any(g <= gfn < g + n for g, _, n in plan.p2m)
