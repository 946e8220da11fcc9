"""Domains: what the hypervisor knows of each guest.

A domain owns real frames of host RAM; its P2M maps guest frames (GFNs) to
them, kept as extents.  What Xen keeps privately lives here (ports, grant
maps, vCPU contexts); what the guest can see lives in its memory.
"""
from dataclasses import dataclass, field

from kexec_lu.abi import PAGE_SIZE

from ._lu_core import lib

DOMAIN_TYPES = ("pv", "pvh", "hvm")
DTYPE_CODES = {"pv": lib.LU_DOM_PV, "pvh": lib.LU_DOM_PVH, "hvm": lib.LU_DOM_HVM}
MAX_VCPUS = 128
RUNSTATES = {lib.LU_RUN_RUNNABLE: "running", lib.LU_RUN_BLOCKED_IO: "blocked (I/O)",
             lib.LU_RUN_BLOCKED_RING: "blocked (ring)"}


@dataclass
class IoreqServer:
    """An HVM guest's device model, in another domain (dom0)."""
    id: int
    dm_domid: int
    ioreq_gfn: int
    bufioreq_gfn: int
    ioreq_mfn: int
    ports: list          # per vCPU: (guest port, device-model port)

    def describe(self):
        return dict(self.__dict__)


@dataclass
class Frontend:
    """A PV frontend's connection to its dom0 backend."""
    ring_ref: int
    fe_port: int         # in the guest
    be_port: int         # in dom0
    backend_slot: int    # its state's slot in dom0's backend pages
    grant_refs: list     # every ref the guest granted dom0

    def describe(self):
        return dict(self.__dict__)


@dataclass
class Domain:
    domid: int
    name: str
    dtype: str
    vcpus: int
    p2m: list = field(default_factory=list)   # [(gfn, mfn, count)]
    paused: bool = False
    dying: bool = False
    control: bool = False
    seed: int = 0
    workload: str = "busy"
    evtchn_abi: str = "2-level"
    grant_version: int = 1
    layout: object = None
    shared_info_mfn: int = None
    evtchn: object = None
    grants: object = None
    shared_frames: list = field(default_factory=list)   # [(mfn, count)]
    l4_mfn: int = None               # PV: pinned, and every vCPU's CR3
    gdt_mfns: list = field(default_factory=list)         # PV: each vCPU's GDT frame
    fifo_gfns: tuple = None          # FIFO ABI: (event array gfn, control block gfn)
    vcpu_state: object = None        # cdata struct lu_vcpu[vcpus]
    ws_mfns: list = field(default_factory=list)          # per vCPU, cdata uint64_t[]
    hvm_params: dict = field(default_factory=dict)
    ioreq: IoreqServer = None
    frontend: Frontend = None
    devices: list = field(default_factory=list)          # PCI BDFs passed through
    iommu_root: int = None
    iommu_frames: list = field(default_factory=list)     # [(mfn, count)]

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
    def steps(self):
        if self.vcpu_state is None:
            return 0
        return sum(self.vcpu_state[i].steps for i in range(self.vcpus))

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
            "control": self.control,
            "steps": self.steps,
            "workload": self.workload,
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
            "hvm_params": {str(k): v for k, v in self.hvm_params.items()},
            "ioreq_server": self.ioreq.describe() if self.ioreq else None,
            "frontend": self.frontend.describe() if self.frontend else None,
            "iommu_root": self.iommu_root,
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
