"""`hyperv-sim verify`: is every guest exactly as it must be?

With every vCPU stopped at a step boundary, recompute from first principles
and compare: each working set and register file against the closed form of
its step count; frame ownership and the M2P against the P2M; every frame's
type and reference counts against what page tables, pins, grant maps,
foreign and Xen mappings imply; event channel and ring/ioreq protocol
state (a request with nobody notified is a lost event); IOMMU tables
against the P2M; the free frames the allocator holds against the frames
the table calls free (after a live update, the entries rebuilt once the
guests ran again).  Each discrepancy is reported precisely.
"""
import bisect
import os
import struct

from xen_public import abi
from xen_public.abi import PAGE_SIZE
from xen_public.units import count

from ._lu_core import ffi, lib
from ._lu_hw import ffi as hw_ffi, lib as hw
from .builder import backend_slot_addr, guest_info, read_backend_slot
from .frametable import PGC_ALLOCATED, PGT_COUNT, PGT_SHIFT, USE_NAMES, merged_runs
from .guest import P2M
from .chipset import bdf_text, parse_bdf
from .iommu import FAULT_REASONS, context_entry

MAX_REPORTED_FRAMES = 20
# Rounds after which an untaken interrupt that is nowhere is called lost
# (about 5 ms: a running guest takes one in microseconds).
LOST_AFTER_ROUNDS = 50
TYPE_NAMES = {0: "none", 1: "l1", 2: "l2", 3: "l3", 4: "l4", 5: "seg_desc", 7: "writable"}
REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")


def _type_str(type_info):
    t, n = type_info >> PGT_SHIFT, type_info & PGT_COUNT
    pinned = "+pinned" if type_info & lib.LU_PGT_PINNED else ""
    return "%s:%d%s" % (TYPE_NAMES.get(t, t), n, pinned)


def _count_str(count_info):
    return "%d%s" % (count_info & lib.LU_PGC_COUNT_MASK, "+allocated" if count_info & PGC_ALLOCATED else "")


class Report:
    def __init__(self):
        self.problems = []
        self.domains = []

    def bad(self, domid, check, detail):
        self.problems.append({"domid": domid, "check": check, "detail": detail})

    def to_json(self):
        return {"ok": not self.problems, "problems": self.problems, "domains": self.domains}


def verify_host(hv):
    rep = Report()
    with hv.sched.stopped():
        ex = ffi.new("struct lu_expect[]", hv.ram.nr_frames)
        lib.lu_expect_init(hv.frametable.frames, ex, hv.ram.nr_frames)
        for dom in sorted(hv.domains.values(), key=lambda d: d.domid):
            _check_domain(hv, dom, ex, rep)
            rep.domains.append({"domid": dom.domid, "name": dom.name, "state": dom.state,
                                "steps": dom.steps})
        _check_mappings(hv, ex, rep)
        _check_refcounts(hv, ex, rep)
        _check_heap(hv, rep)
        _check_iommu_hardware(hv, rep)
        _check_devices(hv, rep)
    return rep.to_json()


