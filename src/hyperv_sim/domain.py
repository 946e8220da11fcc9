"""Domains: what the hypervisor knows of each guest.

A domain owns real frames of host RAM; its P2M maps guest frames (GFNs) to
them, kept as extents.  What Xen keeps privately lives here (ports, grant
maps, vCPU contexts); what the guest can see lives in its memory.
"""

from xen_public.abi import PAGE_SIZE

from ._lu_core import lib

DOMAIN_TYPES = ("pv", "pvh", "hvm")
DTYPE_CODES = {"pv": lib.LU_DOM_PV, "pvh": lib.LU_DOM_PVH, "hvm": lib.LU_DOM_HVM}
MAX_VCPUS = 128
RUNSTATES = {lib.LU_RUN_RUNNABLE: "running", lib.LU_RUN_BLOCKED_IO: "blocked (I/O)",
             lib.LU_RUN_BLOCKED_RING: "blocked (ring)"}


# Plain classes, not dataclasses: a live update's new hypervisor imports
# this module inside the blackout, and `dataclasses` costs milliseconds.

class IoreqServer:
    """An HVM guest's device model, in another domain (dom0)."""

    def __init__(self, id, dm_domid, ioreq_gfn, bufioreq_gfn, ioreq_mfn, ports):
        self.id, self.dm_domid = id, dm_domid
        self.ioreq_gfn, self.bufioreq_gfn, self.ioreq_mfn = ioreq_gfn, bufioreq_gfn, ioreq_mfn
        self.ports = ports          # per vCPU: (guest port, device-model port)

    def describe(self):
        return dict(self.__dict__)


class Frontend:
    """A PV frontend's connection to its dom0 backend."""

    def __init__(self, ring_ref, fe_port, be_port, backend_slot, grant_refs):
        self.ring_ref = ring_ref
        self.fe_port = fe_port              # in the guest
        self.be_port = be_port              # in dom0
        self.backend_slot = backend_slot    # its state's slot in dom0's backend pages
        self.grant_refs = grant_refs        # every ref the guest granted dom0

    def describe(self):
        return dict(self.__dict__)


class Domain:
    def __init__(self, domid, name, dtype, vcpus, p2m=None, paused=False, dying=False,
                 control=False, seed=0, workload="busy", evtchn_abi="2-level", grant_version=1,
                 layout=None, shared_info_mfn=None, shared_frames=None):
        self.domid, self.name, self.dtype, self.vcpus = domid, name, dtype, vcpus
        self.p2m = [] if p2m is None else p2m   # [(gfn, mfn, count)]
        self.paused, self.dying, self.control = paused, dying, control
        self.seed, self.workload = seed, workload
        self.evtchn_abi, self.grant_version = evtchn_abi, grant_version
        self.layout = layout
        self.shared_info_mfn = shared_info_mfn
        self.evtchn = None
        self.grants = None
        self.shared_frames = [] if shared_frames is None else shared_frames  # [(mfn, count)]
        self.l4_mfn = None               # PV: pinned, and every vCPU's CR3
        self.gdt_mfns = []               # PV: each vCPU's GDT frame
        self.fifo_gfns = None            # FIFO ABI: (event array gfn, control block gfn)
        self.vcpu_state = None           # cdata struct lu_vcpu[vcpus]
        self.ws_mfns = []                # per vCPU, cdata uint64_t[]
        self.hvm_params = {}
        self.ioreq = None                # IoreqServer
        self.frontend = None             # Frontend
        self.devices = []                # PCI BDFs passed through
        self.iommu_root = None
        self.iommu_frames = []           # [(mfn, count)]

    def __repr__(self):
        return "Domain(d%d %s %s)" % (self.domid, self.name, self.dtype)

    @property
    def nr_frames(self):
        return sum(count for _, _, count in self.p2m)

    @property
    def memory_bytes(self):
        return self.nr_frames * PAGE_SIZE

    @property
    def state(self):
        if self.dying:
            return "dying"
        return "paused" if self.paused else "running"

    @property
    def xl_state(self):
        """State as xl list prints it, six flags: r running on a pCPU now,
        b blocked (running, but on no pCPU at this instant), p paused,
        s shut down, c crashed, d dying."""
        on_cpu = any(v.on_cpu for v in self.vcpu_list())
        flags = ("r" if on_cpu and not self.paused and not self.dying else "-",
                 "b" if not on_cpu and not self.paused and not self.dying else "-",
                 "p" if self.paused and not self.dying else "-", "-", "-",
                 "d" if self.dying else "-")
        return "".join(flags)

    @property
    def steps(self):
        if self.vcpu_state is None:
            return 0
        return sum(self.vcpu_state[i].steps for i in range(self.vcpus))

    @property
    def cpu_time_ns(self):
        """Time the hypervisors have run its vCPUs, kept in its info page's
        vCPU clocks (as Xen's runstate area): across live updates."""
        return sum(v.info.vcpu[v.vcpu_id].running_ns for v in self.vcpu_list())

    @property
    def workload_rate(self):
        """Steps a second each vCPU may run; 0: as fast as it can."""
        return self.vcpu_state[0].rate if self.vcpu_state is not None else 0

    def vcpu_list(self):
        return [self.vcpu_state + i for i in range(self.vcpus)] if self.vcpu_state is not None else []

    def machine_extents(self):
        return [(mfn, count) for _, mfn, count in self.p2m]

    def describe(self):
        return {
            "domid": self.domid,
            "name": self.name,
            "type": self.dtype,
            "memory": self.memory_bytes,
            "vcpus": self.vcpus,
            "state": self.state,
            "xl_state": self.xl_state,
            "control": self.control,
            "steps": self.steps,
            "cpu_time_s": self.cpu_time_ns / 1e9,
            "workload": self.workload,
            "workload_rate": self.workload_rate,
            "event_channel_abi": self.evtchn_abi,
            "grant_version": self.grant_version,
            "pci": list(self.devices),
            "p2m_extents": len(self.p2m),
        }

    def details(self):
        """Everything, for `hyperv-sim list --long` and tests."""
        d = self.describe()
        d.update({
            "seed": self.seed,
            "p2m": [list(e) for e in self.p2m],
            "layout": self.layout.to_json() if self.layout else None,
            "shared_info_mfn": self.shared_info_mfn,
            "shared_frames": [list(e) for e in self.shared_frames],
            "ports": self.evtchn.describe() if self.evtchn else [],
            "grant_table": self.grants.describe() if self.grants else None,
            "l4_mfn": self.l4_mfn,
            "gdt_mfns": list(self.gdt_mfns),
            "fifo_gfns": list(self.fifo_gfns) if self.fifo_gfns else None,
            "hvm_params": {str(k): v for k, v in self.hvm_params.items()},
            "ioreq_server": self.ioreq.describe() if self.ioreq else None,
            "frontend": self.frontend.describe() if self.frontend else None,
            "iommu_root": self.iommu_root,
            "iommu_frames": [list(e) for e in self.iommu_frames],
            "vcpu_states": [{"vcpu": i, "steps": v.steps, "runstate": RUNSTATES.get(v.runstate, "?"),
                             "paused": bool(v.pause_req), "rip": v.regs.rip, "rax": v.regs.rax,
                             "max_gap_ns": v.info.vcpu[i].max_gap_ns}
                            for i, v in enumerate(self.vcpu_list())],
        })
        return d


def p2m_from_extents(machine_extents):
    """Lay machine extents out as a guest-physical space from GFN 0 upwards."""
    p2m, gfn = [], 0
    for mfn, count in sorted(machine_extents):
        p2m.append((gfn, mfn, count))
        gfn += count
    return p2m
