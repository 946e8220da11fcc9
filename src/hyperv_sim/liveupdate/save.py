"""Save: the hypervisor's state as a live-update stream.

System-wide state first (xen#1's version, the regions xen#2 may reuse or
must keep, the M2P), then every domain on its own, cross-domain references
by domid.  Page ownership goes as extents; only PV page-table and descriptor
frames get per-page records.  No page contents: memory stays where it is.
"""
import operator

from xen_public import abi, lustream as ls
from xen_public.abi import PAGE_SIZE

from .. import frametable as fts
from .._lu_core import ffi, lib
from xen_public import lurecords as R
from .parallel import in_parallel
from .stream import DOMAIN_TYPE_HVM, DOMAIN_TYPE_PV, StreamWriter


def split_hvm_params(params):
    """([(index, value)] for HVM_PARAMS, as libxc's save writes it: its
    list's order, zeros left out; [(index, value)] for LU_HVM_PARAMS: the
    rest, by index)."""
    migrated = [(i, params[i]) for i in R.MIGRATED_HVM_PARAMS if params.get(i)]
    toolstack = sorted((i, v) for i, v in params.items() if v and i not in R.MIGRATED_HVM_PARAMS)
    return migrated, toolstack


def needed_record_types(hv):
    """{record type: why} for the stream the current state makes."""
    need = {t: "every stream carries them" for t in (ls.REC_LU_VERSION, ls.REC_LU_XEN_REGIONS, ls.REC_LU_M2P,
                                        ls.REC_LU_DOMAIN, ls.REC_LU_P2M_EXTENTS,
                                        ls.REC_LU_PAGE_OWNERSHIP, ls.REC_LU_GRANT_TABLE,
                                        ls.REC_LU_EVTCHN_PORTS, ls.REC_LU_VCPU_STATE)}
    for dom in sorted(hv.domains.values(), key=lambda d: d.domid):
        who = "d%d (%s)" % (dom.domid, dom.name)
        if dom.dtype == "pv":
            need.setdefault(ls.REC_X86_PV_INFO, who + " is PV")
            need.setdefault(ls.REC_LU_PV_PAGE_TYPES, who + " has PV page tables")
        if dom.grant_version == 2:
            need.setdefault(ls.REC_LU_GRANT_STATUS, who + " uses grant table v2")
        if dom.evtchn_abi == "fifo":
            need.setdefault(ls.REC_LU_EVTCHN_FIFO, who + " uses FIFO event channels")
        migrated, toolstack = split_hvm_params(dom.hvm_params)
        if migrated:
            need.setdefault(ls.REC_HVM_PARAMS, who + " has HVM parameters")
        if toolstack:
            need.setdefault(ls.REC_LU_HVM_PARAMS, who + " has HVM parameters migration leaves to the toolstack")
        if dom.ioreq:
            need.setdefault(ls.REC_LU_IOREQ_SERVER, who + " has an IOREQ server")
        if dom.iommu_root is not None:
            need.setdefault(ls.REC_LU_IOMMU, who + " has a passthrough device")
    if abi.KEXEC_TYPE_CRASH in hv.kexec.images:
        need[ls.REC_LU_KEXEC_IMAGE] = "a crash image is loaded (kexec-lu unload -t crash to update without it)"
    for m in hv.mappings.grant_maps:
        need.setdefault(ls.REC_LU_GRANT_MAPS, "d%d maps other domains' grants" % m.mapper)
    for m in hv.mappings.foreign_maps:
        need.setdefault(ls.REC_LU_FOREIGN_MAPS, "d%d maps foreign pages" % m.mapper)
    return need