def _check_devices(hv, rep):
    """Each assigned device runs, what it wrote by DMA is in its guest's
    memory (the status block holds its last round), its interrupt was not
    lost, and neither was a packet."""
    if not hv.devices.powered:
        return                  # a hypervisor inside a test's process: no device runs
    slots = hv.devices.slots()
    for bdf, domid in sorted(hv.pci_assigned.items()):
        if bdf not in slots:
            rep.bad(domid, "device", "device %s has no slot in the chipset: it is not running" % bdf)
            continue
        d = hv.devices.regs(bdf)
        if not d.pid or not os.path.exists("/proc/%d" % d.pid):
            rep.bad(domid, "device", "device %s: its process (pid %d) is gone" % (bdf, d.pid))
        if d.dma_faults:
            rep.bad(domid, "device", "device %s: %s cut short by the IOMMU" % (bdf, count(d.dma_faults, "round")))
        before = d.seq
        gfn, offset = divmod(d.dma_iova, PAGE_SIZE)
        try:
            mfn = P2M(hv.domains[domid].p2m).mfn(gfn)
        except KeyError:
            rep.bad(domid, "device", "device %s writes to IOVA 0x%x, outside d%d" % (bdf, d.dma_iova, domid))
            continue
        seq, = struct.unpack("<Q", hv.ram.read(mfn * PAGE_SIZE + offset, 8))
        after = d.seq
        slot = slots[bdf]
        # An interrupt masks the device until the guest takes it: one sent
        # long ago, neither posted for the guest nor waiting for this
        # hypervisor, is lost, and the device gets no more.
        if d.irq_outstanding and after - d.irq_sent_seq > LOST_AFTER_ROUNDS and \
                not hw.lu_hw_posted(hv.iommu.pi_desc(slot)) and not hv.chipset.c.irr[slot]:
            rep.bad(domid, "device", "device %s: its interrupt (remapping entry %d) for round %d was lost: "
                    "not posted, not pending, never taken (the device has done %d rounds since)"
                    % (bdf, d.msi_index, d.irq_sent_seq, after - d.irq_sent_seq))
        # Written to memory first, then counted: between the two reads.
        if not before <= seq <= after + 1:
            rep.bad(domid, "device", "device %s: its status block at IOVA 0x%x holds round %d, the device "
                    "has done %d" % (bdf, d.dma_iova, seq, after))
        problem = driver_problem(hv, hv.domains[domid], slot)
        if problem:
            rep.bad(domid, "device", "device %s: %s" % (bdf, problem))
        _check_traffic(hv, rep, domid, bdf, d, mfn)


def _address(ptr):
    """A C pointer's address, to compare pointers of the core's and the
    hardware model's FFIs."""
    return int(ffi.cast("uintptr_t", ptr))


