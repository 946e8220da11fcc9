"""Domains: what the hypervisor knows of each guest.

A domain owns real frames of host RAM; its P2M maps guest frames (GFNs) to
them, kept as extents.  Issue-by-issue this grows vCPU state, event
channels, grant tables, IOREQ servers and passthrough devices.
"""
from dataclasses import dataclass, field

from kexec_lu.abi import PAGE_SIZE

DOMAIN_TYPES = ("pv", "pvh", "hvm")
MAX_VCPUS = 128


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
            "p2m_extents": len(self.p2m),
        }


def p2m_from_extents(machine_extents):
    """Lay machine extents out as a guest-physical space from GFN 0 upwards."""
    p2m, gfn = [], 0
    for mfn, count in sorted(machine_extents):
        p2m.append((gfn, mfn, count))
        gfn += count
    return p2m
