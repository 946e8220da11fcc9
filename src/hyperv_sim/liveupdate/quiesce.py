"""Quiesce: every vCPU paused at an architectural restartable boundary.

HVM and PVH guests first, as soon as any I/O request in flight is answered;
dom0 (which runs the device models) and the PV guests keep running until
they too are paused, just before the save.  Bounded: past the timeout
everything is resumed and the vCPUs that never got there are named.
"""
import time

from .._lu_core import ffi, lib
from ..sched import IDLE_MAX_NS, POLL_S, QUIESCE_IDLE_MAX_NS, SLICE_STEPS, pause_vcpus

QUIESCE_SLICE_STEPS = 256      # a few microseconds of guest work
RUNSTATE = {lib.LU_RUN_RUNNABLE: "runnable", lib.LU_RUN_BLOCKED_IO: "waiting for its device model",
            lib.LU_RUN_BLOCKED_RING: "waiting for its backend"}


class QuiesceTimeout(Exception):
    pass


class Quiesce:
    def __init__(self, hv):
        self.hv = hv
        self.doms = [d for d in sorted(hv.domains.values(), key=lambda d: d.domid) if not d.dying]
        # The administrator's choices survive the update.
        self.paused_before = {d.domid for d in self.doms if d.paused}
        self.first_pause_ns = None

    def _now(self):
        return lib.lu_now_ns()

    def hvm_first(self, timeout_s, fault=None):
        """Pause HVM and PVH guests at restartable boundaries."""
        vcpus = [(d, i, v) for d in self.first_group() for i, v in enumerate(d.vcpu_list())]
        self.first_pause_ns = self._now()
        # Short turns until everything is paused: a vCPU leaves its pCPU
        # sooner, and dom0's device model comes round sooner to answer the
        # I/O requests in flight.
        self.hv.sched.set_slice(QUIESCE_SLICE_STEPS)
        self.hv.sched.set_idle_max(QUIESCE_IDLE_MAX_NS)
        for d, _, v in vcpus:
            v.quiesce_req = 1
            if v.pause_req and v.runstate == lib.LU_RUN_BLOCKED_IO:
                # Paused mid-request: it must run to the boundary first.
                v.pause_req = 0
        if fault:
            fault("quiesce-hvm")
        # Each sweep pauses every vCPU that is off its pCPU and at a boundary
        # at once, rather than when a pCPU next comes round to it.
        arr = ffi.new("struct lu_vcpu *[]", [v for _, _, v in vcpus])
        first = ffi.new("uint32_t *")
        deadline = time.monotonic() + timeout_s
        while lib.lu_quiesce_sweep(arr, len(vcpus), first):
            if time.monotonic() > deadline:
                # Name the cause: a vCPU waiting on I/O cannot get there at
                # all, one merely runnable was only slow (a loaded machine).
                waiting = [t for t in vcpus if t[2].runstate == lib.LU_RUN_BLOCKED_IO]
                d, i, v = waiting[0] if waiting else vcpus[first[0]]
                raise QuiesceTimeout("vCPU %d of d%d (%s) never reached a restartable boundary "
                                     "within %d ms: %s" % (i, d.domid, d.name, timeout_s * 1000,
                                                           self.waits_for(d, v)[0]))
            time.sleep(POLL_S)

    def first_group(self):
        """The domains paused first, at restartable boundaries: HVM and PVH."""
        return [d for d in self.doms if d.dtype in ("hvm", "pvh")]

    def waits_for(self, dom, vcpu):
        """(what the vCPU waits for, whether that can never end during the
        quiesce): its device model's domain is gone, paused by the
        administrator, or paused by this quiesce (a device model in an HVM
        or PVH domain)."""
        what = RUNSTATE.get(vcpu.runstate, vcpu.runstate)
        if vcpu.runstate != lib.LU_RUN_BLOCKED_IO or not dom.ioreq:
            return what, False
        dm = self.hv.domains.get(dom.ioreq.dm_domid)
        if dm is None:
            return "%s, whose domain d%d no longer exists" % (what, dom.ioreq.dm_domid), True
        if dm.domid in self.paused_before:
            return "%s in d%d (%s), which the administrator paused (unpause it and retry)" % (
                what, dm.domid, dm.name), True
        if dm in self.first_group():
            return "%s in d%d (%s), which this update paused first: it is an HVM or PVH domain" % (
                what, dm.domid, dm.name), True
        return "%s in d%d (%s)" % (what, dm.domid, dm.name), False

    def waiting(self):
        """Now, pausing nothing: every vCPU of the first group with an I/O
        request in flight, as [(domain, vCPU index, what it waits for,
        whether the quiesce would time out on it)]."""
        return [(d, i) + self.waits_for(d, v) for d in self.first_group()
                for i, v in enumerate(d.vcpu_list()) if v.runstate == lib.LU_RUN_BLOCKED_IO]

    def pv_last(self, fault=None):
        """Then the PV guests and dom0."""
        if fault:
            fault("quiesce-pv")
        group = [d for d in self.doms if d.dtype == "pv"]
        if self.first_pause_ns is None:
            self.first_pause_ns = self._now()
        pause_vcpus([v for d in group for v in d.vcpu_list()])
        self.hv.sched.set_slice(SLICE_STEPS)
        self.hv.sched.set_idle_max(IDLE_MAX_NS)

    def resume(self):
        """Undo: everything runs again exactly as before."""
        self.hv.sched.set_slice(SLICE_STEPS)
        self.hv.sched.set_idle_max(IDLE_MAX_NS)
        for d in self.doms:
            keep = d.domid in self.paused_before
            for v in d.vcpu_list():
                v.quiesce_req = 0
                v.pause_req = 1 if keep else 0
