"""Toolstack operations: what xl asks of Xen, as simulator-only requests.

Each op takes and returns JSON-able values; errors are HypervSimError (Busy: xen_public's) with a
message fit for the user.
"""
import os

from xen_public.abi import PAGE_SIZE
from xen_public.errors import Busy

from .errors import DomainError, HypervSimError

# What may run while a live update holds the hypervisor.
READ_ONLY = ("ping", "lu-report", "dmesg")


# The arguments each operation takes and their JSON types; create's fields
# are checked by xlcfg.check_request.
_ARGUMENTS = {"destroy": {"domain": (str, int), "detach": (bool,)},
              "detach": {"domain": (str, int)}, "pause": {"domain": (str, int)},
              "unpause": {"domain": (str, int)}, "details": {"domain": (str, int, type(None))},
              "lu-fault": {"point": (str, type(None))}, "dmesg": {"clear": (bool,)}}
_REQUIRED = {"destroy": ("domain",), "detach": ("domain",), "pause": ("domain",),
             "unpause": ("domain",)}


def _check_arguments(op, request):
    if op == "create":
        return
    allowed = _ARGUMENTS.get(op, {})
    for key, value in request.items():
        if key == "op":
            continue
        if key not in allowed:
            raise HypervSimError("%s takes no argument %r" % (op, key))
        if type(value) not in allowed[key]:
            raise HypervSimError("%s: %s must be %s, not %s" % (
                op, key, " or ".join(t.__name__ for t in allowed[key]), type(value).__name__))
    for key in _REQUIRED.get(op, ()):
        if key not in request:
            raise HypervSimError("%s needs %r" % (op, key))


class Toolstack:
    def __init__(self, hv, on_shutdown):
        self.hv = hv
        self.on_shutdown = on_shutdown
        self.ops = {
            "ping": lambda r: {"pid": os.getpid()},
            "info": lambda r: hv.info(),
            "list": lambda r: hv.list_domains(),
            "create": self.create,
            "destroy": lambda r: hv.destroy_domain(r["domain"], detach=r.get("detach", True)),
            "detach": lambda r: hv.detach_domain(r["domain"]),
            "details": self.details,
            "verify": lambda r: hv.verify(),
            "pause": lambda r: hv.set_paused(r["domain"], True).describe(),
            "unpause": lambda r: hv.set_paused(r["domain"], False).describe(),
            "dmesg": lambda r: hv.console.lines(clear=r.get("clear", False)),
            "shutdown": self.shutdown,
            "lu-report": lambda r: hv.lu_report.to_json() if hv.lu_report else None,
            "lu-check": self.lu_check,
            "lu-fault": self.lu_fault,
            "stream-save": self.stream_save,
            "stream-read": self.stream_read,
            "memmap": self.memmap,
        }

    def handle(self, request):
        op = request.get("op")
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise HypervSimError("unknown toolstack operation %r" % (op,))
        _check_arguments(op, request)
        if self.hv.lu_active and op not in READ_ONLY:
            raise Busy("a live update is in progress; try again when it is done")
        return handler(request)

    def stream_save(self, r):
        """The current state as a live-update stream (every vCPU held at a
        step boundary while it is written), base64-encoded."""
        import base64
        from .liveupdate.save import build_stream
        with self.hv.lock, self.hv.sched.stopped():
            paused = {d.domid for d in self.hv.domains.values() if d.paused}
            data, _ = build_stream(self.hv, [], paused)
        return base64.b64encode(data).decode()

    def memmap(self, r):
        """Host RAM as runs of frames of one use: [start, size, use]."""
        with self.hv.lock:
            return [[m * PAGE_SIZE, n * PAGE_SIZE, use] for m, n, use in self.hv.frametable.use_runs()]

    def stream_read(self, r):
        raise HypervSimError("no stream to read: the hypervisor is running, not halted "
                           "(hyperv-sim stream save writes its state as a stream)")

    def lu_check(self, r):
        """A live update's pre-flight, and what would block its quiesce,
        changing nothing (kexec-lu check)."""
        from .liveupdate.engine import dry_run
        with self.hv.lock:
            return dry_run(self.hv)

    def lu_fault(self, r):
        """Debug: make the next live update fail at a named point."""
        from .faultpoints import FAULT_POINTS, FAULT_POINTS_SUMMARY
        point = r.get("point")
        if point is not None and point not in FAULT_POINTS:
            raise HypervSimError("unknown fault point %r: one of %s" % (point, FAULT_POINTS_SUMMARY))
        self.hv.lu_fault = point
        return point

    def create(self, r):
        from .xlcfg import check_request     # the CLI's own rules, on this side too
        try:
            c = check_request({k: v for k, v in r.items() if k != "op"})
        except ValueError as e:
            raise DomainError("create refused: %s" % e)
        dom = self.hv.create_domain(
            c["name"], c["type"], c["memory"], c["vcpus"],
            evtchn_abi=c.get("event_channel_abi", "2-level"),
            grant_version=c.get("grant_version", 1), pci=c.get("pci", []),
            workload=c.get("workload", "busy"), workload_pages=c.get("workload_pages", 16),
            seed=c.get("seed"), workload_rate=c.get("workload_rate"))
        return dom.describe()

    def details(self, r):
        with self.hv.lock:
            doms = [self.hv.find_domain(r["domain"])] if r.get("domain") is not None \
                else sorted(self.hv.domains.values(), key=lambda d: d.domid)
            return {"domains": [d.details() for d in doms],
                    "mappings": self.hv.mappings.describe(),
                    "pci_assigned": dict(sorted(self.hv.pci_assigned.items()))}

    def shutdown(self, r):
        self.hv.console.log("shutdown requested")
        self.on_shutdown()
        return None


class HaltedToolstack:
    """What a hypervisor that could not restore still answers."""

    def __init__(self, console, reason, on_shutdown, stream=None, facts=None):
        self.console = console
        self.reason = reason
        self.on_shutdown = on_shutdown
        self.stream = stream
        self.facts = facts

    def handle(self, request):
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid(), "halted": self.reason}
        if op == "dmesg":
            return self.console.lines(clear=request.get("clear", False) is True)
        if op == "lu-report":
            if self.facts and self.facts.get("report"):
                return dict(self.facts["report"], state="halted", error=self.reason)
            return {"state": "halted", "error": self.reason, "phases": [], "id": None}
        if op == "shutdown":
            self.on_shutdown()
            return None
        if op == "halted-info" and self.facts is not None:
            return dict({k: v for k, v in self.facts.items() if k != "report"}, reason=self.reason)
        if op == "stream-read" and self.stream is not None:
            import base64
            return base64.b64encode(self.stream).decode()
        raise HypervSimError("the hypervisor is halted: %s" % self.reason)
