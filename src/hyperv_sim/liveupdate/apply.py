"""xen#2 applies a checked stream: the frame table rebuilt in xen#1's
frame-table region, then every domain in three passes (pass 0 creates it
and gives a PV domain its frames, pass 1 its grant table and page types,
pass 2 everything else; an HVM or PVH domain's frames are written once
the guests run, xen2.py), the references domains hold on each other, and the
guests' software pointed at its restored state.  Domains are independent
within a pass, so they are restored in parallel.
"""
from xen_public import abi, lurecords as R
from xen_public.abi import PAGE_SIZE

from .. import guest
from .._lu_core import ffi, lib
from ..builder import backend_slot_addr, guest_info, read_backend_slot
from ..domain import DTYPE_CODES, Domain, Frontend, IoreqServer
from ..evtchn import EventChannels, Port
from ..frametable import PGC_ALLOCATED, FrameTable
from ..grant import GrantMap, GrantTable
from ..guest import P2M
from ..devices import connect_drivers
from ..iommu import Iommu
from ..m2p import M2P
from ..mappings import Mappings
from xen_public import lustream as ls
from .check import LOW_RESERVED_FRAMES, items_of
from .parallel import in_parallel
from .stream import RestoreFailure

def restore(hv, stream, plans, facts, fault=None):
    """Rebuild the frame table and every domain; the caller has checked all."""
    hv.lu_report.phase("frametable")
    nr = hv.ram.nr_frames
    ft_start, ft_frames, _, _ = facts.frametable
    ft = hv.frametable = FrameTable(hv.ram, ft_start * PAGE_SIZE, nr)
    # Rebuilt from records, in xen#1's frame-table region, never trusted as
    # it was: Xen's own frames here, domains' in pass 0.  The unclaimed
    # frames' entries wait until the guests run again (xen2.py,
    # "frametable-deferred"): nothing reads them before then.
    ft.mark(0, LOW_RESERVED_FRAMES, abi.DOMID_XEN, lib.LU_USE_RESERVED)
    ft.mark(hv.lu_start // PAGE_SIZE, hv.lu_size // PAGE_SIZE, abi.DOMID_XEN, lib.LU_USE_LU_BOOTMEM)
    xen_first = hv.xen_start // PAGE_SIZE
    ft.mark(xen_first, -(-(hv.xen_start + hv.xen_size) // PAGE_SIZE) - xen_first, abi.DOMID_XEN,
            lib.LU_USE_XEN_IMAGE)
    ft.mark(ft_start, ft_frames, abi.DOMID_XEN, lib.LU_USE_XENHEAP)
    m2p_start, _ = facts.m2p
    hv.m2p = M2P(hv.ram, m2p_start * PAGE_SIZE, nr)
    ft.mark(m2p_start, M2P.bytes_for(nr) // PAGE_SIZE, abi.DOMID_XEN, lib.LU_USE_M2P)
    hv.crash_region = (0, 0)
    for start, n, kind, _ in facts.regions:
        if kind == R.REGION_CRASH:
            ft.mark(start, n, abi.DOMID_XEN, lib.LU_USE_CRASH)
            hv.crash_region = (start * PAGE_SIZE, n * PAGE_SIZE)
        elif kind == R.REGION_IOMMU:
            ft.mark(start, n, abi.DOMID_XEN, lib.LU_USE_IOMMU_PT)
        elif kind != R.REGION_FRAMETABLE:
            # A kind this hypervisor does not know: kept, never handed out.
            ft.mark(start, n, abi.DOMID_XEN, lib.LU_USE_XENHEAP)
    for first, n in stream.extents():
        ft.mark(first, n, abi.DOMID_XEN, lib.LU_USE_STREAM)
    # The IOMMU runs on, as xen#1 left it: its structures are read, not set up.
    hv.iommu = Iommu.take_over(hv, [(s, n) for s, n, kind, _ in facts.regions if kind == R.REGION_IOMMU])
    hv.mappings = Mappings(ft)

    for number, step in enumerate((_pass0, _pass1, _pass2)):
        if fault:
            fault("restore-pass%d" % number)
        hv.lu_report.phase("restore-pass%d" % number)
        in_parallel(lambda plan: step(hv, plan), plans, hv.nr_pcpus)
        if number == 0:
            # An HVM or PVH guest's memory is read by no one but its guest
            # until the guests run: its entries are written then (xen2.py),
            # but for the few frames a reference is taken on before.
            ft.pending_guest_frames([(mfn, n, p.domid) for p in plans if p.dom.dtype != "pv"
                                     for _, mfn, n in p.p2m])
        if number == 2:
            _cross_domain(hv, plans)
    hv.lu_report.end()


def _pass0(hv, plan):
    """Create the domain, its P2M and its vCPUs (no state yet), and give it
    its shared frames and, if it is PV, its memory, which pass 1 types
    (the walk finds owners by the stream's extents, not by the table)."""
    dom = Domain(domid=plan.domid, name=plan.name, dtype=plan.dtype, vcpus=plan.vcpus,
                 p2m=plan.p2m, control=bool(plan.flags & R.DOM_CONTROL),
                 paused=bool(plan.flags & R.DOM_PAUSED), dying=bool(plan.flags & R.DOM_DYING),
                 shared_frames=plan.shared, shared_info_mfn=plan.shinfo)
    dom.vcpu_state = ffi.new("struct lu_vcpu[]", plan.vcpus)
    for i in range(plan.vcpus):
        v = dom.vcpu_state[i]
        v.domid, v.vcpu_id, v.dtype = dom.domid, i, DTYPE_CODES[dom.dtype]
        v.pause_req = 1                     # nothing runs until the end
    ft = hv.frametable
    if dom.dtype == "pv":
        # Pass 1 types and walks these; an HVM or PVH guest's wait for the
        # guests to run (restore).
        for gfn, mfn, n in dom.p2m:
            ft.mark(mfn, n, dom.domid, lib.LU_USE_GUEST, count_info=PGC_ALLOCATED | 1)
    for mfn, n in dom.shared_frames:
        ft.mark(mfn, n, dom.domid, lib.LU_USE_SHARED, count_info=PGC_ALLOCATED | 1)
    plan.dom = dom


def _pass1(hv, plan):
    """Grant-table frames; PV page types, then the references the page
    tables imply (validated as Xen pins the L4)."""
    dom, ft = plan.dom, hv.frametable
    version, frames, status = plan.grant
    dom.grant_version = version
    dom.grants = GrantTable(hv.ram, version, frames, status)
    if dom.dtype != "pv":
        return
    # The type each table page had; counts come from the walk below.
    count, items = plan.types
    lib.lu_pv_types_apply(ft.frames, ffi.from_buffer(items), count)
    dom.l4_mfn = plan.l4
    ft.frames[plan.l4].type_info = (lib.LU_PGT_L4 << lib.LU_PGT_TYPE_SHIFT) | lib.LU_PGT_PINNED | 1
    ft.frames[plan.l4].count_info += 1
    # Ownership by what the stream gives the domain: the free frames'
    # entries still hold xen#1's word until the guests run (xen2.py).
    bad = ft.walk_pv(dom.domid, dom.l4_mfn, owned=[(m, n) for _, m, n in plan.p2m] + plan.shared)
    if bad:
        raise RestoreFailure("d%d page tables do not validate (error %d at mfn 0x%x entry %d)"
                             % ((dom.domid,) + bad))


def _pass2(hv, plan):
    """Everything else: vCPU state, event channels, HVM parameters, the
    IOREQ server, IOMMU; then the guest software's own pointers."""
    dom, ft = plan.dom, hv.frametable
    p2m = P2M(dom.p2m)
    if plan.fifo:
        dom.evtchn_abi, dom.fifo_gfns = "fifo", tuple(plan.fifo)
        bits = p2m.mfn(plan.fifo[0])
        for gfn, what in zip(plan.fifo, ("evtchn-fifo-array", "evtchn-fifo-control")):
            hv.mappings.map_xen(dom, gfn, what)
    else:
        bits = dom.shared_info_mfn
    dom.evtchn = EventChannels(hv.ram, dom.evtchn_abi, bits)
    for port, kind, _, vcpu, rdom, rport, virq, _ in plan.ports:
        kind = R.PORT_KIND_NAMES[kind]
        dom.evtchn.ports[port] = Port(port, kind, vcpu=vcpu,
                                      remote_domid=None if rdom == R.NO_DOMID else rdom,
                                      remote_port=rport if kind == "interdomain" else None,
                                      virq=virq if kind == "virq" else None)
    for vid, runstate, paused, _, steps, *rest in plan.vcpu_records:
        regs, cr3 = rest[:18], rest[18]
        v = dom.vcpu_state[vid]
        v.runstate, v.steps = runstate, steps
        v.regs = regs          # the record's order is struct lu_regs' (R.REG_NAMES)
        if dom.dtype == "pv":
            ft.get_ref(cr3, lib.LU_PGT_L4)
    if dom.dtype == "pv":
        count, items = plan.types
        gdts = ffi.new("uint64_t[]", count)
        nr = lib.lu_pv_types_select(ffi.from_buffer(items), count, lib.LU_PGT_SEG_DESC, gdts, count)
        dom.gdt_mfns = sorted(gdts[i] for i in range(nr))
        for mfn in dom.gdt_mfns:
            ft.get_ref(mfn, lib.LU_PGT_SEG_DESC)
    dom.hvm_params = dict([*items_of(plan, ls.REC_HVM_PARAMS), *items_of(plan, ls.REC_LU_HVM_PARAMS)])
    ioreq = plan.one(ls.REC_LU_IOREQ_SERVER, required=False)
    if ioreq:
        (nr, sid, dm, ioreq_gfn, buf_gfn, _), pairs = ioreq
        dom.ioreq = IoreqServer(id=sid, dm_domid=dm, ioreq_gfn=ioreq_gfn, bufioreq_gfn=buf_gfn,
                                ioreq_mfn=p2m.mfn(ioreq_gfn), ports=[tuple(p) for p in pairs])
        hv.mappings.map_xen(dom, ioreq_gfn, "ioreq")
    if plan.iommu:
        root, extents, devices = plan.iommu
        for mfn, n in extents:
            ft.mark(mfn, n, abi.DOMID_XEN, lib.LU_USE_IOMMU_PT)
        dom.iommu_root, dom.iommu_frames, dom.devices = root, [tuple(e) for e in extents], list(devices)


def _cross_domain(hv, plans):
    """References one domain holds on another's pages (every owner is in
    place by now), then the software each guest runs resumes its pointers."""
    ft = hv.frametable
    hv.domains = {p.domid: p.dom for p in plans}
    for plan in plans:
        for handle, granter, flags, ref, _, mfn in items_of(plan, ls.REC_LU_GRANT_MAPS):
            writable = bool(flags & R.MAP_WRITABLE)
            ft.get_ref(mfn, lib.LU_PGT_WRITABLE if writable else None)
            hv.mappings.restore_grant_map(GrantMap(handle, plan.domid, granter, ref, writable, mfn))
        for domid, _, _, gfn, mfn in items_of(plan, ls.REC_LU_FOREIGN_MAPS):
            target = hv.domains[domid]
            what = "device model ioreq page" if target.ioreq and target.ioreq.ioreq_gfn == gfn else "foreign"
            hv.mappings.map_foreign(plan.dom, target, gfn, what)
        for bdf in plan.dom.devices:
            hv.pci_assigned[bdf] = plan.domid
    hv.backend_slots = read_backend_slots(hv, len(hv.backend_slots))
    # Looked up once for all domains rather than searched for each.
    slot_of = {owner: slot for slot, owner in enumerate(hv.backend_slots) if owner is not None}
    granted = {}
    for m in hv.mappings.grant_maps:
        granted.setdefault(m.granter, []).append(m.ref)
    for dom in hv.domains.values():
        resume_software(hv, dom, slot_of, granted)


def resume_software(hv, dom, slot_of, granted):
    """Point each vCPU at what its guest's code uses, read from the guest's
    own memory (its info page) and the restored ports and IOREQ server.
    slot_of: {domid: dom0's backend slot}; granted: {domid: refs mapped}."""
    info = guest_info(hv, dom)
    if info.magic != guest.GUEST_MAGIC:
        raise RestoreFailure("d%d: no guest info page at gfn 0 (magic 0x%x)" % (dom.domid, info.magic))
    p2m = P2M(dom.p2m)
    dom.seed = info.seed
    dom.workload = "idle" if info.flags & lib.LU_GUEST_IDLE else "busy"
    dom0 = hv.domains[0]
    for i, v in enumerate(dom.vcpu_list()):
        try:
            mfns = p2m.mfns(info.ws_base_gfn + i * info.ws_pages, info.ws_pages)
        except KeyError as e:
            raise RestoreFailure("d%d vCPU%d working set: %s" % (dom.domid, i, e.args[0]))
        dom.ws_mfns.append(mfns)
        v.seed, v.ram, v.ws_mfns, v.ws_pages, v.info = dom.seed, hv.ram.base, mfns, info.ws_pages, info
        v.idle = 1 if info.flags & lib.LU_GUEST_IDLE else 0
        v.rate = info.rate
    if dom.ioreq:
        for i, (gport, dport) in enumerate(dom.ioreq.ports):
            v = dom.vcpu_state[i]
            v.io_every = info.io_every
            v.ioreq = hv.ram.pointer(dom.ioreq.ioreq_mfn * PAGE_SIZE + i * ffi.sizeof("struct lu_ioreq"),
                                     "struct lu_ioreq *")
            v.io_port = dom.evtchn.lu_port(gport)[0]
            v.dm_port = dom0.evtchn.lu_port(dport)[0]
    if info.ring_every and not dom.control:
        fe_port = info.fe_port
        be_port = dom.evtchn.ports[fe_port].remote_port
        slot = slot_of.get(dom.domid)
        if slot is None:
            raise RestoreFailure("dom0 runs no backend for d%d's frontend" % dom.domid)
        refs = granted.get(dom.domid, [])
        ring_ref = read_backend_slot(hv.ram, backend_slot_addr(hv, slot))["ring_ref"]
        dom.frontend = Frontend(ring_ref=ring_ref, fe_port=fe_port, be_port=be_port,
                                backend_slot=slot, grant_refs=sorted(refs))
        v = dom.vcpu_state[0]
        v.ring_every = info.ring_every
        v.ring = hv.ram.pointer(p2m.mfn(info.ring_gfn) * PAGE_SIZE, "struct lu_sring *")
        v.fe_port = dom.evtchn.lu_port(fe_port)[0]
        v.be_port = dom0.evtchn.lu_port(be_port)[0]
    if dom.devices:
        connect_drivers(hv, dom)        # found in the chipset, as the devices run on


def read_backend_slots(hv, nr_slots):
    """Which frontend each of dom0's backend slots serves (dom0's memory)."""
    dom0 = hv.domains[0]
    info = guest_info(hv, dom0)
    size = guest.BACKEND_SLOT.size
    per = PAGE_SIZE // size
    usable = min(nr_slots, info.backend_pages * per)
    p2m = P2M(dom0.p2m)
    slots = [None] * nr_slots
    # A page of slots at a time; the front end's domid is the second field.
    for page in range(-(-usable // per)):
        data = hv.ram.read(p2m.mfn(info.backend_gfn + page) * PAGE_SIZE, per * size)
        for i, fields in enumerate(guest.BACKEND_SLOT.iter_unpack(data)):
            if page * per + i < usable:
                slots[page * per + i] = fields[1] or None
    return slots
