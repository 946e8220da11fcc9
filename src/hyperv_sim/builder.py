"""The domain builder: from a configuration to a running domain.

Allocates the domain's frames (never in LU bootmem: those frames are not
free), lays its memory out (hyperv_sim.guest), builds and pins PV page
tables, binds its event channels, fills its grant table, connects it to
dom0 (backend, device model) and, for passthrough, builds IOMMU tables.
"""
import os

from xen_public import abi
from xen_public.abi import DOMID_XEN, PAGE_SIZE
from xen_public.units import MiB

from . import guest
from ._lu_core import ffi, lib
from .domain import DTYPE_CODES, Domain, Frontend, IoreqServer, p2m_from_extents
from .evtchn import EventChannels, bind_interdomain
from .frametable import PGC_ALLOCATED, OutOfMemory
from .grant import FIRST_FREE_REF, GrantTable
from .guest import P2M
from ._lu_hw import lib as hw
from .chipset import parse_bdf
from .devices import connect_drivers

MIN_MEMORY = 16 * MiB
GRANT_FRAMES = 1
PGT = {"l4": lib.LU_PGT_L4, "seg_desc": lib.LU_PGT_SEG_DESC}


class BuildError(Exception):
    pass


class Builder:
    def __init__(self, hv):
        self.hv = hv
        self._taken = []        # (extents) to give back if the build fails

    def _alloc(self, n, owner, use, count_info=0):
        try:
            ext = self.hv.allocator.alloc(n, owner, use, count_info=count_info)
        except OutOfMemory as e:
            raise BuildError("out of memory (%s)" % e)
        self._taken.append(ext)
        return ext

    def undo(self):
        for ext in self._taken:
            for mfn, count in ext:
                self.hv.ram.scrub(mfn * PAGE_SIZE, count * PAGE_SIZE)
            self.hv.allocator.release(ext)
        self._taken = []

    def build(self, domid, name, dtype, memory, vcpus, control=False, evtchn_abi="2-level",
              grant_version=1, pci=(), workload="busy", workload_pages=16, seed=None,
              workload_rate=None):
        hv = self.hv
        rate = hv.opts.workload_rate if workload_rate is None else workload_rate
        if memory < MIN_MEMORY:
            raise BuildError("memory %d MiB: at least %d MiB" % (memory >> 20, MIN_MEMORY >> 20))
        nr_pages = memory // PAGE_SIZE
        frontend = not control and dtype in ("pv", "pvh")
        try:
            lay = guest.plan(dtype, nr_pages, vcpus, evtchn_abi, control, frontend, workload_pages, devices=len(pci))
        except guest.LayoutError as e:
            raise BuildError(str(e))
        for bdf in pci:
            if bdf in hv.pci_assigned:
                raise BuildError("PCI device %s is already assigned to d%d" % (bdf, hv.pci_assigned[bdf]))
            try:
                parse_bdf(bdf)
            except ValueError as e:
                raise BuildError(str(e))
        if len(pci) > hv.devices.free_slots():
            raise BuildError("no free device slot in the chipset (at most %d devices)" % hw.LU_MAX_DEVICES)

        allocated = PGC_ALLOCATED | 1
        extents = self._alloc(nr_pages, domid, lib.LU_USE_GUEST, allocated)
        nr_shared = 1 + GRANT_FRAMES + (GRANT_FRAMES if grant_version == 2 else 0)
        shared = self._alloc(nr_shared, domid, lib.LU_USE_SHARED, allocated)
        shared_mfns = [m + i for m, n in shared for i in range(n)]
        iommu = []
        if pci:
            iommu = self._alloc(sum(guest.table_counts(nr_pages)), DOMID_XEN, lib.LU_USE_IOMMU_PT)

        dom = Domain(domid=domid, name=name, dtype=dtype, vcpus=vcpus, control=control,
                     p2m=p2m_from_extents(extents), seed=seed if seed is not None else
                     int.from_bytes(os.urandom(8), "little"),
                     workload=workload, evtchn_abi=evtchn_abi, grant_version=grant_version,
                     layout=lay, shared_frames=shared)
        p2m = P2M(dom.p2m)
        for gfn, mfn, count in dom.p2m:
            hv.m2p.set_run(mfn, gfn, count)
        dom.shared_info_mfn = shared_mfns[0]
        gt_frames = shared_mfns[1:1 + GRANT_FRAMES]
        status = shared_mfns[1 + GRANT_FRAMES:]
        dom.grants = GrantTable(hv.ram, grant_version, gt_frames, status)
        guest.write_info(hv.ram, p2m.mfn(lay.info_gfn), dom.seed, lay,
                         guest.IO_EVERY if dtype == "hvm" else 0,
                         guest.RING_EVERY if frontend else 0, idle=workload == "idle", rate=rate)
        if dtype == "pv":
            self._build_pv_tables(dom, p2m)
        self._bind_ports(dom, p2m)
        self._make_vcpus(dom, p2m)
        if dtype == "hvm":
            self._ioreq_server(dom, p2m)
        if frontend:
            self._connect_frontend(dom)
        if pci:
            self._passthrough(dom, p2m, pci, iommu, lay.dma_gfn)
        self._taken = []
        return dom

    # PV page tables

    def _build_pv_tables(self, dom, p2m):
        hv, lay = self.hv, dom.layout
        table_mfns = [p2m.mfn(g) for g in lay.pt_gfns]
        dom.l4_mfn = guest.build_tables(hv.ram, table_mfns, lay.pt_levels, p2m,
                                        read_only=lay.read_only_gfns())
        # Pinning the L4 (and loading it in every vCPU's CR3) validates the
        # whole tree: each table gets its type, each mapped frame its refs.
        ft = hv.frametable
        ft.get_ref(dom.l4_mfn, lib.LU_PGT_L4, n=1 + dom.vcpus)
        ft.frames[dom.l4_mfn].type_info |= lib.LU_PGT_PINNED
        bad = ft.walk_pv(dom.domid, dom.l4_mfn)
        if bad:
            raise BuildError("page tables of %s do not validate (error %d at mfn 0x%x entry %d)"
                             % ((dom.name,) + bad))
        dom.gdt_mfns = [p2m.mfn(gfn) for gfn in lay.gdt_gfns]
        for mfn in dom.gdt_mfns:
            ft.get_ref(mfn, lib.LU_PGT_SEG_DESC)

    # event channels

    def _bind_ports(self, dom, p2m):
        hv, lay = self.hv, dom.layout
        if dom.evtchn_abi == "fifo":
            # The guest registers its event array and control blocks; Xen
            # keeps both mapped.
            bits_mfn = p2m.mfn(lay.evtchn_array_gfn)
            dom.fifo_gfns = (lay.evtchn_array_gfn, lay.evtchn_ctrl_gfn)
            hv.mappings.map_xen(dom, lay.evtchn_array_gfn, "evtchn-fifo-array")
            hv.mappings.map_xen(dom, lay.evtchn_ctrl_gfn, "evtchn-fifo-control")
        else:
            bits_mfn = dom.shared_info_mfn
        dom.evtchn = ev = EventChannels(hv.ram, dom.evtchn_abi, bits_mfn)
        ev.alloc("virq", virq=abi.VIRQ_TIMER)
        for v in range(dom.vcpus):
            ev.alloc("ipi", vcpu=v)
        if dom.control:
            ev.alloc("virq", virq=abi.VIRQ_DOM_EXC)
            return
        # xenstore and console: unbound until dom0's daemons connect.
        store = ev.alloc("unbound", remote_domid=0)
        console = ev.alloc("unbound", remote_domid=0)
        ev.mask(console)
        if dom.dtype != "pv":
            self._hvm_params(dom, store, console)

    @staticmethod
    def _hvm_params(dom, store_port, console_port):
        """What libxl 4.17 sets for a PVH or HVM guest (libxl_x86.c,
        xg_dom_x86.c); not PAE_ENABLED (a CPUID policy bit now, which
        libxc's restore discards) nor NESTEDHVM (refused by Xen >= 4.15)."""
        lay = dom.layout
        dom.hvm_params.update({abi.HVM_PARAM_STORE_PFN: lay.store_gfn,
                               abi.HVM_PARAM_CONSOLE_PFN: lay.console_gfn,
                               abi.HVM_PARAM_STORE_EVTCHN: store_port,
                               abi.HVM_PARAM_CONSOLE_EVTCHN: console_port,
                               abi.HVM_PARAM_TIMER_MODE: 1})      # no_delay_for_missed_ticks
        if dom.dtype == "hvm":
            dom.hvm_params[abi.HVM_PARAM_HPET_ENABLED] = 1

    # vCPUs

    def _make_vcpus(self, dom, p2m):
        hv, lay = self.hv, dom.layout
        dom.vcpu_state = vs = ffi.new("struct lu_vcpu[]", dom.vcpus)
        info = hv.ram.pointer(p2m.mfn(lay.info_gfn) * PAGE_SIZE, "struct lu_guest_info *")
        for i in range(dom.vcpus):
            v = vs[i]
            mfns = p2m.mfns(lay.ws_base_gfn + i * lay.ws_pages, lay.ws_pages)
            dom.ws_mfns.append(mfns)
            v.seed, v.domid, v.vcpu_id = dom.seed, dom.domid, i
            v.dtype = DTYPE_CODES[dom.dtype]
            v.ram, v.ws_mfns, v.ws_pages = hv.ram.base, mfns, lay.ws_pages
            v.info = info
            v.idle = 1 if dom.workload == "idle" else 0
            v.rate = info.rate
            regs = ffi.new("struct lu_regs *")
            lib.lu_workload_regs(dom.seed, i, lay.ws_pages, 0, 0, 0, regs)   # the state at step 0
            v.regs = regs[0]

    # HVM: the device model in dom0

    def _ioreq_server(self, dom, p2m):
        hv, lay = self.hv, dom.layout
        dom0 = hv.domains[0]
        ioreq_mfn = p2m.mfn(lay.ioreq_gfn)
        ports = []
        for i in range(dom.vcpus):
            guest_port, dm_port = bind_interdomain(dom.evtchn, dom.domid, dom0.evtchn, 0, local_vcpu=i)
            ports.append((guest_port, dm_port))
            v = dom.vcpu_state[i]
            v.io_every = guest.IO_EVERY
            v.ioreq = hv.ram.pointer(ioreq_mfn * PAGE_SIZE + i * ffi.sizeof("struct lu_ioreq"),
                                     "struct lu_ioreq *")
            v.io_port = dom.evtchn.lu_port(guest_port)[0]
            v.dm_port = dom0.evtchn.lu_port(dm_port)[0]
        dom.ioreq = IoreqServer(id=0, dm_domid=0, ioreq_gfn=lay.ioreq_gfn,
                                bufioreq_gfn=lay.bufioreq_gfn, ioreq_mfn=ioreq_mfn, ports=ports)
        hv.mappings.map_xen(dom, lay.ioreq_gfn, "ioreq")
        hv.mappings.map_foreign(dom0, dom, lay.ioreq_gfn, "device model ioreq page")
        dom.hvm_params.update({abi.HVM_PARAM_IOREQ_PFN: lay.ioreq_gfn,
                               abi.HVM_PARAM_BUFIOREQ_PFN: lay.bufioreq_gfn})

    def dm_clients(self, dom):
        dom0 = self.hv.domains[0]
        out = []
        for i, (guest_port, dm_port) in enumerate(dom.ioreq.ports):
            c = ffi.new("struct lu_dm_client *")
            c.ioreq = dom.vcpu_state[i].ioreq
            c.dm_port = dom0.evtchn.lu_port(dm_port)[0]
            c.io_port = dom.evtchn.lu_port(guest_port)[0]
            out.append(c[0])
        return out

    # PV frontend and dom0's backend

    def _connect_frontend(self, dom):
        hv, lay = self.hv, dom.layout
        dom0 = hv.domains[0]
        refs = []
        ref = FIRST_FREE_REF
        dom.grants.grant_access(ref, 0, lay.ring_gfn)
        refs.append(ref)
        for i, gfn in enumerate(lay.data_gfns):
            dom.grants.grant_access(FIRST_FREE_REF + 1 + i, 0, gfn, readonly=(i % 2 == 1))
            refs.append(FIRST_FREE_REF + 1 + i)
        # dom0's backend maps what it was granted.
        for r in refs:
            flags, _, _ = dom.grants.entry(r)
            hv.mappings.map_grant(dom0, dom, r, writable=not flags & abi.GTF_readonly)
        fe_port, be_port = bind_interdomain(dom.evtchn, dom.domid, dom0.evtchn, 0)
        if None not in hv.backend_slots:
            raise BuildError("dom0's backend serves %d frontends already, its most" % len(hv.backend_slots))
        slot = hv.backend_slots.index(None)
        hv.backend_slots[slot] = dom.domid
        dom.frontend = Frontend(ring_ref=ref, fe_port=fe_port, be_port=be_port,
                                backend_slot=slot, grant_refs=refs)
        addr = self.backend_slot_addr(slot)
        hv.ram.write(addr, guest.BACKEND_SLOT.pack(0, dom.domid, ref, be_port, fe_port))
        v = dom.vcpu_state[0]          # vCPU 0 drives the ring
        v.info.fe_port = fe_port
        v.ring_every = guest.RING_EVERY
        v.ring = hv.ram.pointer(P2M(dom.p2m).mfn(lay.ring_gfn) * PAGE_SIZE, "struct lu_sring *")
        v.fe_port = dom.evtchn.lu_port(fe_port)[0]
        v.be_port = dom0.evtchn.lu_port(be_port)[0]

    def backend_slot_addr(self, slot):
        return backend_slot_addr(self.hv, slot)

    def backend(self, dom, grant_maps_by_ref=None):
        """dom0's backend for dom's frontend, as the C core runs it.
        grant_maps_by_ref: {(granter, ref): map}, when there are many to find."""
        hv, fe = self.hv, dom.frontend
        dom0 = hv.domains[0]
        if grant_maps_by_ref is not None:
            ring_map = grant_maps_by_ref[(dom.domid, fe.ring_ref)]
        else:
            ring_map = next(m for m in hv.mappings.grant_maps
                            if m.granter == dom.domid and m.ref == fe.ring_ref)
        b = ffi.new("struct lu_backend *")
        b.ring = hv.ram.pointer(ring_map.mfn * PAGE_SIZE, "struct lu_sring *")
        b.req_cons = hv.ram.pointer(self.backend_slot_addr(fe.backend_slot), "uint64_t *")
        b.be_port = dom0.evtchn.lu_port(fe.be_port)[0]
        b.fe_port = dom.evtchn.lu_port(fe.fe_port)[0]
        b.connected = 1
        return b[0]

    # passthrough

    def _passthrough(self, dom, p2m, pci, iommu, dma_gfn):
        hv = self.hv
        frames = [m + i for m, n in sorted(iommu) for i in range(n)]
        levels = guest.table_counts(dom.nr_frames)
        dom.iommu_root = guest.build_tables(hv.ram, frames, levels, p2m)
        dom.iommu_frames = iommu
        dom.devices = list(pci)
        for i, bdf in enumerate(pci):
            hv.pci_assigned[bdf] = dom.domid
            hv.iommu.assign(parse_bdf(bdf), dom.domid, dom.iommu_root)
            # The device starts: DMA into the pages the guest gives it, and
            # interrupts to its vCPU 0, from now on.
            hv.devices.start(parse_bdf(bdf), (dma_gfn + i * hw.LU_NIC_PAGES) * PAGE_SIZE,
                             lambda slot: hv.iommu.route_interrupt(slot, dom.domid))
        connect_drivers(hv, dom)


def guest_info(hv, dom):
    """The guest's own bookkeeping page (gfn 0), as the C core sees it."""
    return hv.ram.pointer(P2M(dom.p2m).mfn(guest.INFO_GFN) * PAGE_SIZE, "struct lu_guest_info *")


def backend_slot_addr(hv, slot):
    """Where dom0's backend keeps the state of its slot-th frontend."""
    dom0 = hv.domains[0]
    info = guest_info(hv, dom0)
    per = PAGE_SIZE // guest.BACKEND_SLOT.size
    if slot // per >= info.backend_pages:
        raise BuildError("dom0 has no backend slot %d" % slot)
    return P2M(dom0.p2m).mfn(info.backend_gfn + slot // per) * PAGE_SIZE + (slot % per) * guest.BACKEND_SLOT.size


def read_backend_slot(ram, addr):
    return dict(zip(("req_cons", "front_domid", "ring_ref", "be_port", "fe_port"),
                    guest.BACKEND_SLOT.unpack(ram.read(addr, guest.BACKEND_SLOT.size))))