def build_stream(hv, timings, paused_before, update_id=0, fault=None):
    """The whole stream as bytes.  paused_before: domids the administrator
    had paused (they stay paused after the update).  fault(point) is called
    as each record kind is first written ("save:LU_DOMAIN")."""
    w = StreamWriter(None if fault is None else lambda t: fault("save:" + ls.record_name(t)))
    p = hv.personality
    doms = sorted(hv.domains.values(), key=lambda d: d.domid)
    w.record(ls.REC_LU_VERSION, R.VERSION.encode(p.major, p.minor, ls.LU_FORMAT_VERSION, len(doms),
                                                          p.extra.encode()))
    ft = hv.frametable
    regions = [(ft.base_maddr // PAGE_SIZE, fts.FrameTable.bytes_for(ft.nr_frames) // PAGE_SIZE,
                R.REGION_FRAMETABLE, 0)]
    if hv.crash_region[1]:
        regions.append((hv.crash_region[0] // PAGE_SIZE, hv.crash_region[1] // PAGE_SIZE, R.REGION_CRASH, 0))
    regions += [(first, n, R.REGION_IOMMU, 0) for first, n in hv.iommu.regions()]
    w.record(ls.REC_LU_XEN_REGIONS, R.XEN_REGIONS.encode((len(regions), 0), regions))
    w.record(ls.REC_LU_M2P, R.M2P.encode(hv.m2p.base_maddr // PAGE_SIZE, hv.m2p.nr_frames))
    crash = hv.kexec.images.get(abi.KEXEC_TYPE_CRASH)
    if crash:
        w.record(ls.REC_LU_KEXEC_IMAGE, _kexec_image(crash))
    w.record(ls.REC_LU_TIMINGS | ls.REC_OPTIONAL,
             R.TIMINGS.encode((len(timings), 0, update_id), [(n.encode()[:16], a, b) for n, a, b in timings]))
    w.end()
    # One pass over the mappings, not one per domain.
    gmaps, fmaps = {}, {}
    for m in hv.mappings.grant_maps:
        gmaps.setdefault(m.mapper, []).append(
            (m.handle, m.granter, R.MAP_WRITABLE if m.writable else 0, m.ref, 0, m.mfn))
    for m in hv.mappings.foreign_maps:
        fmaps.setdefault(m.mapper, []).append((m.domid, 0, 0, m.gfn, m.mfn))
    # The PV page-type scans (C over each PV domain's frames, the GIL
    # dropped) go across the host's CPUs before the records are written.
    pv_types = {}
    in_parallel(lambda dom: pv_types.__setitem__(dom.domid, _pv_page_types(hv, dom)),
                [d for d in doms if d.dtype == "pv"], hv.nr_pcpus)
    for dom in doms:
        _domain(w, hv, dom, dom.domid in paused_before, gmaps.get(dom.domid), fmaps.get(dom.domid),
                pv_types.get(dom.domid))
    return w.getvalue(), w.types


_regs = operator.attrgetter(*R.REG_NAMES)


def _kexec_image(image):
    """LU_KEXEC_IMAGE: what xen#1 knows of the crash image, whose bytes stay
    where they are, with the digest taken when it was loaded."""
    segs = [(s.dest, s.dest_size, s.buf_size, R.SEG_MAPPED_ONLY if s.mapped_only else 0, 0)
            for s in image.segments]
    return R.KEXEC_IMAGE.encode((len(segs), image.ktype, 0, image.arch, image.entry,
                                 bytes.fromhex(image.digest)), segs)


def _domain(w, hv, dom, paused, gmaps, fmaps, pv_types):
    p = hv.personality
    w.domain(DOMAIN_TYPE_PV if dom.dtype == "pv" else DOMAIN_TYPE_HVM, p.major, p.minor)
    flags = (R.DOM_CONTROL if dom.control else 0) | (R.DOM_PAUSED if paused else 0) | \
        (R.DOM_DYING if dom.dying else 0)
    w.record(ls.REC_LU_DOMAIN, R.DOMAIN.encode(dom.domid, flags, R.DTYPES[dom.dtype], dom.vcpus, 0,
                                          dom.shared_info_mfn, dom.name.encode()))
    if dom.dtype == "pv":
        w.record(ls.REC_X86_PV_INFO, R.PV_INFO.encode(8, 4, b""))
    w.record(ls.REC_LU_P2M_EXTENTS, R.P2M_EXTENTS.encode((len(dom.p2m), 0), dom.p2m))
    owned = [(mfn, n, R.OWN_RAM, 0) for _, mfn, n in sorted(dom.p2m, key=lambda e: e[1])]
    owned += [(mfn, n, R.OWN_SHARED, 0) for mfn, n in sorted(dom.shared_frames)]
    w.record(ls.REC_LU_PAGE_OWNERSHIP, R.OWNERSHIP.encode((len(owned), 0), owned))
    if dom.dtype == "pv":
        w.record(ls.REC_LU_PV_PAGE_TYPES, pv_types)
    g = dom.grants
    w.record(ls.REC_LU_GRANT_TABLE, R.GRANT_TABLE.encode((len(g.frames), g.version), [(f,) for f in g.frames]))
    if g.version == 2:
        w.record(ls.REC_LU_GRANT_STATUS, R.GRANT_STATUS.encode((len(g.status_frames), 0),
                                                          [(f,) for f in g.status_frames]))
    if dom.fifo_gfns:
        w.record(ls.REC_LU_EVTCHN_FIFO, R.EVTCHN_FIFO.encode(*dom.fifo_gfns))
    ports = [(n, R.PORT_KINDS[pt.kind], 0, pt.vcpu,
              R.NO_DOMID if pt.remote_domid is None else pt.remote_domid,
              pt.remote_port or 0, pt.virq or 0, 0) for n, pt in sorted(dom.evtchn.ports.items())]
    w.record(ls.REC_LU_EVTCHN_PORTS, R.EVTCHN_PORTS.encode((len(ports), 0), ports))
    cr3 = dom.l4_mfn if dom.l4_mfn is not None else 0
    for i, v in enumerate(dom.vcpu_list()):
        w.record(ls.REC_LU_VCPU_STATE, R.VCPU.encode(i, v.runstate, v.pause_req, 0, v.steps,
                                                   *_regs(v.regs), cr3))
    migrated, toolstack = split_hvm_params(dom.hvm_params)
    if migrated:
        w.record(ls.REC_HVM_PARAMS, R.HVM_PARAMS.encode((len(migrated), 0), migrated))
    if toolstack:
        w.record(ls.REC_LU_HVM_PARAMS, R.LU_HVM_PARAMS.encode((len(toolstack), 0), toolstack))
    if dom.ioreq:
        s = dom.ioreq
        w.record(ls.REC_LU_IOREQ_SERVER, R.IOREQ_SERVER.encode(
            (len(s.ports), s.id, s.dm_domid, s.ioreq_gfn, s.bufioreq_gfn, 0), s.ports))
    if gmaps:
        w.record(ls.REC_LU_GRANT_MAPS, R.GRANT_MAPS.encode((len(gmaps), 0), gmaps))
    if fmaps:
        w.record(ls.REC_LU_FOREIGN_MAPS, R.FOREIGN_MAPS.encode((len(fmaps), 0), fmaps))
    if dom.iommu_root is not None:
        w.record(ls.REC_LU_IOMMU, R.IOMMU.encode(dom.iommu_root, sorted(dom.iommu_frames), dom.devices))
    w.end()


def _pv_page_types(hv, dom):
    """LU_PV_PAGE_TYPES body: the domain's page-table and descriptor frames
    with their type and pinned flag, read from the frame table (the one
    per-page state worth carrying) in a single C pass over its extents."""
    item = R.PV_PAGE_TYPES.item.size
    starts = ffi.new("uint64_t[]", [mfn for _, mfn, _ in dom.p2m])
    counts = ffi.new("uint64_t[]", [n for _, _, n in dom.p2m])
    # Page tables are about 1/512 of a domain's frames: sized so that one
    # pass is the rule, a second the exception.
    cap = dom.nr_frames // 256 + 64
    while True:
        out = ffi.new("uint8_t[]", cap * item)
        n = lib.lu_save_pv_page_types(hv.frametable.frames, starts, counts, len(dom.p2m), dom.domid,
                                      R.PT_PINNED, out, cap)
        if n <= cap:
            return R.PV_PAGE_TYPES.head.pack(n, 0) + ffi.buffer(out, n * item)[:]
        cap = n