def driver_problem(hv, dom, slot):
    """Whether the guest's driver of the device in slot is connected: its
    vCPU 0 drives a NIC at the device's pages, through the device's
    posted-interrupt descriptor and mask register (a hypervisor that
    restored the domain and forgot its driver would leave the device's
    packets to pile up, every interrupt posted and never taken).  -> None,
    or what is wrong."""
    d = hv.chipset.c.dev[slot]
    v = dom.vcpu_state[0]
    p2m = P2M(dom.p2m)
    want = [_address(hv.ram.pointer(p2m.mfn(d.dma_iova // PAGE_SIZE + i) * PAGE_SIZE)) for i in range(lib.LU_NIC_PAGES)]
    for i in range(v.nr_nics):
        n = v.nics[i]
        if n.iova != d.dma_iova:
            continue
        if [_address(n.page[k]) for k in range(lib.LU_NIC_PAGES)] != want or \
                _address(n.pi_desc) != _address(hv.iommu.pi_desc(slot)) or \
                _address(n.dev_ack) != _address(hw_ffi.addressof(d, "irq_outstanding")):
            return "d%d's driver of it works other pages or another interrupt than the device's" % dom.domid
        return None
    return "d%d's driver is not connected to it (vCPU 0 drives %s)" % (dom.domid, count(v.nr_nics, "NIC"))


def _check_traffic(hv, rep, domid, bdf, d, mfn):
    """Every packet the NIC brought in was received once and intact by its
    guest's driver, or dropped for a full ring and counted by the device;
    every packet the driver queued was sent intact and in order (hw_nic.h).
    The driver checks each packet as it takes it; its counts and the rings'
    indices are in the guest's memory."""
    page = mfn * PAGE_SIZE
    counts = ffi.cast("struct lu_nic_counts *", hv.ram.pointer(page + lib.LU_NIC_COUNTS))
    ix = ffi.cast("struct lu_nic_indices *", hv.ram.pointer(page + lib.LU_NIC_INDICES))
    if counts.rx_bad:
        rep.bad(domid, "device", "device %s: %s arrived corrupted in the guest (the first: packet %d)"
                % (bdf, count(counts.rx_bad, "packet"), counts.first_bad_seq))
    if counts.rx_out_of_order:
        rep.bad(domid, "device", "device %s: %s not the one due (the first: packet %d where %d was due): "
                "lost, or received twice" % (bdf, count(counts.rx_out_of_order, "packet"),
                                             counts.first_bad_seq, counts.first_bad_due))
    if d.tx_bad or d.tx_out_of_order:
        rep.bad(domid, "device", "device %s sent %d corrupted and %d out-of-order packets the guest queued"
                % (bdf, d.tx_bad, d.tx_out_of_order))
    # Free-running u32 counts: what one side has and the other has not
    # taken yet fits in a ring, or something was lost between them.
    waiting = (ix.rx_filled - counts.rx_taken) & 0xFFFFFFFF
    if counts.magic == lib.LU_NIC_MAGIC and waiting > lib.LU_NIC_RING:
        rep.bad(domid, "device", "device %s: %d packets filled and not taken: more than a ring of %d"
                % (bdf, waiting, lib.LU_NIC_RING))
    unsent = (ix.tx_queued - ix.tx_sent) & 0xFFFFFFFF
    if unsent > lib.LU_NIC_RING:
        rep.bad(domid, "device", "device %s: %d packets queued and not sent: more than a ring of %d"
                % (bdf, unsent, lib.LU_NIC_RING))


def _check_iommu_hardware(hv, rep):
    """The IOMMU as the hardware sees it: on while any device is assigned,
    on the root table the hypervisor keeps, each device translated through
    its domain's tables, and no fault in its log."""
    iommu, regs = hv.iommu, hv.chipset.regs
    if hv.pci_assigned:
        if not regs.gsts & hw.LU_VTD_TE:
            rep.bad(None, "iommu", "translation is off with %s assigned" % count(len(hv.pci_assigned), "device"))
        if regs.rtaddr_active != (iommu.root_mfn or 0) * PAGE_SIZE:
            rep.bad(None, "iommu", "the IOMMU's root table is 0x%x, the hypervisor's 0x%x"
                    % (regs.rtaddr_active, (iommu.root_mfn or 0) * PAGE_SIZE))
        # Set up once, at the first assignment, and never again: a hypervisor
        # that takes the IOMMU over latches no root pointer and flushes nothing.
        for what, n in (("root-table pointer latched", regs.srtp_count),
                        ("translation enabled", regs.te_enables),
                        ("whole IOTLB invalidated", regs.global_flushes)):
            if n != 1:
                rep.bad(None, "iommu", "the IOMMU's %s %s since power-on, not once: the IOMMU was "
                        "set up again" % (what, count(n, "time")))
    for bdf, domid in sorted(hv.pci_assigned.items()):
        dom = hv.domains[domid]
        got = context_entry(hv.ram, regs.rtaddr_active // PAGE_SIZE, parse_bdf(bdf))
        if got != (dom.iommu_root, domid):
            rep.bad(domid, "iommu", "device %s: context entry names %s, not d%d's tables at mfn 0x%x"
                    % (bdf, "nothing" if got is None else "d%d's tables at mfn 0x%x" % (got[1], got[0]),
                       domid, dom.iommu_root))
    for sid, iova, reason, write in hv.chipset.faults():
        bdf = bdf_text(sid)
        rep.bad(hv.pci_assigned.get(bdf), "iommu", "device %s: IOMMU fault on %s at IOVA 0x%x: %s"
                % (bdf, "write" if write else "read", iova, FAULT_REASONS.get(reason, "reason %d" % reason)))
    if regs.fsts & hw.LU_FSTS_PFO:
        rep.bad(None, "iommu", "the IOMMU's fault log overflowed: faults were lost")


def _check_domain(hv, dom, ex, rep):
    ft, p2m = hv.frametable, P2M(dom.p2m)
    d = dom.domid
    # Ownership and the M2P.
    lu_lo, lu_hi = hv.lu_start // PAGE_SIZE, (hv.xen_start + hv.xen_size) // PAGE_SIZE
    for gfn, mfn, nr in dom.p2m:
        if not ft.all_match(mfn, nr, d, lib.LU_USE_GUEST):
            bad = lib.lu_frames_find_mismatch(ft.frames, mfn, mfn + nr, d, lib.LU_USE_GUEST)
            e = ft.entry(bad)
            rep.bad(d, "ownership", "mfn 0x%x (gfn 0x%x) belongs to owner %d as %s, not to d%d"
                    % (bad, gfn + bad - mfn, e["owner"], e["use"], d))
        if hv.lu_size and mfn < lu_hi and mfn + nr > lu_lo:
            rep.bad(d, "ownership", "frames 0x%x-0x%x lie in LU bootmem" % (mfn, mfn + nr))
        wrong = hv.m2p.check_run(mfn, gfn, nr)
        if wrong is not None:
            rep.bad(d, "m2p", "M2P[0x%x] is 0x%x, expected gfn 0x%x"
                    % (wrong, hv.m2p.get(wrong), gfn + wrong - mfn))
    for mfn, n in dom.shared_frames:
        if not ft.all_match(mfn, n, d, lib.LU_USE_SHARED):
            rep.bad(d, "ownership", "shared frames at mfn 0x%x are not d%d's" % (mfn, d))
    owned = ft.count(d, lib.LU_USE_GUEST)
    if owned != dom.nr_frames:
        rep.bad(d, "ownership", "frame table gives d%d %d guest frames, its P2M %d"
                % (d, owned, dom.nr_frames))
    _check_workload(hv, dom, rep)
    if dom.dtype == "pv":
        _expect_pv(hv, dom, p2m, ex, rep)
    _check_io(hv, dom, rep)
    if dom.iommu_root is not None:
        arr = p2m.array(dom.nr_frames)
        bad = ffi.new("uint64_t *")
        leaves = lib.lu_iommu_check(hv.ram.base, hv.ram.nr_frames, dom.iommu_root, arr,
                                    dom.nr_frames, bad)
        if leaves < 0:
            rep.bad(d, "iommu", "IOMMU maps gfn 0x%x elsewhere than the P2M" % bad[0])
        elif leaves != dom.nr_frames:
            rep.bad(d, "iommu", "IOMMU maps %d of %d gfns" % (leaves, dom.nr_frames))


def _check_workload(hv, dom, rep):
    info = guest_info(hv, dom)
    if info.rsp_errors:
        rep.bad(dom.domid, "ring", "the guest received %d corrupted backend responses" % info.rsp_errors)
    want = ffi.new("struct lu_regs *")
    slot, got, expect = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
    for i, v in enumerate(dom.vcpu_list()):
        n = lib.lu_workload_check(hv.ram.base, v.ws_mfns, v.ws_pages, v.seed, v.vcpu_id, v.steps,
                                  slot, got, expect)
        if n:
            page = slot[0] % v.ws_pages
            rep.bad(dom.domid, "memory", "vCPU%d working set: %d words differ after %d steps; "
                    "first at gfn 0x%x offset 0x%x: 0x%x, expected 0x%x"
                    % (i, n, v.steps, info.ws_base_gfn + i * v.ws_pages + page,
                       (slot[0] // v.ws_pages) * 8, got[0], expect[0]))
        lib.lu_workload_regs(v.seed, v.vcpu_id, v.ws_pages, v.io_every, v.ring_every, v.steps, want)
        diffs = ["%s=0x%x (expected 0x%x)" % (r, getattr(v.regs, r), getattr(want, r))
                 for r in REGS if getattr(v.regs, r) != getattr(want, r)]
        if diffs:
            rep.bad(dom.domid, "registers", "vCPU%d after %d steps: %s" % (i, v.steps, ", ".join(diffs)))


def _expect_pv(hv, dom, p2m, ex, rep):
    """What pinning, CR3s, GDTs and the page tables imply."""
    l4 = ex[dom.l4_mfn]
    l4.type_info = (lib.LU_PGT_L4 << PGT_SHIFT) | lib.LU_PGT_PINNED | (1 + dom.vcpus)
    l4.count += 1 + dom.vcpus
    for mfn in dom.gdt_mfns:
        e = ex[mfn]
        e.type_info = (lib.LU_PGT_SEG_DESC << PGT_SHIFT) | ((e.type_info & PGT_COUNT) + 1)
        e.count += 1
    bad = hv.frametable.walk_pv(dom.domid, dom.l4_mfn, expect=ex)
    if bad:
        rc, mfn, entry = bad
        what = {lib.LU_WALK_NOT_OWNED: "points at a frame d%d does not own" % dom.domid,
                lib.LU_WALK_TYPE_CONFLICT: "needs a frame to have two types",
                lib.LU_WALK_OUT_OF_RANGE: "points past the end of RAM"}[rc]
        rep.bad(dom.domid, "page-tables", "table at mfn 0x%x entry %d %s" % (mfn, entry, what))


def _check_io(hv, dom, rep):
    d = dom.domid
    if dom.ioreq:
        dom0 = hv.domains[0]
        for i, (guest_port, dm_port) in enumerate(dom.ioreq.ports):
            v = dom.vcpu_state[i]
            state = v.ioreq.state
            blocked = v.runstate == lib.LU_RUN_BLOCKED_IO
            if blocked != (state != lib.LU_IOREQ_NONE):
                rep.bad(d, "ioreq", "vCPU%d is %s but its ioreq slot is in state %d"
                        % (i, "waiting for I/O" if blocked else "running", state))
            if state == lib.LU_IOREQ_READY and not dom0.evtchn.pending(dm_port):
                rep.bad(d, "event", "lost event: vCPU%d's I/O request waits, but dom0 port %d "
                        "(device model) is not pending" % (i, dm_port))
            if state == lib.LU_IORESP_READY and not dom.evtchn.pending(guest_port):
                rep.bad(d, "event", "lost event: vCPU%d's I/O is answered, but its port %d is "
                        "not pending" % (i, guest_port))
    if dom.frontend and not dom.dying:
        _check_ring(hv, dom, rep)
    for port, p in dom.evtchn.ports.items() if dom.evtchn else ():
        if p.kind == "interdomain":
            peer = hv.domains.get(p.remote_domid)
            back = peer.evtchn.ports.get(p.remote_port) if peer else None
            if back is None or back.remote_domid != d or back.remote_port != port:
                rep.bad(d, "event", "port %d is bound to d%s port %s, which does not point back"
                        % (port, p.remote_domid, p.remote_port))


def _check_ring(hv, dom, rep):
    d, fe = dom.domid, dom.frontend
    dom0 = hv.domains[0]
    v = dom.vcpu_state[0]
    ring = v.ring
    info = v.info
    slot = read_backend_slot(hv.ram, backend_slot_addr(hv, fe.backend_slot))
    produced = v.steps // v.ring_every
    if ring.req_prod != produced & 0xFFFFFFFF:
        rep.bad(d, "ring", "req_prod %d, but %d steps produce %d requests" % (ring.req_prod, v.steps, produced))
    cons = slot["req_cons"]
    if (ring.req_prod - cons) & 0xFFFFFFFF and not dom0.evtchn.pending(fe.be_port):
        rep.bad(d, "event", "lost event: %d requests wait for dom0's backend, but its port %d is "
                "not pending" % ((ring.req_prod - cons) & 0xFFFFFFFF, fe.be_port))
    if ring.rsp_prod != cons & 0xFFFFFFFF:
        rep.bad(d, "ring", "rsp_prod %d but the backend consumed %d" % (ring.rsp_prod, cons))
    if (ring.rsp_prod - info.rsp_cons) & 0xFFFFFFFF and not dom.evtchn.pending(fe.fe_port):
        rep.bad(d, "event", "lost event: %d responses wait for the guest, but its port %d is not "
                "pending" % ((ring.rsp_prod - info.rsp_cons) & 0xFFFFFFFF, fe.fe_port))


def _check_mappings(hv, ex, rep):
    m = hv.mappings
    for gm in m.grant_maps:
        e = ex[gm.mfn]
        e.count += 1
        if gm.writable:
            e.type_info = (lib.LU_PGT_WRITABLE << PGT_SHIFT) | ((e.type_info & PGT_COUNT) + 1)
        granter = hv.domains.get(gm.granter)
        if granter is None:
            rep.bad(gm.granter, "grant", "d%d maps ref %d of a domain that no longer exists"
                    % (gm.mapper, gm.ref))
            continue
        flags, domid, gfn = granter.grants.entry(gm.ref)
        if not flags & abi.GTF_permit_access or domid != gm.mapper:
            rep.bad(gm.granter, "grant", "ref %d is mapped by d%d but no longer granted to it"
                    % (gm.ref, gm.mapper))
        elif not flags & abi.GTF_reading or (gm.writable and not flags & abi.GTF_writing):
            rep.bad(gm.granter, "grant", "ref %d is mapped but its entry lacks GTF_reading/writing"
                    % gm.ref)
        elif P2M(granter.p2m).mfn(gfn) != gm.mfn:
            rep.bad(gm.granter, "grant", "ref %d now names gfn 0x%x, not the mapped frame" % (gm.ref, gfn))
    for fm in m.foreign_maps + m.xen_maps:
        e = ex[fm.mfn]
        e.count += 1
        e.type_info = (lib.LU_PGT_WRITABLE << PGT_SHIFT) | ((e.type_info & PGT_COUNT) + 1)


def _check_refcounts(hv, ex, rep):
    ft = hv.frametable
    out = ffi.new("uint64_t[]", MAX_REPORTED_FRAMES)
    n = lib.lu_frames_compare(ft.frames, ex, 0, hv.ram.nr_frames, out, MAX_REPORTED_FRAMES)
    for i in range(min(n, MAX_REPORTED_FRAMES)):
        mfn = out[i]
        f = ft.frames[mfn]
        want = ex[mfn]
        owner = f.owner
        where = "d%d gfn 0x%x" % (owner, hv.m2p.get(mfn)) if f.use == lib.LU_USE_GUEST else \
            "owner %d" % owner
        rep.bad(owner if owner < abi.DOMID_FIRST_RESERVED else None, "refcount", "mfn 0x%x (%s, %s): count %s type %s, expected count %s type %s"
                % (mfn, where, USE_NAMES.get(f.use, f.use), _count_str(f.count_info),
                   _type_str(f.type_info), _count_str(want.count), _type_str(want.type_info)))
    if n > MAX_REPORTED_FRAMES:
        rep.bad(None, "refcount", "%d more frames differ" % (n - MAX_REPORTED_FRAMES))


def _check_heap(hv, rep):
    """The allocator hands out exactly the frames whose entries say free:
    one it holds twice, or one the table gives to someone, would be handed
    out twice; one the table calls free that it does not hold is lost to
    the host."""
    extents = sorted(hv.allocator.free_extents())
    for (a, n), (b, m) in zip(extents, extents[1:]):
        if b < a + n:
            rep.bad(None, "heap", "frames 0x%x+%d are held twice by the allocator" % (b, min(a + n, b + m) - b))
            return
    held = merged_runs(extents)
    table = merged_runs(hv.frametable.extents(abi.DOMID_INVALID, lib.LU_USE_FREE))
    if held == table:
        return
    first, n, in_held = _first_difference(held, table)
    rep.bad(None, "heap", "frames 0x%x+%d: %s (the allocator holds %s, the table calls %d free)"
            % (first, n, "held by the allocator, not free in the frame table" if in_held else
               "free in the frame table, not held by the allocator",
               count(sum(n for _, n in held), "frame"), sum(n for _, n in table)))


def _first_difference(a, b):
    """The first frames in one of two different run lists (merged, not
    overlapping) and not the other: (first, count, whether they are a's)."""
    def inside(runs, frame):
        i = bisect.bisect_right(runs, (frame, float("inf"))) - 1
        return i >= 0 and frame < runs[i][0] + runs[i][1]
    edges = sorted({x for first, n in a + b for x in (first, first + n)})
    for lo, hi in zip(edges, edges[1:]):
        if inside(a, lo) != inside(b, lo):
            return lo, hi - lo, inside(a, lo)
    # Two different merged lists always differ somewhere; never raise in verify.
    return edges[0] if edges else 0, 0, True
